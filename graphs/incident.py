"""The incident graph: intake → gather → supervisor → verify → close, with waits in between.

The supervisor is an agent (see ``supervisors``); the other nodes are plain code. Gather holds a
performance incident until the drift has settled (the champion's error stopped rising) and enough
labelled traffic of the new concept exists to train on (a wait interrupt the loop resumes later;
see ``fleet.monitor.settle``). When the serving version's error on the settled rows is back at
the pre-drift error (a rise that did not last, or a stopgap that already serves the settled
concept) it closes the incident without a retrain. Verify re-checks
the service after a round: a live canary is analysed, and while the analysis is inconclusive
before its deadline the graph pauses with a ``wait`` interrupt that the loop resumes later. A
verdict goes back to the supervisor, at most ``max_rounds`` times. Thread id = incident id.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypedDict

from langchain_core.messages import AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import interrupt

from fleet.actions.limits import Limits
from fleet.clock import Clock
from fleet.incidents import Incident, IncidentStore
from fleet.incidents.lifecycle import Status
from fleet.monitor.config import detector_config
from fleet.monitor.settle import Settling, back_to_baseline, drift_settling, stopgap_due
from fleet.registry import Registry, ServiceRecord
from fleet.telemetry import TelemetryReader
from supervisors.runbook.policies import last_result, tool_results


class CanaryAnalyst(Protocol):
    """Anything that can analyse a service's live canary (``fleet.monitor`` does)."""

    def canary_analysis(self, service: str) -> dict[str, Any]:
        """Return ``{"verdict": "pass"|"fail"|"inconclusive", "version": int, ...numbers}``."""
        ...


class IncidentState(TypedDict, total=False):
    """What the incident graph keeps between steps (checkpointed in Redis)."""

    incident_id: str
    service: str
    messages: Annotated[list[AnyMessage], add_messages]
    rounds: int
    outcome: str
    """``finish``, ``escalate`` or ``step_cap`` from the supervisor's last round."""
    summary: str
    verdict: str
    """Last canary verdict seen by verify."""
    check: str
    """The node a ``wait`` returns to: ``gather`` or ``verify``."""
    watching: int
    """The canary version verify is following (0 when none)."""
    stage: str
    """Of a performance incident: ``""`` (one retrain), ``stopgap`` (the first round trains on
    the most recent rows while the drift is still under way) or ``settled`` (the second round,
    on the settled concept)."""
    stage_at: float
    """When the current stage began waiting (gather's timeout counts from here)."""


@dataclass(frozen=True)
class IncidentGraphDeps:
    """What the graph's plain-code nodes need."""

    incidents: IncidentStore
    registry: Registry
    analyst: CanaryAnalyst
    reader: TelemetryReader
    clock: Clock
    max_rounds: int = 3
    """Times verify may send the supervisor back."""
    canary_deadline_s: float = 3_600.0
    """An inconclusive canary older than this goes to a person."""
    wait_s: float = 60.0
    """How long a ``wait`` interrupt asks the loop to wait before re-checking."""
    gather_timeout_s: float = 3_600.0
    """Longest a performance incident waits for post-onset data before the supervisor runs."""
    notify: Callable[[str, dict[str, Any]], None] | None = None
    """Called with ``(event, payload)`` when an incident closes."""
    limits: Limits | None = None
    """Cooldowns: the settled round waits for the stopgap's retrain cooldown to end."""


