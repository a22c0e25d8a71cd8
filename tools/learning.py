"""Continuous Learning tools: train a candidate, evaluate it against the champion, reject it."""

from __future__ import annotations

from typing import Annotated

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, InjectedToolCallId, tool

from fleet.errors import NotFound
from fleet.incidents import Incident
from fleet.monitor.settle import drift_settling, stopgap_due
from fleet.registry import ServiceRecord, VersionStatus
from tools.deps import ToolDeps, action_context
from tools.results import error, guarded, ok

READ_ONLY = frozenset({"evaluate_candidate"})


def make_learning_tools(deps: ToolDeps) -> list[BaseTool]:
    """The Continuous Learning specialist's tools over ``deps``."""

    @tool(parse_docstring=True)
    @guarded
    def train_candidate(
        service: str, config: RunnableConfig,
        tool_call_id: Annotated[str, InjectedToolCallId],
        rows: int | None = None, seed: int = 0,
    ) -> str:
        """Train a candidate on the recent validated window and compare it with the champion.

        The candidate is registered (status candidate) with its lineage; the comparison uses the
        most recent labelled holdout. "better" says whether it clears the service's gate: beats
        the champion by the margin and beyond chance, or (a ``not_worse`` service, inside a
        performance incident) at least matches it and beats the constant predictor ("learnt").
        Inside a performance incident only rows of the new concept are used (while the drift is
        still under way: the most recent rows, for a stopgap), unless the service trains on its
        whole window, and the shorter windows of the policy's ``window_search`` are tried too.

        Args:
            service: service name.
            rows: labelled rows to use (default: the policy's training window).
            seed: random seed, for reproducibility.
        """
        ctx = action_context(config, role="continuous_learning",
                             reason="retrain on the recent validated window", step=tool_call_id)
        inc = _performance_incident(deps, ctx.incident)
        svc = deps.registry.service(service)
        policy = svc.policy
        since_ts, most = (None, None)
        if inc is not None and policy.train_on == "drift_rows":
            since_ts, most = _drift_rows(deps, inc, svc)
        if most is not None:
            rows = most if rows is None else min(rows, most)
        # Inside a performance incident the window may still hold rows of the old concept (a
        # gradual change, an onset dated late): let the holdout leave them out.
        res = deps.ops.retrain(service, ctx, rows=rows, seed=seed, since_ts=since_ts,
                               search=inc is not None)
        out = res.stored()
        if inc is not None and policy.candidate_gate == "not_worse":
            # A tie with a degraded champion is worth a live trial only if the candidate
            # learnt something: one trained on noise ties a champion that now serves noise.
            out.update(better=res.learnt and (res.improvement is None or res.improvement >= 0.0),
                       gate="not_worse")
        return ok(**out, replayed=res.replayed)

    @tool(parse_docstring=True)
    @guarded
    def evaluate_candidate(service: str, version: int) -> str:
        """Compare a version with the champion: offline holdout metrics and live numbers.

        Args:
            service: service name.
            version: the candidate's version number.
        """
        svc = deps.registry.service(service)
        if svc.champion is None:
            return error(f"service {service!r} has no champion to compare with")
        v = deps.registry.version(service, version)
        return ok(version=version, status=v.status.value, metrics=v.metrics, parent=v.parent,
                  comparison=deps.monitor.compare_versions(service, svc.champion, version))

    @tool(parse_docstring=True)
    @guarded
    def reject_candidate(service: str, version: int, reason: str) -> str:
        """Mark a candidate as rejected so it is never deployed.

        Args:
            service: service name.
            version: the candidate's version number.
            reason: why, one line.
        """
        v = deps.registry.version(service, version)
        if v.status is not VersionStatus.CANDIDATE:
            return error(f"version {version} of {service!r} is {v.status.value!r}, not a "
                         "candidate; only candidates can be rejected here")
        deps.registry.set_status(service, version, VersionStatus.REJECTED,
                                 actor="agent:continuous_learning", reason=reason)
        return ok(service=service, version=version, status="rejected")

    return [train_candidate, evaluate_candidate, reject_candidate]


def _performance_incident(deps: ToolDeps, thread: str) -> Incident | None:
    """The performance incident this thread works on; None for any other thread (e.g. chat)."""
    try:
        inc = deps.incidents.get(thread)
    except NotFound:
        return None
    return inc if inc.kind == "performance_drop" else None


def _drift_rows(
    deps: ToolDeps, inc: Incident, svc: ServiceRecord
) -> tuple[float | None, int | None]:
    """``(since, most rows)`` a performance incident trains on: the new concept, not the mix.

    Settled drift: the rows since the new concept started. A stopgap (still rising, rose
    enough): the rows since the onset, at most the most recent ``min_rows_after_drift``.
    Otherwise the rows since the onset.
    """
    st = drift_settling(svc, deps.ops.reader, inc)
    if st is None:
        return None, None
    if st.since is not None:
        return st.since, None
    if stopgap_due(inc, st, svc.policy):
        return inc.onset_at, svc.policy.min_rows_after_drift
    return inc.onset_at, None
