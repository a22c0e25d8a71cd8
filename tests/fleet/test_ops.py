"""The guarded executor: nothing needing approval runs without a valid one, limits refuse with a
message to escalate, repeats return the first result, quarantined data is never trained on."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fleet.actions import ActionContext
from fleet.errors import (
    ActionOutcomeUnknown,
    ApprovalRequired,
    InvalidInput,
    LimitExceeded,
    PolicyViolation,
    ServiceBusy,
)
from fleet.operations import DeployResult, Operations
from fleet.registry import ArtifactStore, Mode, Registry, VersionStatus
from fleet.schema import FeatureSchema, Policy
from fleet.telemetry import LabelEvent, PredictionEvent, TelemetryWriter
from fleet.trainer import Trainer

SCHEMA = FeatureSchema.numeric(["a", "b"])
CTX = ActionContext(incident="inc-1", actor="agent:deployment", reason="canary passed")


def _model(seed: int) -> LogisticRegression:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(100, 2))
    return LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))


@pytest.fixture()
def registry(r, keys, clock, artifacts_dir: Path) -> Registry:
    reg = Registry(r, keys, ArtifactStore(artifacts_dir), clock=clock)
    reg.register_service("elec", task="classification", schema=SCHEMA, policy=Policy())
    for seed in (1, 2, 3):
        reg.add_version("elec", _model(seed), created_by="test", metrics={"holdout_accuracy": 0.9})
    reg.promote("elec", 1, actor="test", reason="initial")
    return reg


@pytest.fixture()
def trainer(registry: Registry) -> Iterator[Trainer]:
    # A thread pool keeps the test fast; the trainer's process pool is covered in test_trainer.
    with ThreadPoolExecutor(1) as ex:
        yield Trainer(registry, executor=ex)


@pytest.fixture()
def ops(registry: Registry, trainer: Trainer) -> Operations:
    return Operations.build(registry, trainer)


def _state(registry: Registry) -> tuple[object, ...]:
    """Everything a write could change in the registry."""
    return registry.service("elec"), tuple(v.status for v in registry.versions("elec"))


def _approve(ops: Operations, req_id: str, by: str = "oncall") -> None:
    req = ops.approvals.get(req_id)
    ops.approvals.decide(req_id, approve=True, by=by, reason="ok", digest=req.action_digest)


# --- approvals -------------------------------------------------------------------------------
def test_promote_without_approval_asks_and_changes_nothing(ops: Operations, registry) -> None:
    before = _state(registry)
    with pytest.raises(
        ApprovalRequired,
        match=r"^promote 'elec' version=2 needs a human decision \(the service's policy requires "
        r"approval for it\)\. Approval 'apr-\w{12}' is pending until 2023-11-14T22:28:20Z, for "
        r"one of 'oncall' to decide\. Wait for the decision, then call again with "
        r"approval_id='apr-\w{12}'$",
    ) as info:
        ops.promote("elec", 2, CTX)
    req = info.value.request
    assert (req.action.name, req.action.args, req.incident, req.risk) == (
        "promote", {"version": 2}, "inc-1", "high")
    assert req.evidence["holdout_accuracy"] == 0.9 and req.evidence["champion"] == 1
    assert _state(registry) == before
    assert ops.ledger.get("inc-1", "promote", {"version": 2}) is None
    assert [e.action for e in ops.audit.read(service="elec")][-1] == "approval.request"

    with pytest.raises(ApprovalRequired) as again:  # asked twice: the same request
        ops.promote("elec", 2, CTX)
    assert again.value.request == req
    assert ops.approvals.pending() == [req]


def test_promote_with_approval_runs_once_and_replays(ops: Operations, registry) -> None:
    with pytest.raises(ApprovalRequired) as info:
        ops.promote("elec", 2, CTX)
    _approve(ops, info.value.request.id)

    res = ops.promote("elec", 2, CTX, approval_id=info.value.request.id)
    assert res == DeployResult(
        action="promote", service="elec", version=2, champion=2, challenger=None, mode="full",
        split=0.0, generation=2, replayed=False,
    )
    gen = registry.generation("elec")
    again = ops.promote("elec", 2, CTX, approval_id=info.value.request.id)
    assert again == DeployResult(**{**res.stored(), "replayed": True})
    assert registry.generation("elec") == gen  # the repeat changed nothing
    outcomes = [e.details["outcome"] for e in ops.audit.read(action_prefix="ops.promote")]
    assert outcomes == ["done", "replayed"]
    entry = ops.audit.read(action_prefix="ops.promote")[0]
    assert (entry.actor, entry.reason, entry.details["incident"]) == (
        "agent:deployment", "canary passed", "inc-1")


def test_approval_for_a_different_version_is_refused(ops: Operations, registry) -> None:
    with pytest.raises(ApprovalRequired) as info:
        ops.promote("elec", 3, CTX)
    approval = info.value.request.id
    _approve(ops, approval)
    before = _state(registry)
    with pytest.raises(
        PolicyViolation,
        match=rf"^approval '{approval}' is for promote 'elec' version=3, not promote 'elec' "
        r"version=2; it cannot authorise a different action",
    ):
        ops.promote("elec", 2, CTX, approval_id=approval)
    assert _state(registry) == before
    [refused] = ops.audit.read(action_prefix="ops.promote")
    assert refused.details["outcome"] == "refused"


@pytest.mark.parametrize(
    ("decide", "message"),
    [
        ("reject", r"was rejected by 'oncall': canary too short\. Do not retry it"),
        ("pending", r"is still pending \(expires 2023-11-14T22:28:20Z\); wait for a decision"),
        ("expire", r"was denied by 'system:expiry': expired"),
        ("unknown", r"^approval 'apr-nope' does not exist"),
    ],
)
def test_promote_refuses_every_approval_that_is_not_a_yes(
    ops: Operations, registry, clock, decide: str, message: str
) -> None:
    with pytest.raises(ApprovalRequired) as info:
        ops.promote("elec", 2, CTX)
    req = info.value.request
    if decide == "reject":
        ops.approvals.decide(req.id, approve=False, by="oncall", reason="canary too short",
                             digest=req.action_digest)
    elif decide == "expire":
        clock.advance(900)
        ops.approvals.expire_overdue()
    before = _state(registry)
    with pytest.raises(PolicyViolation, match=message):
        ops.promote("elec", 2, CTX, approval_id="apr-nope" if decide == "unknown" else req.id)
    assert _state(registry) == before


def test_retire_needs_approval_but_an_impossible_retire_asks_nobody(ops: Operations) -> None:
    with pytest.raises(InvalidInput, match="version 1 of 'elec' is serving traffic"):
        ops.retire("elec", 1, CTX)
    assert ops.approvals.pending() == []
    with pytest.raises(ApprovalRequired, match=r"^retire 'elec' version=3 needs a human"):
        ops.retire("elec", 3, CTX)


# --- canary and rollback ---------------------------------------------------------------------
def test_canary_above_max_pct_needs_approval(ops: Operations, registry) -> None:
    before = _state(registry)
    with pytest.raises(
        ApprovalRequired,
        match=r"^canary 'elec' percent=25\.0 version=2 needs a human decision \(percent 25 is "
        r"above the policy's max_canary_pct 10\)",
    ) as info:
        ops.canary("elec", 2, 25, CTX)
    assert _state(registry) == before
    with pytest.raises(InvalidInput, match="strictly between 0 and 100, got 150"):
        ops.canary("elec", 2, 150, CTX)

    _approve(ops, info.value.request.id)
    res = ops.canary("elec", 2, 25, CTX, approval_id=info.value.request.id)
    assert (res.challenger, res.mode, res.split) == (2, "canary", 0.25)


def test_canary_within_max_pct_needs_no_approval(ops: Operations, registry) -> None:
    res = ops.canary("elec", 2, 10, CTX)
    assert (res.champion, res.challenger, res.mode, res.split) == (1, 2, "canary", 0.1)
    assert registry.version("elec", 2).status is VersionStatus.CANARY


def test_rollback_needs_no_approval_and_the_fourth_in_an_hour_is_refused(
    ops: Operations, registry, clock
) -> None:
    for i in range(1, 4):
        ctx = CTX.model_copy(update={"incident": f"inc-{i}", "reason": "bad canary"})
        ops.canary("elec", 2, 5, ctx)
        res = ops.rollback("elec", ctx)
        assert (res.version, res.champion, res.challenger, res.mode) == (2, 1, None, "full")
        assert ops.rollback("elec", ctx).replayed  # a resumed rollback does not roll back again
        clock.advance(601)  # past the canary cooldown

    ctx = CTX.model_copy(update={"incident": "inc-4"})
    ops.canary("elec", 2, 5, ctx)
    with pytest.raises(
        LimitExceeded,
        match=r"^rollback on 'elec' refused: 3 rollbacks in the last hour reach the cap \(policy "
        r"max_rollbacks_per_hour=3\)\. Escalate to a human",
    ):
        ops.rollback("elec", ctx)
    s = registry.service("elec")
    assert (s.champion, s.challenger, s.mode) == (1, 2, Mode.CANARY)
    assert ops.audit.read(action_prefix="ops.rollback")[-1].details["outcome"] == "refused"


def test_rollback_restores_the_previous_champion(ops: Operations, registry) -> None:
    registry.promote("elec", 3, actor="test", reason="setup")
    res = ops.rollback("elec", CTX)
    assert (res.version, res.champion) == (1, 1)
    assert registry.version("elec", 3).status is VersionStatus.REJECTED
    with pytest.raises(InvalidInput, match="no challenger to drop and no previous champion"):
        ops.rollback("elec", CTX.model_copy(update={"incident": "inc-2"}))


def test_cooldown_refuses_the_same_kind_until_it_passes(ops: Operations, clock) -> None:
    ops.canary("elec", 2, 5, CTX)
    clock.advance(300)
    other = CTX.model_copy(update={"incident": "inc-2"})
    with pytest.raises(
        LimitExceeded,
        match=r"^canary on 'elec' refused: the last canary ran at 2023-11-14T22:13:20Z and the "
        r"cooldown \(policy cooldown_s=600\) runs until 2023-11-14T22:23:20Z",
    ):
        ops.canary("elec", 3, 5, other)
    assert ops.canary("elec", 2, 5, CTX).replayed  # a repeat is not a new action
    clock.advance(300)
    assert ops.canary("elec", 3, 5, other).challenger == 3


def test_one_action_at_a_time_per_service(ops: Operations, registry) -> None:
    lease = ops.limits.acquire("elec", holder="promote (incident 'inc-9')", lease_s=60)
    before = _state(registry)
    with pytest.raises(ServiceBusy, match=r"promote \(incident 'inc-9'\) holds its deploy lease"):
        ops.canary("elec", 2, 5, CTX)
    assert _state(registry) == before
    ops.limits.release(lease)
    assert ops.canary("elec", 2, 5, CTX).challenger == 2


# --- data and training -----------------------------------------------------------------------
def _write_traffic(r, keys, clock, n: int, change: int | None = None) -> list[str]:
    """``n`` labelled predictions (y = a > 0; from row ``change`` on, y = b > 0) for 'elec';
    returns their stream ids."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 2))
    y = np.where(np.arange(n) < (n if change is None else change), X[:, 0] > 0, X[:, 1] > 0)
    w = TelemetryWriter(r, keys, clock=clock)
    now = clock.now()
    w.write_predictions("elec", [
        PredictionEvent(now + i, f"req-{i}", 1, (float(a), float(b)), 0.0, 1.0)
        for i, (a, b) in enumerate(X)
    ])
    w.write_labels("elec", [LabelEvent(now + i, f"req-{i}", float(v)) for i, v in enumerate(y)])
    return [sid for sid, _ in r.xrange(keys.telemetry("elec"))]


