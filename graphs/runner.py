"""Drives incident threads: start, resume with a decision or a tick, and read where each stands.

Interrupts come in two kinds: ``approval`` (raised by a risky tool; resumed with the stored
decision) and ``wait`` (raised by verify; resumed by the loop after ``until``). Resume values are
keyed by interrupt id, and a resume is refused unless its interrupt is really pending on the
thread (LangGraph silently ignores an unknown resume key; DESIGN §7).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langgraph.types import Command

from fleet.approvals import EXPIRED_BY, ApprovalStore
from fleet.errors import InvalidInput
from fleet.incidents import IncidentStore
from fleet.incidents.lifecycle import Status


@dataclass(frozen=True)
class RunOutcome:
    """Where a thread stands after a run."""

    incident_id: str
    state: str
    """``new`` (never run), ``stalled`` (stopped between steps, e.g. a crash), ``done``,
    ``awaiting_approval`` or ``waiting``."""
    approval_ids: tuple[str, ...] = ()
    until: float | None = None
    """For ``waiting``: when to resume."""
    summary: str = ""
    interrupts: tuple[dict[str, Any], ...] = field(default=(), repr=False)


class IncidentRunner:
    """Runs the compiled incident graph for one incident at a time."""

    def __init__(self, graph: Any, *, incidents: IncidentStore, approvals: ApprovalStore,
                 worker: str = ""):
        self.graph = graph
        self.incidents = incidents
        self.approvals = approvals
        self.worker = worker  # the loop worker running the threads, recorded at pick-up

    def config(self, incident_id: str, service: str = "") -> dict[str, Any]:
        """The thread config of an incident (thread id = incident id)."""
        return {"configurable": {"thread_id": incident_id, "service": service,
                                 "worker": self.worker},
                "recursion_limit": 200}

    def start(self, incident_id: str) -> RunOutcome:
        """Run a new incident until it ends or pauses. Re-running a started thread resumes it."""
        inc = self.incidents.get(incident_id)
        cfg = self.config(incident_id, inc.service)
        now = self._after(incident_id, cfg)
        if now.state == "new":
            self.graph.invoke({"incident_id": incident_id}, cfg)
        elif now.state == "stalled":
            self.graph.invoke(None, cfg)  # continue from the last checkpoint
        else:
            return now
        return self._after(incident_id, cfg)

    def status(self, incident_id: str) -> RunOutcome:
        """Where the thread stands now, without running anything."""
        inc = self.incidents.get(incident_id)
        return self._after(incident_id, self.config(incident_id, inc.service))

    def resume_tick(self, incident_id: str) -> RunOutcome:
        """Resume a ``wait`` interrupt (the loop calls this once ``until`` has passed)."""
        return self._resume(incident_id, "wait", {"type": "tick"})

    def resume_decision(self, incident_id: str, approval_id: str) -> RunOutcome:
        """Resume the thread paused on ``approval_id`` with its stored decision.

        Raises:
            InvalidInput: the approval is not decided, or no interrupt for it is pending.
        """
        decision = self.approvals.decision(approval_id)
        if decision is None:
            raise InvalidInput(f"approval {approval_id!r} has no decision yet; decide it first")
        inc = self.incidents.get(incident_id)
        if inc.status == Status.AWAITING_APPROVAL:
            nxt = Status.MITIGATING if decision.approved else Status.INVESTIGATING
            expired = decision.by == EXPIRED_BY
            verdict = "approved" if decision.approved else "expired" if expired else "rejected"
            self.incidents.transition(incident_id, nxt,
                                      actor=decision.by if expired else f"human:{decision.by}",
                                      reason=f"approval {approval_id} {verdict}")
        value = {"type": "decision", "approval_id": approval_id}
        return self._resume(incident_id, "approval", value, approval_id=approval_id)

    def _resume(self, incident_id: str, kind: str, value: dict[str, Any], *,
                approval_id: str | None = None) -> RunOutcome:
        inc = self.incidents.get(incident_id)
        cfg = self.config(incident_id, inc.service)
        pending = self._pending(cfg)
        match = [i for i in pending if i.value.get("type") == kind
                 and (approval_id is None or i.value.get("approval_id") == approval_id)]
        if not match:
            have = [(i.value.get("type"), i.value.get("approval_id")) for i in pending]
            raise InvalidInput(
                f"incident {incident_id!r} has no pending {kind} interrupt"
                f"{f' for approval {approval_id!r}' if approval_id else ''}; pending: {have}"
            )
        self.graph.invoke(Command(resume={match[0].id: value}), cfg)
        return self._after(incident_id, cfg)

    def _pending(self, cfg: dict[str, Any]) -> list[Any]:
        snap = self.graph.get_state(cfg)
        return [i for i in snap.interrupts if isinstance(i.value, dict)]

    def _after(self, incident_id: str, cfg: dict[str, Any]) -> RunOutcome:
        snap = self.graph.get_state(cfg)
        if not snap.values:
            return RunOutcome(incident_id, "new")
        pending = [i for i in snap.interrupts if isinstance(i.value, dict)]
        values = snap.values
        # ``next`` leaves out tasks whose writes were saved before a crash cut the step short
        # (the checkpoint after them was not): the thread is not done while any task is left.
        if (snap.next or snap.tasks) and not pending:
            return RunOutcome(incident_id, "stalled")
        approvals = tuple(i.value["approval_id"] for i in pending
                          if i.value.get("type") == "approval")
        if approvals:
            inc = self.incidents.get(incident_id)
            if inc.status in (Status.INVESTIGATING, Status.MITIGATING):
                self.incidents.transition(incident_id, Status.AWAITING_APPROVAL,
                                          actor="agent:deployment",
                                          reason=f"waiting for approval {approvals[0]}")
            return RunOutcome(incident_id, "awaiting_approval", approval_ids=approvals,
                              interrupts=tuple(i.value for i in pending))
        waits = [i.value for i in pending if i.value.get("type") == "wait"]
        if waits:
            return RunOutcome(incident_id, "waiting", until=float(waits[0]["until"]),
                              interrupts=tuple(waits))
        return RunOutcome(incident_id, "done", summary=str(values.get("summary", "")))
