"""Incidents on a real Redis: dedupe, hysteresis, atomic opens, lifecycle moves and their audit."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import pytest

from fleet.audit import Audit
from fleet.errors import IllegalTransition, InvalidInput, UnknownIncident
from fleet.incidents import Incident, IncidentStore, Signal, Status
from fleet.incidents.lifecycle import NEXT, allowed_next

COOLDOWN = 600.0


@pytest.fixture()
def audit(r, keys, clock) -> Audit:
    return Audit(r, keys, clock)


@pytest.fixture()
def store(r, keys, clock, audit) -> IncidentStore:
    return IncidentStore(r, keys, clock, audit, cooldown_s=COOLDOWN, clear_after=3)


def sig(
    kind: str = "performance_drop",
    severity: str = "warning",
    *,
    service: str = "elec",
    at: float = 0.0,
    **evidence: float | int | str | list,
) -> Signal:
    return Signal(
        service=service, kind=kind, severity=severity, detector="cusum",  # type: ignore[arg-type]
        evidence=evidence or {"statistic": 9.1, "threshold": 8.0}, onset=1200, version=3, at=at,
    )


def actions(audit: Audit) -> list[tuple[str, str]]:
    """(action, incident) of every incident audit entry, oldest first."""
    return [(e.action, e.details["incident"]) for e in audit.read(action_prefix="incident.")]


def close(store: IncidentStore, inc: Incident, status: str = "resolved") -> Incident:
    return store.transition(inc.id, status, actor="agent:supervisor", reason="fixed")


# --- dedupe ----------------------------------------------------------------------------
def test_a_hundred_signals_of_one_fingerprint_make_one_incident(store, audit, clock, r, keys):
    """The monitor fires every tick while a problem lasts; agents must wake once, not 100 times."""
    severities = ["warning"] * 40 + ["critical"] + ["info"] * 59
    seen = set()
    for i, severity in enumerate(severities):
        clock.advance(1)
        seen.add(store.observe(sig(severity=severity, statistic=float(i), at=clock.now())).id)

    assert seen == {"inc-elec-performance_drop-1"}
    inc = store.get("inc-elec-performance_drop-1")
    assert inc.signal_count == 100
    assert inc.severity == "critical"
    assert inc.status is Status.OPEN and inc.thread_id == inc.id
    assert inc.evidence == {"statistic": 99.0}
    assert inc.first_evidence == {"statistic": 0.0}
    assert (inc.onset, inc.version) == (1200, 3)
    assert inc.opened_at == 1_700_000_001.0 and inc.updated_at == 1_700_000_100.0
    assert r.smembers(keys.incidents_open) == {inc.id}
    assert [i.id for i in store.recent(10)] == [inc.id]
    # One open, one severity rise; repeats of the same news stay out of the audit trail.
    assert actions(audit) == [("incident.open", inc.id), ("incident.update", inc.id)]
    update = audit.read(action_prefix="incident.update")[0]
    assert update.reason == "severity warning -> critical"
    assert update.details["signal_count"] == 41


def test_different_kinds_and_services_open_separate_incidents(store, clock):
    clock.advance(1)
    a = store.observe(sig("performance_drop"))
    clock.advance(1)
    b = store.observe(sig("covariate_drift"))
    clock.advance(1)
    c = store.observe(sig("performance_drop", service="churn"))
    clock.advance(1)
    store.observe(sig("covariate_drift"))

    assert [a.id, b.id, c.id] == [
        "inc-elec-performance_drop-1",
        "inc-elec-covariate_drift-2",
        "inc-churn-performance_drop-1",
    ]
    assert [i.id for i in store.open_incidents()] == [a.id, b.id, c.id]
    assert [i.id for i in store.open_incidents("elec")] == [a.id, b.id]
    assert [i.id for i in store.recent(2)] == [c.id, b.id]
    assert [i.id for i in store.recent(10, service="elec")] == [b.id, a.id]
    assert store.get(b.id).signal_count == 2


# --- hysteresis ------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    closed: str
    """Peak severity of the incident that was resolved."""
    after_s: float
    """Seconds after the close that the next signal arrives."""
    severity: str
    reopens: bool


HYSTERESIS = [
    Case("warning", 10, "warning", reopens=False),
    Case("warning", 10, "info", reopens=False),
    Case("warning", COOLDOWN - 1, "warning", reopens=False),
    Case("warning", COOLDOWN, "warning", reopens=True),
    Case("warning", 10, "critical", reopens=True),
    Case("critical", 10, "critical", reopens=False),
    Case("critical", COOLDOWN + 1, "info", reopens=True),
]


def _case_id(c: Case) -> str:
    return f"{c.closed}+{c.after_s:g}s-{c.severity}"


@pytest.mark.parametrize("case", HYSTERESIS, ids=_case_id)
def test_cooldown_after_a_close_swallows_noise_but_not_worse_news(store, clock, case: Case):
    """Rule: inside the cooldown only a signal worse than the closed peak re-opens."""
    first = store.observe(sig(severity=case.closed))
    close(store, first)
    clock.advance(case.after_s)

    got = store.observe(sig(severity=case.severity))

    if case.reopens:
        assert got is not None and got.id == "inc-elec-performance_drop-2"
        assert got.status is Status.OPEN and got.severity == case.severity
        assert store.open_for("elec", "performance_drop") == got
    else:
        assert got is None
        assert store.open_for("elec", "performance_drop") is None
        assert store.last_closed("elec", "performance_drop").suppressed == 1
    assert store.get(first.id).status is Status.RESOLVED


def test_a_failed_incident_also_holds_its_fingerprint_for_the_cooldown(store, clock):
    """Re-opening what the automation just gave up on would loop the agents."""
    close(store, store.observe(sig()), status="failed")
    clock.advance(60)
    assert store.observe(sig()) is None
    closure = store.last_closed("elec", "performance_drop")
    assert (closure.status, closure.severity, closure.suppressed) == (Status.FAILED, "warning", 1)


def test_suppressed_signals_are_counted_and_a_new_close_resets_the_count(store, clock):
    close(store, store.observe(sig()))
    for _ in range(5):
        clock.advance(1)
        assert store.observe(sig()) is None
    assert store.last_closed("elec", "performance_drop").suppressed == 5
    clock.advance(COOLDOWN)
    second = store.observe(sig())
    close(store, second)
    assert store.last_closed("elec", "performance_drop").incident_id == second.id
    assert store.last_closed("elec", "performance_drop").suppressed == 0


# --- concurrency -----------------------------------------------------------------------
def test_concurrent_observers_open_exactly_one_incident(store, r, keys):
    """Two monitor processes firing at once must not open two incidents for one fingerprint."""
    threads, per_thread = 6, 10
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(per_thread):
                store.observe(sig())
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()

    assert errors == []
    assert r.smembers(keys.incidents_open) == {"inc-elec-performance_drop-1"}
    assert r.zcard(keys.incidents_all) == 1
    assert store.get("inc-elec-performance_drop-1").signal_count == threads * per_thread


def test_concurrent_opens_of_different_kinds_get_distinct_numbers(store):
    kinds = ["performance_drop", "covariate_drift", "data_quality", "latency_regression"]
    barrier = threading.Barrier(len(kinds))

    def work(kind: str) -> None:
        barrier.wait()
        store.observe(sig(kind))

    pool = [threading.Thread(target=work, args=(k,)) for k in kinds]
    for t in pool:
        t.start()
    for t in pool:
        t.join()

    numbers = sorted(int(i.id.rsplit("-", 1)[1]) for i in store.open_incidents("elec"))
    assert numbers == [1, 2, 3, 4]


# --- lifecycle -------------------------------------------------------------------------
def test_happy_path_moves_close_the_incident_and_audit_every_step(store, audit, clock, r, keys):
    inc = store.observe(sig())
    steps = ["investigating", "awaiting_approval", "mitigating", "resolved"]
    for step in steps:
        clock.advance(10)
        store.transition(inc.id, step, actor="agent:supervisor", reason=f"to {step}")
    store.transition(
        inc.id, "resolved", actor="agent:supervisor", reason="re-run on resume is a no-op"
    )

    done = store.get(inc.id)
    assert done.status is Status.RESOLVED
    assert done.closed_at == 1_700_000_040.0
    assert done.resolution == "to resolved"
    assert r.smembers(keys.incidents_open) == set()
    assert r.get(keys.incident_fingerprint("elec", "performance_drop")) is None
    assert store.open_incidents() == []
    assert store.last_closed("elec", "performance_drop").closed_at == 1_700_000_040.0
    entries = audit.read(action_prefix="incident.")
    assert [e.action for e in entries] == ["incident.open"] + ["incident.transition"] * 4
    assert [(e.details["previous"], e.details["status"]) for e in entries[1:]] == [
        ("open", "investigating"),
        ("investigating", "awaiting_approval"),
        ("awaiting_approval", "mitigating"),
        ("mitigating", "resolved"),
    ]
    assert {e.actor for e in entries[1:]} == {"agent:supervisor"}
    assert entries[0].actor == "detector:cusum"
    assert entries[-1].details["resolution"] == "to resolved"


def test_escalated_incident_stays_open_and_can_be_handed_back(store, audit):
    inc = store.observe(sig())
    store.transition(inc.id, "investigating", actor="agent:supervisor", reason="triage")
    store.transition(inc.id, Status.ESCALATED, actor="agent:supervisor", reason="no better model")
    assert [i.id for i in store.open_incidents()] == [inc.id]
    assert store.observe(sig(severity="critical")).id == inc.id  # still absorbs signals

    back = store.transition(inc.id, "investigating", actor="human:alice", reason="try again")
    assert back.status is Status.INVESTIGATING and back.closed_at is None
    last = audit.read(action_prefix="incident.transition")[-1]
    assert (last.actor, last.reason, last.details["previous"]) == (
        "human:alice", "try again", "escalated",
    )


REFUSED = [
    (
        [],
        "mitigating",
        "incident 'inc-elec-performance_drop-1' cannot go from 'open' to 'mitigating'; "
        "allowed from 'open': 'investigating', 'resolved', 'escalated', 'failed'",
    ),
    (
        ["investigating", "escalated"],
        "awaiting_approval",
        "incident 'inc-elec-performance_drop-1' cannot go from 'escalated' to "
        "'awaiting_approval'; allowed from 'escalated': 'investigating', 'resolved', 'failed'",
    ),
    (
        ["resolved"],
        "investigating",
        "incident 'inc-elec-performance_drop-1' cannot go from 'resolved' to 'investigating'; "
        "allowed from 'resolved': none ('resolved' is terminal)",
    ),
    (
        ["failed"],
        "open",
        "incident 'inc-elec-performance_drop-1' cannot go from 'failed' to 'open'; "
        "allowed from 'failed': none ('failed' is terminal)",
    ),
]


@pytest.mark.parametrize(("path", "target", "message"), REFUSED, ids=lambda v: str(v)[:30])
def test_refused_moves_name_the_states_and_leave_no_trace(store, audit, path, target, message):
    inc = store.observe(sig())
    for step in path:
        store.transition(inc.id, step, actor="agent:supervisor", reason="setup")
    before = store.get(inc.id)
    n_audit = len(audit.read(action_prefix="incident."))

    with pytest.raises(IllegalTransition, match=f"^{re.escape(message)}$"):
        store.transition(inc.id, target, actor="agent:supervisor", reason="bad")

    assert store.get(inc.id) == before
    assert len(audit.read(action_prefix="incident.")) == n_audit


def test_unknown_status_and_incident_are_clear(store):
    inc = store.observe(sig())
    with pytest.raises(InvalidInput, match=re.escape(
        "unknown incident status 'done'; allowed: 'open', 'investigating', 'awaiting_approval', "
        "'mitigating', 'resolved', 'escalated', 'failed'"
    )):
        store.transition(inc.id, "done", actor="a", reason="r")
    with pytest.raises(UnknownIncident, match=r"^no incident 'inc-x-1'\. Run: flywheel incidents$"):
        store.transition("inc-x-1", "resolved", actor="a", reason="r")
    with pytest.raises(UnknownIncident, match="no incident 'nope'"):
        store.get("nope")
    with pytest.raises(InvalidInput, match="unknown incident kind 'drift'; allowed: performance_"):
        store.clear("elec", "drift")


def test_every_active_status_can_close_and_terminals_cannot_move():
    for status in Status:
        if status.terminal:
            assert allowed_next(status) == []
        else:
            assert {Status.RESOLVED, Status.FAILED} <= NEXT[status]


# --- quiet ticks, notes, history ---------------------------------------------------------
def test_clear_counts_quiet_ticks_and_marks_recovery_without_resolving(store, audit, clock):
    """An agent may be mid-rollback when the detector goes quiet; the graph decides, not us."""
    inc = store.observe(sig())
    store.transition(inc.id, "investigating", actor="agent:supervisor", reason="triage")
    ticks = []
    for _ in range(4):
        clock.advance(5)
        ticks.append(store.clear("elec", "performance_drop").quiet_ticks)

    quiet = store.get(inc.id)
    assert ticks == [1, 2, 3, 4]
    assert quiet.status is Status.INVESTIGATING
    assert quiet.recovered_at == 1_700_000_015.0
    assert [a for a, _ in actions(audit)].count("incident.recovered") == 1

    relapse = store.observe(sig())
    assert (relapse.quiet_ticks, relapse.recovered_at, relapse.signal_count) == (0, None, 2)
    assert audit.read(action_prefix="incident.")[-1].reason == (
        "detector fired again after 4 quiet ticks"
    )
    assert store.clear("elec", "covariate_drift") is None


def test_notes_are_kept_in_order_and_audited(store, audit):
    inc = store.observe(sig())
    store.add_note(inc.id, "retrain started on window 1200-6200", actor="agent:learning")
    noted = store.add_note(inc.id, "  " + "x" * 600, actor="human:bob")
    assert noted.notes[0] == "agent:learning: retrain started on window 1200-6200"
    assert noted.notes[1] == "human:bob: " + "x" * 500
    assert store.get(inc.id).notes == noted.notes
    last = audit.read(action_prefix="incident.note")[-1]
    assert (last.actor, last.details["text"]) == ("human:bob", "x" * 600)
    with pytest.raises(InvalidInput, match="incident 'inc-elec-performance_drop-1' is empty"):
        store.add_note(inc.id, "   ", actor="human:bob")


def test_history_lists_a_services_incidents_newest_first_by_kind(store, clock):
    opened = []
    for kind in ["performance_drop", "covariate_drift", "performance_drop"]:
        clock.advance(COOLDOWN + 1)
        inc = store.observe(sig(kind))
        opened.append(inc.id)
        close(store, inc)
    clock.advance(1)
    store.observe(sig(service="churn"))

    assert [i.id for i in store.history("elec")] == opened[::-1]
    assert [i.id for i in store.history("elec", "performance_drop")] == [opened[2], opened[0]]
    assert [i.id for i in store.history("elec", "performance_drop", limit=1)] == [opened[2]]
    assert store.history("elec", "canary_fail") == []


def test_incident_hash_round_trips(store, r, keys):
    inc = store.observe(sig(features=["nswprice", "vicdemand"], psi=0.31))
    raw = r.hgetall(keys.incident(inc.id))
    assert raw["v"] == "1"
    assert Incident.from_hash(raw) == inc
    assert inc.evidence == {"features": ["nswprice", "vicdemand"], "psi": 0.31}