def test_quarantined_ranges_are_never_trained_on(ops: Operations, registry, r, keys, clock) -> None:
    ids = _write_traffic(r, keys, clock, 600)
    q = ops.quarantine("elec", ids[100], ids[299], CTX)
    assert (q.first_id, q.last_id, q.ranges, q.replayed) == (ids[100], ids[299], 1, False)
    assert ops.quarantined("elec") == [(ids[100], ids[299])]
    assert ops.quarantine("elec", ids[100], ids[299], CTX).replayed

    window = ops.training_window("elec", 1000)
    assert len(window) == 400
    assert set(window.request_ids).isdisjoint({f"req-{i}" for i in range(100, 300)})

    res = ops.retrain("elec", CTX, rows=1000, seed=1)
    assert (res.version, res.parent, res.excluded_ranges, res.replayed) == (4, 1, 1, False)
    assert res.window == {"from": ids[0], "to": ids[599], "rows": 400, "skipped": 0}
    assert (res.train_rows, res.holdout_rows) == (320, 80)
    assert registry.version("elec", 4).training_window == res.window

    again = ops.retrain("elec", CTX, rows=1000, seed=1)
    assert again.replayed and again.version == 4
    assert [v.number for v in registry.versions("elec")] == [1, 2, 3, 4]  # not trained twice


