"""Deterministic scoring of one system's run of one scenario, from evidence, not internal flags.

For flywheel the evidence is what the run left in Redis: the audit trail (every retrain, rollout,
promotion, rollback, quarantine and approval, with versions) and the incidents. Baselines report
the same kind of :class:`Event` list themselves. Both are scored the same way:

- prequential accuracy: every replayed row's served prediction against its label (a request
  answered with an error counts as wrong: the user got no answer);
- accuracy lost against the case's upper reference (oracle, retrain every 500 rows, or static);
- detection delay: rows from each true onset (a drift point, or the start of a data or concept
  fault) to the first incident (flywheel) or detector alarm (baselines) before the next onset;
- retrains, promotions, rollbacks and approvals requested, counted from the events;
- wrong actions: events matching a ``forbid`` rule; the ``expect`` rules not met;
- LLM calls and tokens (the brains' usage tracker) and wall time.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evals.cases import Case, Rule
from fleet.audit import AuditEntry
from fleet.datasets import DriftStream

SETUP_ACTOR = "eval"
"""Actor of the scenario's own setup (registering the service, the first model)."""

AUDIT_ACTIONS: dict[str, str] = {
    "registry.add_version": "retrain",
    "registry.promote": "promote",
    "registry.rollback": "rollback",
    "registry.clear_challenger": "rollback",
    "registry.start_canary": "canary",
    "registry.start_shadow": "shadow",
    "approval.request": "approval_request",
    "approval.approve": "approval_approve",
    "approval.reject": "approval_reject",
    "approval.expire": "approval_expire",
}
"""Audit action -> scenario action name (see :data:`evals.cases.ACTIONS`)."""

BASELINE_ACTIONS = frozenset({"retrain", "promote", "rollback"})
"""The only actions a baseline can take; other expectations are not met by a baseline."""


@dataclass(frozen=True)
class Event:
    """One action a system took, at the stream row it happened."""

    row: int
    action: str
    version: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class IncidentRow:
    """One incident flywheel opened: where, what, and how it ended."""

    id: str
    row: int
    kind: str
    status: str
    """Where it ended (``resolved``, ``escalated``, ...)."""
    reached: tuple[str, ...] = ()
    """Every status it moved to, in order (an escalation a person later closed included)."""


@dataclass
class SystemRun:
    """What one system did on one scenario."""

    system: str
    start: int
    """First replayed row (the first model was trained before it)."""
    correct: np.ndarray
    """Per replayed row: the served answer was right (bool)."""
    version: np.ndarray
    """Per replayed row: the version that answered (0 = none)."""
    events: list[Event] = field(default_factory=list)
    incidents: list[IncidentRow] = field(default_factory=list)
    alarms: list[int] = field(default_factory=list)
    """Rows where the system's detector fired (detector baselines)."""
    llm_calls: int = 0
    tokens: int = 0
    wall_s: float = 0.0
    kind: str = "baseline"
    """``flywheel`` or ``baseline``."""
    detects: bool = False
    """Whether the system has a detector whose alarms (or incidents) count for detection delay."""

    @property
    def accuracy(self) -> float:
        """Prequential accuracy over the replayed rows."""
        return float(self.correct.mean()) if len(self.correct) else float("nan")

    def count(self, action: str) -> int:
        """How many times ``action`` happened."""
        return sum(1 for e in self.events if e.action == action)


@dataclass(frozen=True)
class Score:
    """The scorecard line of one system on one scenario."""

    system: str
    kind: str
    accuracy: float
    lost_vs_reference: float | None
    """Reference accuracy minus this one (points of accuracy; positive = worse)."""
    detection_delay: float | None
    """Mean rows from a true onset to the first incident/alarm; None when nothing applies."""
    detected: str
    """``found/onsets`` or ``–``."""
    retrains: int
    promotions: int
    rollbacks: int
    approvals: int
    wrong_actions: int
    wrong: dict[str, int]
    """Forbidden rule label -> how many times it happened (only the non-zero ones)."""
    handled: bool
    """Every ``expect`` rule met."""
    missing: list[str]
    """Labels of the ``expect`` rules not met."""
    llm_calls: int
    tokens: int
    wall_s: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(self.__dict__)


# --- reading flywheel's evidence ----------------------------------------------------------------


class RowClock:
    """Maps simulated time back to stream rows: ``(time, rows replayed by then)`` marks."""

    def __init__(self) -> None:
        self._t: list[float] = []
        self._row: list[int] = []

    def mark(self, t: float, row: int) -> None:
        """Note that by time ``t`` rows up to ``row`` (exclusive) had been served."""
        if self._t and t < self._t[-1]:
            raise ValueError(f"time went backwards: {t} < {self._t[-1]}")
        self._t.append(t)
        self._row.append(row)

    def row(self, t: float) -> int:
        """The stream row reached when something happened at time ``t``."""
        i = bisect.bisect_right(self._t, t) - 1
        return self._row[max(i, 0)] if self._row else 0


