"""Retention on a real Redis: closed incidents lose checkpoints, then approvals, records and
idempotency records after their windows; open incidents keep everything; the audit stream is
trimmed only up to what is archived on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict

import pytest
import redis
from langgraph.graph import END, START, StateGraph

from fleet.actions import ActionContext, ActionSpec
from fleet.actions.ledger import ActionLedger, action_key
from fleet.approvals import ApprovalStore
from fleet.audit import Audit
from fleet.incidents import IncidentStore, Signal
from fleet.incidents.lifecycle import Status
from fleet.retention import Pruner, Retention
from fleet.schema import Policy
from fleet.store import connect
from graphs.checkpoint_prune import SaverThreads
from graphs.checkpointer import RedisSaver


class _S(TypedDict):
    n: int


class _World:
    """Stores over one prefix, and a tiny real LangGraph graph checkpointing into Redis."""

    def __init__(self, r: redis.Redis, redis_url: str, keys, clock):
        self.r, self.keys, self.clock = r, keys, clock
        self.audit = Audit(r, keys, clock)
        self.incidents = IncidentStore(r, keys, clock, self.audit, cooldown_s=0.0)
        self.approvals = ApprovalStore(r, keys, clock, self.audit)
        self.ledger = ActionLedger(r, keys, clock, audit=self.audit)
        self.saver = RedisSaver(connect(redis_url, decode=False), prefix=keys.checkpoint_prefix())
        g = StateGraph(_S)
        g.add_node("a", lambda s: {"n": s["n"] + 1})
        g.add_node("b", lambda s: {"n": s["n"] * 2})
        g.add_edge(START, "a")
        g.add_edge("a", "b")
        g.add_edge("b", END)
        self.graph = g.compile(checkpointer=self.saver)
        self.threads = SaverThreads(self.saver)

    def incident(self, service: str) -> tuple[str, str, str]:
        """Open an incident with a thread, a decided approval and an idempotency record."""
        inc = self.incidents.observe(Signal(service=service, kind="covariate_drift",
                                            severity="warning", detector="test",
                                            at=self.clock.now()))
        assert inc is not None
        self.graph.invoke({"n": 1}, {"configurable": {"thread_id": inc.id}})
        spec = ActionSpec(name="promote", service=service, args={"version": 2})
        ctx = ActionContext(incident=inc.id, actor="agent:deployment", reason="canary passed",
                            thread_id=inc.id, step="tool-1")
        req = self.approvals.request(spec, ctx, Policy(approvers=("alice",)))
        self.approvals.decide(req.id, approve=True, by="alice", reason="",
                              digest=req.action_digest)
        self.ledger.run_once(inc.id, "promote", {"version": 2}, lambda: {"ok": True})
        return inc.id, req.id, self.keys.action(action_key(inc.id, "promote", {"version": 2}))

    def pruner(self, **kw) -> Pruner:
        return Pruner(self.r, self.keys, Retention(**kw), checkpoints=self.threads,
                      clock=self.clock)

    def all_keys(self) -> set[str]:
        return set(self.r.scan_iter(match=f"{self.keys.prefix}:*", count=1000))


@pytest.fixture()
def world(r, redis_url, keys, clock) -> _World:
    return _World(r, redis_url, keys, clock)


WINDOWS = dict(checkpoint_grace_s=100.0, approval_keep_s=500.0, action_keep_s=500.0,
               incident_keep_s=1_000.0, audit_keep_s=1e9, audit_archive_dir=None)


def test_a_closed_incident_is_pruned_in_stages_and_an_open_one_is_never_touched(world, clock):
    open_id, _, _ = world.incident("keep")
    world.incidents.transition(open_id, Status.ESCALATED, actor="test", reason="to a person")
    before_open = world.all_keys()  # every key the escalated incident (and the fleet) has now
    closed_id, apr, act = world.incident("gone")
    assert world.threads.key_counts()[closed_id] > 0
    world.incidents.transition(closed_id, Status.RESOLVED, actor="test", reason="fixed")
    pruner = world.pruner(**WINDOWS)

    clock.advance(50)
    rep = pruner.run()
    assert rep.checkpoint_threads == [] and rep.incidents == [] and rep.approvals == 0
    assert closed_id in world.threads.key_counts()

    clock.advance(100)  # past the checkpoint grace only
    rep = pruner.run()
    assert rep.checkpoint_threads == [closed_id] and rep.checkpoint_keys > 0
    assert closed_id not in world.threads.key_counts()
    assert world.r.exists(world.keys.approval(apr)) and world.r.exists(act)
    listed = [i.id for i in world.incidents.recent(10)]
    assert closed_id in listed, "inside its window the closed incident is still listed"

    clock.advance(400)  # past the approval and idempotency windows
    rep = pruner.run()
    assert rep.approvals == 1 and rep.approval_pointers == 2 and rep.actions == 1
    assert not world.r.exists(world.keys.approval(apr)) and not world.r.exists(act)
    assert not [k for k in world.all_keys() if f"approval:open:{closed_id}:" in k
                or f"approval:step:{closed_id}:" in k]
    assert world.incidents.get(closed_id).status is Status.RESOLVED

    clock.advance(500)  # past the incident window
    rep = pruner.run()
    assert rep.incidents == [closed_id]
    assert closed_id not in [i.id for i in world.incidents.recent(10)]
    assert not [k for k in world.all_keys() if closed_id in k]
    assert before_open <= world.all_keys(), "a key of the open incident was removed"
    assert open_id in world.threads.key_counts()
    assert [i.id for i in world.incidents.open_incidents()] == [open_id]


def test_dry_run_counts_but_removes_nothing(world, clock):
    closed_id, _, _ = world.incident("gone")
    world.incidents.transition(closed_id, Status.FAILED, actor="test", reason="gave up")
    clock.advance(2_000)
    before = world.all_keys()
    rep = world.pruner(**WINDOWS).run(dry_run=True)
    assert rep.dry_run and rep.incidents == [closed_id] and rep.checkpoint_threads == [closed_id]
    assert rep.approvals == 1 and rep.actions == 1
    assert world.all_keys() == before


def test_a_pending_approval_of_a_closed_incident_is_kept(world, clock):
    inc = world.incidents.observe(Signal(service="svc", kind="covariate_drift",
                                         severity="warning", detector="test", at=clock.now()))
    spec = ActionSpec(name="promote", service="svc", args={"version": 2})
    ctx = ActionContext(incident=inc.id, actor="agent:deployment", reason="r", thread_id=inc.id)
    req = world.approvals.request(spec, ctx, Policy(approvers=("alice",), approval_ttl_s=1e6))
    world.incidents.transition(inc.id, Status.RESOLVED, actor="test", reason="fixed")
    clock.advance(600)
    rep = world.pruner(**WINDOWS).run()
    assert rep.approvals == 0 and world.approvals.get(req.id) == req


def _fill_audit(world, n: int) -> list[str]:
    ids = []
    for i in range(n):
        ids.append(world.audit.record("test", "test.event", reason=f"event {i}", n=i))
        world.clock.advance(10)
    return ids


def _archived_ids(directory: Path) -> list[str]:
    return [json.loads(line)["id"] for f in sorted(directory.glob("audit-*.jsonl"))
            for line in f.read_text().splitlines()]


def test_old_audit_entries_are_archived_then_trimmed(world, clock, tmp_path):
    ids = _fill_audit(world, 30)  # ts = t0, t0+10, ..., t0+290; now = t0+300
    archive = tmp_path / "audit"
    rep = world.pruner(audit_keep_s=150.0, audit_archive_dir=archive).run()
    # entries older than now-150 = t0+150: the first 15
    assert rep.audit_archived == 15 and rep.audit_trimmed == 15 and not rep.errors
    assert _archived_ids(archive) == ids[:15]
    left = [sid for sid, _ in world.r.xrange(world.keys.audit)]
    assert left == ids[15:]
    assert world.r.get(world.keys.audit_archived) == ids[14]
    line = json.loads((archive / rep.audit_files[0].split("/")[-1]).read_text().splitlines()[0])
    assert line["action"] == "test.event" and json.loads(line["details"]) == {"n": 0}
    clock.advance(100)
    rep = world.pruner(audit_keep_s=150.0, audit_archive_dir=archive).run()
    assert rep.audit_archived == 10 and _archived_ids(archive) == ids[:25]
    assert [sid for sid, _ in world.r.xrange(world.keys.audit)] == ids[25:]


def test_a_failed_archive_write_trims_nothing(world, clock, tmp_path):
    ids = _fill_audit(world, 20)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the archive directory should be")
    rep = world.pruner(audit_keep_s=50.0, audit_archive_dir=blocker / "audit").run()
    assert rep.audit_archived == 0 and rep.audit_trimmed == 0
    assert rep.errors and "nothing trimmed" in rep.errors[0]
    assert [sid for sid, _ in world.r.xrange(world.keys.audit)] == ids
    assert world.r.get(world.keys.audit_archived) is None


def test_without_an_archive_the_audit_is_trimmed_only_when_allowed(world, clock):
    ids = _fill_audit(world, 20)
    rep = world.pruner(audit_keep_s=50.0, audit_archive_dir=None).run()
    assert rep.audit_trimmed == 0
    assert [sid for sid, _ in world.r.xrange(world.keys.audit)] == ids
    rep = world.pruner(audit_keep_s=50.0, audit_archive_dir=None,
                       audit_trim_unarchived=True).run()
    assert rep.audit_trimmed == 15
    assert [sid for sid, _ in world.r.xrange(world.keys.audit)] == ids[15:]


def test_retention_windows_must_not_be_negative():
    with pytest.raises(ValueError, match="incident_keep_s"):
        Retention(incident_keep_s=-1)


def test_the_pass_is_due_once_per_interval_across_processes(world):
    first = world.pruner(interval_s=3_600.0)
    assert first.due(10_000.0)
    first.run(now_real=10_000.0)
    other = world.pruner(interval_s=3_600.0)  # another worker sees the same record
    assert not other.due(10_000.0 + 3_599.0)
    assert other.due(10_000.0 + 3_600.0)
    assert not first.run(dry_run=True).errors


def test_what_a_pass_that_died_half_way_left_is_cleaned_by_the_next(world, clock):
    closed_id, _, _ = world.incident("gone")
    world.incidents.transition(closed_id, Status.RESOLVED, actor="test", reason="fixed")
    clock.advance(150)
    # As if a removal died after deleting the record: the fleet index entry and thread remain.
    world.r.delete(world.keys.incident(closed_id))
    rep = world.pruner(**WINDOWS).run()
    assert rep.checkpoint_threads == [closed_id]
    assert world.r.zscore(world.keys.incidents_all, closed_id) is None
    assert closed_id not in world.threads.key_counts()