def build_incident_graph(deps: IncidentGraphDeps, supervisor: Any, *, checkpointer: Any) -> Any:
    """Compile the incident graph around a compiled ``supervisor`` agent loop."""

    def intake(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
        inc = deps.incidents.get(state["incident_id"])
        if inc.status == Status.OPEN:
            worker = (config.get("configurable") or {}).get("worker")
            deps.incidents.transition(inc.id, Status.INVESTIGATING, actor="agent:supervisor",
                                      reason="picked up by the incident graph"
                                      + (f" on worker {worker}" if worker else ""))
        svc = deps.registry.service(inc.service)
        payload = {
            "id": inc.id, "service": inc.service, "kind": inc.kind, "severity": inc.severity,
            "evidence": inc.evidence, "onset": inc.onset, "version": inc.version,
            "champion": svc.champion, "challenger": svc.challenger, "mode": svc.mode.value,
            "policy": {"max_canary_pct": svc.policy.max_canary_pct,
                       "min_improvement": svc.policy.min_improvement,
                       "rollout": svc.policy.rollout},
        }
        msg = HumanMessage(content="INCIDENT " + json.dumps(payload, default=str))
        return {"service": inc.service, "messages": [msg], "rounds": 0}

    def gather(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
        inc = deps.incidents.get(state["incident_id"])
        if inc.kind != "performance_drop" or inc.onset_at is None:
            return {"check": ""}
        svc = deps.registry.service(inc.service)
        st = drift_settling(svc, deps.reader, inc)
        stage = state.get("stage", "")
        timed_out = deps.clock.now() - state.get("stage_at", inc.opened_at) > deps.gather_timeout_s
        if st is None or st.since is not None or timed_out:
            if not timed_out and stage in ("", "settled") and back_to_baseline(
                    inc, st, svc.policy):
                # Before any retrain: the rise did not last. After a stopgap: it already serves
                # the settled concept. Either way a retrain has little to gain.
                assert st is not None and st.error is not None  # back_to_baseline checked
                return {"check": "close", "outcome": "finish",
                        "summary": _back_to_baseline(inc, st, svc, settled=stage == "settled")}
            if stage != "settled":
                return {"check": ""}
            if deps.limits is not None and deps.limits.cooldown_until(
                    inc.service, "retrain", svc.policy) is not None:
                return {"check": "gather"}  # the stopgap's retrain was recent: wait it out
            note = {"stage": "settled", "champion": svc.champion, "challenger": svc.challenger,
                    "settled_since": st.since if st is not None else None,
                    "why": "the stopgap is live and the drift has settled: retrain on the "
                           "settled concept" if not timed_out else
                           "the drift did not settle in time: retrain on the recent rows"}
            return {"check": "", "messages": [HumanMessage(content="STAGE " + json.dumps(note))]}
        if stage == "" and stopgap_due(inc, st, svc.policy):
            note = {"stage": "stopgap", "rows_since_onset": st.rows,
                    "why": "the champion's error is still rising: ship a stopgap trained on the "
                           "rows since the onset now, retrain on the settled concept later"}
            return {"check": "", "stage": "stopgap",
                    "messages": [HumanMessage(content="STAGE " + json.dumps(note))]}
        return {"check": "gather"}

    def after_gather(state: IncidentState) -> str:
        check = state.get("check")
        return "wait" if check == "gather" else "close" if check == "close" else "supervisor"

    def run_supervisor(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
        before = list(state["messages"])
        out = supervisor.invoke({"messages": before, "steps": 0}, config)
        new = out["messages"][len(before):]
        update = {"messages": new, "outcome": out.get("outcome", "step_cap"),
                  "summary": out.get("summary", "")}
        started = _started_rollout(new)
        if started:
            update["watching"] = started  # verify follows only the rollout this incident began
        return update

    def verify(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
        if state.get("outcome") != "finish":
            return {}
        svc = deps.registry.service(state["service"])
        watching = state.get("watching", 0)
        if not watching:
            if state.get("stage") == "stopgap":
                # The stopgap round is over (promoted, or its rollout ended): now wait for the
                # drift to settle and retrain on the settled concept.
                return {"verdict": "", "stage": "settled", "stage_at": deps.clock.now(),
                        "check": "gather"}
            return {"verdict": ""}  # another incident's canary is not ours to judge
        if svc.challenger != watching:
            # Someone else (a person, or another incident's rollback) ended our canary.
            v = deps.registry.version(svc.name, watching)
            return {"verdict": "", "watching": 0, "outcome": "escalate",
                    "summary": f"canary of v{watching} ended outside this incident (now "
                               f"{v.status.value}); champion v{svc.champion} unchanged"}
        inc = deps.incidents.get(state["incident_id"])
        if inc.status == Status.INVESTIGATING:
            deps.incidents.transition(inc.id, Status.MITIGATING, actor="agent:supervisor",
                                      reason=f"{svc.mode.value} of v{svc.challenger} running")
        res = deps.analyst.canary_analysis(svc.name)
        verdict = res.get("verdict", "inconclusive")
        age = deps.clock.now() - svc.challenger_since
        if verdict == "inconclusive" and age < deps.canary_deadline_s:
            return {"verdict": "wait", "check": "verify"}
        if verdict == "inconclusive":
            res = dict(res, deadline_s=deps.canary_deadline_s, age_s=round(age))
        msg = HumanMessage(content="VERIFY " + json.dumps({"canary": res}, default=str))
        return {"verdict": verdict, "messages": [msg], "rounds": state.get("rounds", 0) + 1,
                "watching": 0}

    def after_verify(state: IncidentState) -> str:
        if state.get("outcome") == "finish" and state.get("check") == "gather":
            return "wait"
        if state.get("outcome") != "finish" or not state.get("verdict"):
            return "close"
        if state["verdict"] == "wait":
            return "wait"
        return "supervisor" if state.get("rounds", 0) <= deps.max_rounds else "close"

    def wait(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
        why = {"gather": "collecting labelled traffic after the drift's onset",
               "verify": "canary analysis needs more labelled traffic"}[state["check"]]
        interrupt({"type": "wait", "incident": state["incident_id"],
                   "until": deps.clock.now() + deps.wait_s, "reason": why})
        return {}

    def close(state: IncidentState, config: RunnableConfig) -> dict[str, Any]:
        outcome = state.get("outcome", "step_cap")
        status = {"finish": Status.RESOLVED, "escalate": Status.ESCALATED}.get(
            outcome, Status.ESCALATED)
        summary = state.get("summary") or outcome
        if state.get("verdict") and state.get("rounds", 0) > deps.max_rounds:
            status, summary = Status.ESCALATED, f"verify rounds exhausted: {summary}"
        inc = deps.incidents.get(state["incident_id"])
        if not inc.status.terminal and inc.status != status:
            deps.incidents.transition(inc.id, status, actor="agent:supervisor",
                                      reason=summary[:300], resolution=summary[:500])
        if deps.notify is not None:
            deps.notify("incident.closed", {"incident": inc.id, "service": inc.service,
                                            "status": status.value, "summary": summary})
        return {"summary": summary}

    g = StateGraph(IncidentState)
    g.add_node("intake", intake)
    g.add_node("gather", gather)
    g.add_node("supervisor", run_supervisor)
    g.add_node("verify", verify)
    g.add_node("wait", wait)
    g.add_node("close", close)
    g.add_edge(START, "intake")
    g.add_edge("intake", "gather")
    g.add_conditional_edges("gather", after_gather, ["wait", "supervisor", "close"])
    g.add_edge("supervisor", "verify")
    g.add_conditional_edges("verify", after_verify, ["supervisor", "wait", "close"])
    g.add_conditional_edges("wait", lambda s: s["check"], ["gather", "verify"])
    g.add_edge("close", END)
    return g.compile(checkpointer=checkpointer, name="incident")


def _started_rollout(messages: list[Any]) -> int:
    """The version whose shadow or canary the supervisor's round started (0 if none)."""
    done = tool_results(messages)
    for tool in ("start_canary", "start_shadow"):
        res = last_result(done, tool)
        if res and res.get("status") == "success" and res.get("version"):
            return int(res["version"])
    return 0


def _back_to_baseline(inc: Incident, st: Settling, svc: ServiceRecord, *, settled: bool) -> str:
    """Close summary when the serving version's settled error is back at the pre-drift error."""
    who = (f"the stopgap v{svc.champion}" if svc.champion != inc.version
           else f"the champion v{svc.champion}")
    tail = "no second retrain" if settled else "the rise did not last; no retrain"
    return (f"keeping {who} of {inc.service}: on the settled rows its error {st.error:.3f} is "
            f"back within {detector_config(svc.policy).performance_min_effect:g} of the "
            f"pre-drift {float(inc.evidence['baseline_error']):.3f}; {tail}")