def audit_events(entries: Iterable[AuditEntry], service: str, clock: RowClock) -> list[Event]:
    """Scenario actions from the audit trail (the setup's own entries left out)."""
    out: list[Event] = []
    for e in entries:
        if e.service != service or e.actor == SETUP_ACTOR:
            continue
        d = e.details
        name = AUDIT_ACTIONS.get(e.action)
        version = d.get("version")
        if e.action.startswith("approval.") and isinstance(d.get("args"), dict):
            version = d["args"].get("version")  # the version the approved action acts on
        elif e.action == "registry.rollback":
            version = d.get("from_version")
        elif e.action == "registry.clear_challenger":
            version = d.get("challenger_before")
        elif e.action == "ops.quarantine" and d.get("outcome") == "done":
            name = "quarantine"
        elif e.action == "incident.transition" and d.get("status") in ("escalated", "resolved"):
            name = "escalate" if d["status"] == "escalated" else "resolve"
            version = None
        if name is None:
            continue
        out.append(Event(clock.row(e.ts), name, int(version) if version is not None else None,
                         e.reason[:160]))
    return out


def opened_incidents(entries: Iterable[AuditEntry], service: str, clock: RowClock,
                     status: dict[str, str]) -> list[IncidentRow]:
    """Incidents opened during the run, with their final status and every status they reached."""
    entries = list(entries)
    moves: dict[str, list[str]] = {}
    for e in entries:
        if e.service == service and e.action == "incident.transition":
            moves.setdefault(e.details.get("incident", ""), []).append(e.details.get("status", ""))
    return [IncidentRow(e.details["incident"], clock.row(e.ts), e.details.get("kind", ""),
                        status.get(e.details["incident"], "?"),
                        tuple(moves.get(e.details["incident"], ())))
            for e in entries if e.service == service and e.action == "incident.open"]


# --- scoring ----------------------------------------------------------------------------------


def onsets(case: Case, stream: DriftStream) -> list[int]:
    """True onsets inside the replay: drift points and the starts of data or concept faults."""
    rows = set(stream.drift_points)
    rows |= {f.start for f in case.faults if not f.serving}
    return sorted(r for r in rows if case.train_rows <= r < len(stream))


def detection(found: Sequence[int], starts: Sequence[int], end: int) -> tuple[list[int], int]:
    """Delays of the first detection after each onset, and how many onsets went undetected.

    A detection counts for an onset when it falls in ``[onset, next onset)``.

    >>> detection([120, 130, 900], [100, 800], 1000)
    ([20, 100], 0)
    """
    delays, missed = [], 0
    marks = sorted(found)
    for k, onset in enumerate(starts):
        nxt = starts[k + 1] if k + 1 < len(starts) else end
        hits = [r for r in marks if onset <= r < nxt]
        if hits:
            delays.append(hits[0] - onset)
        else:
            missed += 1
    return delays, missed


def matches(rule: Rule, run: SystemRun) -> int:
    """How many times ``rule`` happened in ``run``."""
    if rule.action is not None:
        return sum(1 for e in run.events if e.action == rule.action and rule.covers(e.row)
                   and (rule.version is None or e.version == rule.version))
    return sum(1 for i in run.incidents if i.kind == rule.incident and rule.covers(i.row)
               and (rule.status is None or rule.status in (i.status, *i.reached)))


def score(case: Case, stream: DriftStream, run: SystemRun, reference: float | None, *,
          quick: bool = False) -> Score:
    """Score one system's run of ``case`` (``quick``: the case's quick size was run)."""
    starts = onsets(case, stream)
    found = [i.row for i in run.incidents] if run.kind == "flywheel" else run.alarms
    delay, detected = None, "–"
    if (run.kind == "flywheel" or run.detects) and starts:
        delays, _ = detection(found, starts, len(stream))
        delay = float(np.mean(delays)) if delays else None
        detected = f"{len(delays)}/{len(starts)}"
    wrong = {r.label: n for r in case.forbid if (n := matches(r, run))}
    missing = [r.label for r in case.expectations(quick=quick) if matches(r, run) < r.min]
    acc = run.accuracy
    return Score(
        system=run.system, kind=run.kind, accuracy=acc,
        lost_vs_reference=None if reference is None else reference - acc,
        detection_delay=delay, detected=detected,
        retrains=run.count("retrain"), promotions=run.count("promote"),
        rollbacks=run.count("rollback"), approvals=run.count("approval_request"),
        wrong_actions=sum(wrong.values()), wrong=wrong, handled=not missing, missing=missing,
        llm_calls=run.llm_calls, tokens=run.tokens, wall_s=run.wall_s,
    )
