"""The action ledger runs a side effect once per incident and args, survives crashes without
repeating unsafe actions; limits give one action at a time per service, cooldowns, a rollback cap
and an escalation count, all on the injected clock."""

from __future__ import annotations

import pytest

from fleet.actions import ActionLedger, ActionState, Limits, action_key
from fleet.audit import Audit
from fleet.errors import (
    ActionInProgress,
    ActionOutcomeUnknown,
    InvalidInput,
    LimitExceeded,
    ServiceBusy,
)
from fleet.schema import Policy


class Crash(BaseException):
    """Stands in for the process dying mid-action: nothing after it runs."""


class Counter:
    """A side effect that counts its calls and returns them."""

    def __init__(self, result: object = None, error: BaseException | None = None):
        self.calls = 0
        self.result = result
        self.error = error

    def __call__(self) -> object:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.result if self.result is not None else {"calls": self.calls}


@pytest.fixture()
def audit(r, keys, clock) -> Audit:
    return Audit(r, keys, clock)


@pytest.fixture()
def ledger(r, keys, clock, audit) -> ActionLedger:
    return ActionLedger(r, keys, clock, audit=audit, owner="test-worker")


@pytest.fixture()
def limits(r, keys, clock) -> Limits:
    return Limits(r, keys, clock)


# --- ledger ----------------------------------------------------------------------------------
def test_second_run_returns_the_stored_result_without_calling_again(
    ledger: ActionLedger, clock
) -> None:
    fn = Counter()
    first = ledger.run_once("inc-1", "promote", {"version": 3}, fn)
    again = ledger.run_once("inc-1", "promote", {"version": 3}, fn)
    assert first == again == {"calls": 1}
    assert fn.calls == 1

    rec = ledger.get("inc-1", "promote", {"version": 3})
    assert rec is not None
    assert (rec.state, rec.result, rec.attempts, rec.finished_at) == (
        ActionState.DONE, {"calls": 1}, 1, clock.now())
    assert rec.owner.startswith("test-worker:")


def test_other_incident_args_or_step_run_again(ledger: ActionLedger) -> None:
    fn = Counter()
    ledger.run_once("inc-1", "promote", {"version": 3}, fn)
    ledger.run_once("inc-2", "promote", {"version": 3}, fn)
    ledger.run_once("inc-1", "promote", {"version": 4}, fn)
    ledger.run_once("inc-1", "promote", {"version": 3}, fn, step="round-2")
    assert fn.calls == 4


def test_key_is_canonical() -> None:
    assert action_key("i", "canary", {"version": 3, "percent": 5.0}) == action_key(
        "i", "canary", {"percent": 5.0, "version": 3})


def test_a_refused_run_is_recorded_and_may_run_again(ledger: ActionLedger) -> None:
    failing = Counter(error=InvalidInput("too few rows"))
    with pytest.raises(InvalidInput, match="too few rows"):
        ledger.run_once("inc-1", "retrain", {"rows": 10}, failing)
    rec = ledger.get("inc-1", "retrain", {"rows": 10})
    assert rec is not None and (rec.state, rec.error) == (ActionState.FAILED, "too few rows")

    ok = Counter()
    assert ledger.run_once("inc-1", "retrain", {"rows": 10}, ok) == {"calls": 1}
    rec = ledger.get("inc-1", "retrain", {"rows": 10})
    assert rec is not None and (rec.state, rec.attempts, rec.error) == (ActionState.DONE, 2, "")


def test_crash_leaves_running_and_only_retry_safe_actions_rerun(
    ledger: ActionLedger, clock
) -> None:
    """A worker killed mid-promote: the record stays 'running' with a lease. While the lease
    lives, others wait; once it has expired, an unsafe action is refused, a safe one re-runs."""
    with pytest.raises(Crash):
        ledger.run_once("inc-1", "promote", {"version": 3}, Counter(error=Crash()), lease_s=60)
    rec = ledger.get("inc-1", "promote", {"version": 3})
    assert rec is not None and rec.state is ActionState.RUNNING
    assert rec.lease_until == clock.now() + 60

    fn = Counter()
    with pytest.raises(ActionInProgress, match=r"promote \{\"version\":3\} for incident 'inc-1' "
                       r"is already running \(owner 'test-worker:\w+', lease until "
                       r"2023-11-14T22:14:20Z\)"):
        ledger.run_once("inc-1", "promote", {"version": 3}, fn)

    clock.advance(61)
    key = action_key("inc-1", "promote", {"version": 3})
    with pytest.raises(
        ActionOutcomeUnknown,
        match=r"promote \{\"version\":3\} for incident 'inc-1' started at 2023-11-14T22:13:20Z "
        r"\(owner 'test-worker:\w+'\) and never recorded an outcome \(state 'running'\); it may "
        rf"have taken effect and is not safe to repeat\. .* flywheel actions forget {key}$",
    ):
        ledger.run_once("inc-1", "promote", {"version": 3}, fn)
    assert fn.calls == 0

    assert ledger.run_once("inc-1", "promote", {"version": 3}, fn, retry_safe=True) == {"calls": 1}
    rec = ledger.get("inc-1", "promote", {"version": 3})
    assert rec is not None and (rec.state, rec.attempts) == (ActionState.DONE, 2)


def test_unexpected_error_marks_outcome_unknown(ledger: ActionLedger) -> None:
    with pytest.raises(RuntimeError, match="connection reset"):
        ledger.run_once("inc-1", "rollback", {"to": None},
                        Counter(error=RuntimeError("connection reset")))
    rec = ledger.get("inc-1", "rollback", {"to": None})
    assert rec is not None
    assert (rec.state, rec.error) == (ActionState.UNKNOWN, "RuntimeError: connection reset")
    with pytest.raises(ActionOutcomeUnknown, match="state 'unknown'"):
        ledger.run_once("inc-1", "rollback", {"to": None}, Counter())


