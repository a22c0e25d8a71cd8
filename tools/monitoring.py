"""Monitoring tools: read-only views of a service's health, drift, versions, canary, incidents."""

from __future__ import annotations

from langchain_core.tools import BaseTool, tool

from tools.deps import ToolDeps
from tools.results import guarded, ok

READ_ONLY = frozenset({"get_service_health", "get_metric_window", "get_drift_report",
                       "compare_versions", "run_canary_analysis", "get_incident_history"})


def make_monitoring_tools(deps: ToolDeps) -> list[BaseTool]:
    """The Monitoring specialist's tools over ``deps``."""

    @tool(parse_docstring=True)
    @guarded
    def get_service_health(service: str) -> str:
        """Get a service's serving state and recent health: accuracy, error rate, latency.

        Args:
            service: service name, e.g. "elec".
        """
        return ok(**deps.monitor.health(service))

    @tool(parse_docstring=True)
    @guarded
    def get_metric_window(service: str, version: int | None = None, rows: int = 1000) -> str:
        """Get metrics over the most recent window of traffic, optionally for one version.

        Args:
            service: service name.
            version: only this model version (default: all).
            rows: window size in predictions, 100 to 50000.
        """
        rows = max(100, min(int(rows), 50_000))
        return ok(**deps.monitor.metric_window(service, version=version, rows=rows))

    @tool(parse_docstring=True)
    @guarded
    def get_drift_report(service: str) -> str:
        """Compare recent feature and prediction distributions with the reference window.

        Args:
            service: service name.
        """
        return ok(**deps.monitor.drift_report(service))

    @tool(parse_docstring=True)
    @guarded
    def compare_versions(service: str, a: int, b: int) -> str:
        """Compare two versions: offline metrics and live accuracy, errors, latency.

        Args:
            service: service name.
            a: first version number.
            b: second version number.
        """
        return ok(**deps.monitor.compare_versions(service, a, b))

    @tool(parse_docstring=True)
    @guarded
    def run_canary_analysis(service: str) -> str:
        """Analyse the live canary against the champion: verdict pass, fail or inconclusive.

        Args:
            service: service name.
        """
        return ok(**deps.monitor.canary_analysis(service))

    @tool(parse_docstring=True)
    @guarded
    def get_incident_history(service: str, limit: int = 10) -> str:
        """List the service's recent incidents, newest first.

        Args:
            service: service name.
            limit: how many, 1 to 50.
        """
        items = deps.monitor.incident_history(service, max(1, min(int(limit), 50)))
        return ok(service=service, incidents=items)

    return [get_service_health, get_metric_window, get_drift_report, compare_versions,
            run_canary_analysis, get_incident_history]
