"""What the tools need from the fleet, injected once by the composition root (no globals)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from langchain_core.runnables import RunnableConfig

from fleet.actions.spec import ActionContext
from fleet.approvals import ApprovalStore
from fleet.audit import Audit
from fleet.incidents import IncidentStore
from fleet.operations import Operations
from fleet.registry import Registry


class MonitorReads(Protocol):
    """The read facade of ``fleet.monitor`` the Monitoring and Data Steward tools call."""

    def health(self, service: str) -> dict[str, Any]: ...  # noqa: D102
    def metric_window(self, service: str, *, version: int | None = None,  # noqa: D102
                      rows: int = 1000) -> dict[str, Any]: ...
    def drift_report(self, service: str) -> dict[str, Any]: ...  # noqa: D102
    def compare_versions(self, service: str, a: int, b: int, *,  # noqa: D102
                         rows: int = 2000) -> dict[str, Any]: ...
    def canary_analysis(self, service: str) -> dict[str, Any]: ...  # noqa: D102
    def validate_window(self, service: str, *,  # noqa: D102
                        rows: int | None = None) -> dict[str, Any]: ...
    def incident_history(self, service: str, limit: int = 10) -> list[dict[str, Any]]: ...  # noqa: D102


@dataclass(frozen=True)
class ToolDeps:
    """Fleet services shared by every tool."""

    registry: Registry
    monitor: MonitorReads
    ops: Operations
    approvals: ApprovalStore
    incidents: IncidentStore
    audit: Audit


def action_context(
    config: RunnableConfig, *, role: str, reason: str, step: str = ""
) -> ActionContext:
    """The guarded-write context of a tool call: the thread (incident) it runs in and why.

    ``step`` is the tool call id: a resumed call keeps its id (so a crash never repeats the write)
    while a new, deliberate call gets a new one.
    """
    thread = str((config.get("configurable") or {}).get("thread_id") or "adhoc")
    return ActionContext(incident=thread, actor=f"agent:{role}", reason=reason or "(no reason)",
                         thread_id=thread, step=step)