def test_a_late_owner_cannot_overwrite_the_run_that_took_over(
    ledger: ActionLedger, clock
) -> None:
    inner: dict[str, object] = {}

    def slow() -> dict[str, str]:
        # While this run is "stuck", its lease expires and a retry-safe run takes over.
        clock.advance(400)
        inner["result"] = ledger.run_once("inc-1", "retire", {"version": 1},
                                          Counter({"by": "second"}), retry_safe=True)
        return {"by": "first"}

    first = ledger.run_once("inc-1", "retire", {"version": 1}, slow, retry_safe=True)
    assert first == {"by": "first"} and inner["result"] == {"by": "second"}
    rec = ledger.get("inc-1", "retire", {"version": 1})
    assert rec is not None and rec.result == {"by": "second"}


def test_forget_clears_a_record_with_audit(ledger: ActionLedger, audit) -> None:
    fn = Counter()
    ledger.run_once("inc-1", "promote", {"version": 3}, fn)
    key = action_key("inc-1", "promote", {"version": 3})
    assert ledger.forget(key, actor="human:alice", reason="checked by hand") is True
    assert ledger.forget(key, actor="human:alice", reason="again") is False
    [entry] = audit.read(action_prefix="action.")
    assert (entry.action, entry.actor, entry.details["key"]) == (
        "action.forget", "human:alice", key)
    ledger.run_once("inc-1", "promote", {"version": 3}, fn)
    assert fn.calls == 2


# --- limits ----------------------------------------------------------------------------------
def test_one_lease_per_service_token_checked_and_clock_expired(limits: Limits, clock) -> None:
    lease = limits.acquire("elec", holder="promote (incident 'inc-1')", lease_s=60)
    with pytest.raises(
        ServiceBusy,
        match=r"^service 'elec' is busy: promote \(incident 'inc-1'\) holds its deploy lease "
        r"until 2023-11-14T22:14:20Z; one action runs at a time per service\. Retry after it "
        r"finishes$",
    ):
        limits.acquire("elec", holder="rollback", lease_s=60)
    other = limits.acquire("gas", holder="rollback", lease_s=60)  # other services are free
    training = limits.acquire("elec", holder="retrain", lease_s=600, lane="train")
    assert limits.release(lease) and limits.release(other) and limits.release(training)

    stale = limits.acquire("elec", holder="crashed", lease_s=60)
    clock.advance(61)
    fresh = limits.acquire("elec", holder="next", lease_s=60)  # the expired lease is taken over
    assert limits.release(stale) is False  # and its late owner cannot free the new one
    with pytest.raises(ServiceBusy, match="next holds its deploy lease"):
        limits.acquire("elec", holder="third", lease_s=60)
    assert limits.release(fresh) is True


def test_cooldown_per_service_and_kind(limits: Limits, clock) -> None:
    policy = Policy(cooldown_s=600)
    limits.record("elec", "canary")
    clock.advance(599)
    with pytest.raises(
        LimitExceeded,
        match=r"^canary on 'elec' refused: the last canary ran at 2023-11-14T22:13:20Z and the "
        r"cooldown \(policy cooldown_s=600\) runs until 2023-11-14T22:23:20Z\. Wait, or "
        "escalate to a human if it cannot wait$",
    ) as info:
        limits.check("elec", "canary", policy)
    assert (info.value.limit, info.value.retry_at) == ("cooldown", 1_700_000_600.0)
    limits.check("elec", "promote", policy)  # another kind
    limits.check("gas", "canary", policy)  # another service
    assert limits.cooldown_until("elec", "canary", policy) == 1_700_000_600.0
    assert limits.cooldown_until("elec", "promote", policy) is None
    clock.advance(1)
    limits.check("elec", "canary", policy)
    assert limits.cooldown_until("elec", "canary", policy) is None


def test_rollbacks_skip_the_cooldown_but_are_capped_per_hour(limits: Limits, clock) -> None:
    policy = Policy(max_rollbacks_per_hour=3, cooldown_s=600)
    for _ in range(3):
        limits.check("elec", "rollback", policy)
        limits.record("elec", "rollback")
        clock.advance(60)
    assert limits.rollbacks_in_last_hour("elec") == 3
    with pytest.raises(
        LimitExceeded,
        match=r"^rollback on 'elec' refused: 3 rollbacks in the last hour reach the cap \(policy "
        r"max_rollbacks_per_hour=3\)\. Escalate to a human",
    ) as info:
        limits.check("elec", "rollback", policy)
    assert info.value.retry_at == 1_700_000_000.0 + 3600
    clock.advance(3600 - 180)  # the first rollback leaves the window
    limits.check("elec", "rollback", policy)
    assert limits.rollbacks_in_last_hour("elec") == 2


def test_consecutive_failures_escalate_and_block_retrain(limits: Limits) -> None:
    policy = Policy(max_retrain_failures=2)
    assert limits.record_failure("elec", "retrain") == 1
    assert not limits.should_escalate("elec", "retrain", policy)
    limits.check("elec", "retrain", policy)
    assert limits.record_failure("elec", "retrain") == 2
    assert limits.should_escalate("elec", "retrain", policy)
    with pytest.raises(
        LimitExceeded,
        match=r"retrain on 'elec' refused: it failed 2 times in a row \(policy "
        r"max_retrain_failures=2\)\. Escalate to a human",
    ) as info:
        limits.check("elec", "retrain", policy)
    assert info.value.retry_at is None
    limits.reset_failures("elec", "retrain")
    assert limits.failures("elec", "retrain") == 0
    limits.check("elec", "retrain", policy)
