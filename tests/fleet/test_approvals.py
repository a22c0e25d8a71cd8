"""Approval requests: immutable, idempotent per incident and action, digest-bound, first decision
wins, only listed approvers decide, rejections carry a reason, expiry auto-denies with audit."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from fleet.actions import ActionContext, ActionSpec
from fleet.approvals import EXPIRED_BY, ApprovalDecision, ApprovalStore
from fleet.audit import Audit
from fleet.errors import (
    AlreadyDecided,
    InvalidInput,
    PolicyViolation,
    UnknownApproval,
    WriteConflict,
)
from fleet.schema import Policy

POLICY = Policy(approvers=("alice", "bob"), approval_ttl_s=900.0)
PROMOTE = ActionSpec(name="promote", service="elec", args={"version": 3})
CTX = ActionContext(
    incident="inc-1", actor="agent:deployment", reason="canary passed", thread_id="inc-1"
)


def _ids(prefix: str = "apr-") -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


@pytest.fixture()
def audit(r, keys, clock) -> Audit:
    return Audit(r, keys, clock)


@pytest.fixture()
def store(r, keys, clock, audit) -> ApprovalStore:
    return ApprovalStore(r, keys, clock, audit, new_id=_ids())


def test_request_records_everything_and_is_audited(store: ApprovalStore, audit, clock) -> None:
    req = store.request(PROMOTE, CTX, POLICY, risk="high", evidence={"holdout_accuracy": 0.91})

    assert req.id == "apr-1"
    assert (req.incident, req.thread_id, req.requested_by) == ("inc-1", "inc-1", "agent:deployment")
    assert req.action == PROMOTE and req.action_digest == PROMOTE.digest
    assert (req.risk, req.rationale, req.evidence) == ("high", "canary passed",
                                                       {"holdout_accuracy": 0.91})
    assert req.created_at == clock.now() and req.expires_at == clock.now() + 900.0
    assert req.approvers == ("alice", "bob")
    assert store.get("apr-1") == req
    assert store.pending() == [req]
    assert store.decision("apr-1") is None
    [entry] = audit.read(action_prefix="approval.")
    assert (entry.action, entry.actor, entry.service, entry.reason) == (
        "approval.request", "agent:deployment", "elec", "canary passed")
    assert entry.details["approval_id"] == "apr-1"
    assert entry.details["digest"] == PROMOTE.digest


def test_digest_is_sha256_of_canonical_json() -> None:
    """Key order and whitespace must not change the digest; any argument change must."""
    import hashlib

    expected = hashlib.sha256(
        b'{"args":{"version":3},"name":"promote","service":"elec"}'
    ).hexdigest()
    assert PROMOTE.digest == expected
    assert ActionSpec(name="promote", service="elec", args={"version": 4}).digest != expected


def test_request_is_idempotent_per_incident_and_action(
    store: ApprovalStore, audit, r, keys
) -> None:
    first = store.request(PROMOTE, CTX, POLICY)
    again = store.request(PROMOTE, CTX.model_copy(update={"reason": "asked twice"}), POLICY)
    assert again == first
    assert [e.action for e in audit.read()] == ["approval.request"]
    assert r.zcard(keys.approvals_pending) == 1

    other_incident = store.request(PROMOTE, CTX.model_copy(update={"incident": "inc-2"}), POLICY)
    other_action = store.request(
        ActionSpec(name="promote", service="elec", args={"version": 4}), CTX, POLICY
    )
    assert (other_incident.id, other_action.id) == ("apr-2", "apr-3")

    store.decide("apr-1", approve=False, by="alice", reason="not now", digest=PROMOTE.digest)
    # A resumed tool asks again: it gets the decided request back (the rejection stands), so a
    # person is never asked twice for the same action in the same incident.
    after_decision = store.request(PROMOTE, CTX, POLICY)
    assert after_decision.id == "apr-1"
    assert store.decision("apr-1").approved is False
    assert r.zcard(keys.approvals_pending) == 2  # apr-2 and apr-3 only


def test_request_is_immutable_once_created(r, keys, clock, audit) -> None:
    """A colliding id must never overwrite a stored request (create-only in Lua)."""
    store = ApprovalStore(r, keys, clock, audit, new_id=lambda: "apr-same")
    req = store.request(PROMOTE, CTX, POLICY)
    with pytest.raises(ValidationError, match="frozen"):
        req.rationale = "changed"  # type: ignore[misc]

    retire = ActionSpec(name="retire", service="elec", args={"version": 1})
    with pytest.raises(WriteConflict, match="could not create an approval request for retire"):
        store.request(retire, CTX, POLICY)
    assert store.get("apr-same") == req

    store.decide("apr-same", approve=True, by="bob", reason="", digest=PROMOTE.digest)
    assert store.get("apr-same") == req  # the decision is stored beside, never over, it


def test_first_decision_wins_under_a_race(r, keys, clock, audit) -> None:
    approvers = tuple(f"human{i}" for i in range(8))
    policy = Policy(approvers=approvers)
    store = ApprovalStore(r, keys, clock, audit, new_id=_ids())
    req = store.request(PROMOTE, CTX, policy)
    barrier = threading.Barrier(len(approvers))
    won: list[ApprovalDecision] = []
    lost: list[AlreadyDecided] = []

    def decide(i: int) -> None:
        barrier.wait()
        try:
            won.append(store.decide(
                req.id, approve=i % 2 == 0, by=approvers[i], reason=f"from {i}",
                digest=req.action_digest,
            ))
        except AlreadyDecided as exc:
            lost.append(exc)

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(len(approvers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(won) == 1 and len(lost) == len(approvers) - 1
    assert store.decision(req.id) == won[0]
    assert all(exc.decision == won[0] for exc in lost)
    decided = [e for e in audit.read() if e.action in ("approval.approve", "approval.reject")]
    assert len(decided) == 1 and decided[0].actor == won[0].by
    assert store.pending() == []


def test_second_decision_is_refused_and_names_the_first(store: ApprovalStore, clock) -> None:
    req = store.request(PROMOTE, CTX, POLICY)
    store.decide(req.id, approve=True, by="alice", reason="looks good", digest=req.action_digest)
    with pytest.raises(
        AlreadyDecided,
        match=r"approval 'apr-1' was already approved by 'alice' at 2023-11-14T22:13:20Z "
        r"\(looks good\); the first decision is final",
    ):
        store.decide(req.id, approve=False, by="bob", reason="wait", digest=req.action_digest)


def test_only_listed_approvers_may_decide(store: ApprovalStore) -> None:
    req = store.request(PROMOTE, CTX, POLICY)
    with pytest.raises(
        PolicyViolation,
        match=r"^'mallory' may not decide approval 'apr-1' \(promote 'elec' version=3\); "
        r"allowed approvers: 'alice', 'bob'$",
    ):
        store.decide(req.id, approve=True, by="mallory", reason="", digest=req.action_digest)
    assert store.decision(req.id) is None


def test_a_decision_binds_to_the_digest(store: ApprovalStore) -> None:
    req = store.request(PROMOTE, CTX, POLICY)
    other = ActionSpec(name="promote", service="elec", args={"version": 4}).digest
    with pytest.raises(
        PolicyViolation,
        match=rf"quotes action digest '{other[:12]}' but the request is for promote 'elec' "
        r"version=3 .*; a decision cannot approve a different action",
    ):
        store.decide(req.id, approve=True, by="alice", reason="", digest=other)
    assert store.decision(req.id) is None


@pytest.mark.parametrize("reason", ["", "   "])
def test_reject_needs_a_reason(store: ApprovalStore, reason: str) -> None:
    req = store.request(PROMOTE, CTX, POLICY)
    with pytest.raises(
        InvalidInput,
        match="rejecting approval 'apr-1' needs a reason; it is sent back to the agent",
    ):
        store.decide(req.id, approve=False, by="alice", reason=reason, digest=req.action_digest)
    assert store.decision(req.id) is None


def test_expiry_auto_denies_audits_and_refuses_late_decisions(
    store: ApprovalStore, audit, clock
) -> None:
    req = store.request(PROMOTE, CTX, POLICY)
    clock.advance(899.0)
    assert store.expire_overdue() == []
    clock.advance(1.0)

    assert store.pending() == []  # overdue requests are no longer offered to people
    assert store.expire_overdue() == [req]
    assert store.expire_overdue() == []  # expired once
    assert store.decision(req.id) == ApprovalDecision(
        approval_id=req.id, approved=False, by=EXPIRED_BY, reason="expired",
        decided_at=req.expires_at, action_digest=req.action_digest,
    )
    entry = audit.read(action_prefix="approval.")[-1]
    assert (entry.action, entry.actor, entry.reason) == ("approval.expire", EXPIRED_BY, "expired")
    assert entry.details["incident"] == "inc-1"
    with pytest.raises(
        PolicyViolation,
        match=r"approval 'apr-1' \(promote 'elec' version=3\) expired at 2023-11-14T22:28:20Z "
        "and can no longer be decided",
    ):
        store.decide(req.id, approve=True, by="alice", reason="", digest=req.action_digest)


def test_asking_again_after_expiry_expires_the_old_request_first(
    store: ApprovalStore, clock
) -> None:
    old = store.request(PROMOTE, CTX, POLICY)
    clock.advance(901.0)
    new = store.request(PROMOTE, CTX, POLICY)
    assert new.id != old.id
    assert store.decision(old.id).by == EXPIRED_BY  # type: ignore[union-attr]
    assert store.pending() == [new]


def test_the_same_step_asking_after_expiry_gets_its_expired_request_back(
    store: ApprovalStore, clock
) -> None:
    """A tool call re-run when its thread resumes after an expiry sees the denial.

    Regression: the re-run asked again, got a fresh request nobody waited on, and the thread
    never learned its approval had expired (issue 5: overdue approvals expire and escalate).
    """
    step = CTX.model_copy(update={"step": "call-1"})
    old = store.request(PROMOTE, step, POLICY)
    clock.advance(901.0)
    assert store.expire_overdue() == [old]

    assert store.request(PROMOTE, step, POLICY) == old
    assert store.pending() == []
    fresh = store.request(PROMOTE, CTX.model_copy(update={"step": "call-2"}), POLICY)
    assert fresh.id != old.id and store.pending() == [fresh]  # a new call asks afresh


def test_pending_is_sorted_by_expiry(store: ApprovalStore, clock) -> None:
    a = store.request(PROMOTE, CTX, Policy(approval_ttl_s=600))
    ctx2 = CTX.model_copy(update={"incident": "inc-2"})
    b = store.request(PROMOTE, ctx2, Policy(approval_ttl_s=60))
    assert [p.id for p in store.pending()] == [b.id, a.id]


def test_unknown_approval_and_oversized_evidence_are_clear(store: ApprovalStore) -> None:
    with pytest.raises(UnknownApproval, match=r"unknown approval 'apr-9'\. Run: flywheel"):
        store.decide("apr-9", approve=True, by="alice", reason="", digest="x")
    with pytest.raises(InvalidInput, match="evidence 'log' is 500 characters; at most 200"):
        store.request(PROMOTE, CTX, POLICY, evidence={"log": "x" * 500})


def test_check_authorises_only_the_approved_action_in_its_incident(
    store: ApprovalStore, clock
) -> None:
    req = store.request(PROMOTE, CTX, POLICY)
    with pytest.raises(PolicyViolation, match="is still pending"):
        store.check(req.id, PROMOTE, incident="inc-1")
    store.decide(req.id, approve=True, by="alice", reason="", digest=req.action_digest)

    assert store.check(req.id, PROMOTE, incident="inc-1").by == "alice"
    v4 = ActionSpec(name="promote", service="elec", args={"version": 4})
    with pytest.raises(PolicyViolation, match="it cannot authorise a different action"):
        store.check(req.id, v4, incident="inc-1")
    with pytest.raises(PolicyViolation, match="approvals do not carry over between incidents"):
        store.check(req.id, PROMOTE, incident="inc-2")
    clock.advance(901.0)
    with pytest.raises(PolicyViolation, match="Request a fresh approval"):
        store.check(req.id, PROMOTE, incident="inc-1")