def test_a_searched_retrain_leaves_out_the_old_concept_and_says_so(
    ops: Operations, registry, r, keys, clock
) -> None:
    """The rule changed 700 rows into a 1,500-row window. A retrain after a change of concept
    (``search``, as a performance incident asks) keeps only the newest third of the training
    rows, which hold the new rule alone, and records the rows it left out; a plain retrain
    trains on the whole window and scores worse on the same holdout."""
    ids = _write_traffic(r, keys, clock, 1500, change=700)
    plain = ops.retrain("elec", CTX.model_copy(update={"incident": "inc-a"}), rows=1500)
    clock.advance(601)  # past the retrain cooldown
    searched = ops.retrain("elec", CTX.model_copy(update={"incident": "inc-b"}), rows=1500,
                           search=True)
    assert plain.window == {"from": ids[0], "to": ids[-1], "rows": 1500, "skipped": 0}
    assert searched.window == {"from": ids[0], "to": ids[-1], "rows": 1500, "skipped": 800}
    assert (searched.train_rows, searched.holdout_rows) == (400, 300)
    assert searched.candidate > 0.95 and searched.candidate > plain.candidate + 0.05
    assert registry.version("elec", searched.version).training_window == searched.window
    step = ops.audit.read(action_prefix="ops.retrain")[-1]
    assert step.details["args"]["search"] is True


def test_quarantine_validates_stream_ids(ops: Operations) -> None:
    with pytest.raises(InvalidInput, match=r"first_id 'row-1' is not a telemetry stream id"):
        ops.quarantine("elec", "row-1", "5-0", CTX)
    with pytest.raises(InvalidInput, match=r"first_id '9-0' comes after last_id '5-0'"):
        ops.quarantine("elec", "9-0", "5-0", CTX)


def test_repeated_retrain_failures_escalate(ops: Operations, registry, r, keys, clock) -> None:
    _write_traffic(r, keys, clock, 20)  # too few labelled rows to train on
    for i in (1, 2):
        with pytest.raises(InvalidInput):
            ops.retrain("elec", CTX.model_copy(update={"incident": f"inc-{i}"}), rows=100)
    assert ops.should_escalate("elec", "retrain")
    failed = ops.audit.read(action_prefix="ops.retrain")[-1]
    assert (failed.details["outcome"], failed.details["escalate"]) == ("failed", True)
    with pytest.raises(LimitExceeded, match=r"it failed 2 times in a row"):
        ops.retrain("elec", CTX.model_copy(update={"incident": "inc-3"}), rows=100)


class Crash(BaseException):
    """Stands in for the process dying right after the registry changed."""


def test_a_promote_interrupted_by_a_crash_is_never_repeated(
    ops: Operations, registry, clock, monkeypatch
) -> None:
    with pytest.raises(ApprovalRequired) as info:
        ops.promote("elec", 2, CTX)
    approval = info.value.request.id
    _approve(ops, approval)
    real = registry.promote

    def promote_then_die(*args, **kwargs):
        real(*args, **kwargs)
        raise Crash

    monkeypatch.setattr(registry, "promote", promote_then_die)
    with pytest.raises(Crash):
        ops.promote("elec", 2, CTX, approval_id=approval)
    monkeypatch.setattr(registry, "promote", real)
    gen = registry.generation("elec")

    clock.advance(121)  # past the dead worker's lease
    with pytest.raises(ActionOutcomeUnknown, match=r"promote \{\"version\":2\} for incident "
                       r"'inc-1' .* never recorded an outcome"):
        ops.promote("elec", 2, CTX, approval_id=approval)
    assert registry.generation("elec") == gen
    assert registry.service("elec").champion == 2


def test_an_approval_authorises_one_write_only(ops, registry, clock) -> None:
    """Regression: an approved promote, rolled back, must not be promotable again on the same
    approval once the cooldown has passed; a resumed call still gets the stored result."""
    from fleet.errors import ApprovalRequired, PolicyViolation

    ctx = CTX.model_copy(update={"step": "call-1"})
    with pytest.raises(ApprovalRequired) as first:
        ops.promote("elec", 2, ctx)
    req = first.value.request
    ops.approvals.decide(req.id, approve=True, by="oncall", reason="ok", digest=req.action_digest)
    done = ops.promote("elec", 2, ctx, approval_id=req.id)
    assert done.champion == 2 and not done.replayed
    assert ops.promote("elec", 2, ctx, approval_id=req.id).replayed  # resume: stored result
    ops.rollback("elec", CTX.model_copy(update={"step": "rb"}))
    clock.advance(3_600)
    again = CTX.model_copy(update={"step": "call-2"})
    with pytest.raises(PolicyViolation, match="already used"):
        ops.promote("elec", 2, again, approval_id=req.id)
    with pytest.raises(ApprovalRequired) as fresh:
        ops.promote("elec", 2, again)
    assert fresh.value.request.id != req.id
    assert registry.service("elec").champion == 1
