"""Shared parts of the drills: a fleet of cheap incidents, a simulated human, and the invariants.

The incidents are real (opened through ``IncidentStore.observe``, handled by the real incident
graph with the runbook brain, written through the guarded ``Operations``) but cheap: no stream
replay and no training. Each service gets a tiny model registered twice (v1, v2) and one of these
set-ups:

- ``rollback_approval``: champion v2, previous v1, rollback needs approval; a latency regression
  ends in an approved (or rejected, or expired) rollback to v1;
- ``drop_canary``: v2 in a 5 % canary; an error-rate regression drops it, no approval;
- ``retrain_promote``: v1 alone, with labelled traffic on which it has gone wrong; a performance
  incident validates the window, trains v2 (in-process), starts its canary, waits for the canary
  traffic that :func:`serve_canaries` plays, and the promotion needs approval;
- ``watch_drift``: v1 alone; a covariate-drift incident is looked at (drift report) and closed.

The invariants (:func:`check_invariants`) are what every drill asserts at the end: no write ran
twice, every approval request ended decided or expired, every incident ended.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import redis
from sklearn.linear_model import LogisticRegression

from apps.runtime import Fleet
from fleet.actions.spec import canonical_json
from fleet.approvals import ApprovalStore
from fleet.clock import Clock
from fleet.errors import AlreadyDecided, PolicyViolation
from fleet.incidents import Incident, IncidentStore
from fleet.incidents.lifecycle import Status
from fleet.incidents.records import Signal
from fleet.schema import FeatureSchema, Policy
from fleet.telemetry.events import LabelEvent, PredictionEvent

Setup = Literal["rollback_approval", "drop_canary", "retrain_promote", "watch_drift"]
Answer = Literal["approve", "reject", "ignore"]
SETUP_ACTOR = "drill"
"""Actor of the set-up writes, left out of the duplicate-write checks."""
HUMAN = "oncall"
TRAIN_ROWS = 300
WRITES = ("registry.promote", "registry.rollback", "registry.clear_challenger",
          "registry.start_canary", "registry.start_shadow", "registry.add_version")
"""Registry audit actions that change what serves traffic (or add a version)."""

KIND: dict[Setup, str] = {"rollback_approval": "latency_regression",
                          "drop_canary": "error_rate_regression",
                          "retrain_promote": "performance_drop",
                          "watch_drift": "covariate_drift"}


@dataclass(frozen=True)
class Case:
    """One service and the incident the drill opens on it."""

    service: str
    setup: Setup
    answer: Answer = "approve"
    """What the simulated human does with this service's approval requests."""
    approval_ttl_s: float = 900.0

    @property
    def kind(self) -> str:
        """The incident kind the set-up is handled as."""
        return KIND[self.setup]

    @property
    def policy(self) -> Policy:
        """Rollback needs approval only in the rollback set-up; small canaries decide fast."""
        gated = {"rollback"} if self.setup == "rollback_approval" else set()
        needs = {"promote", "retire"} | gated
        return Policy(needs_approval=frozenset(needs), approval_ttl_s=self.approval_ttl_s,
                      canary_min_samples=60, cooldown_s=0.0, approvers=(HUMAN,),
                      train_window=TRAIN_ROWS, min_rows_after_drift=TRAIN_ROWS)


def tiny_model() -> LogisticRegression:
    """A two-feature classifier, trained once and registered as every version."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    return LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))


def seed_case(fleet: Fleet, case: Case, model: Any) -> None:
    """Register ``case.service`` with v1 and v2 and put it in the set-up's serving state."""
    reg, svc = fleet.registry, case.service
    reg.register_service(svc, task="classification", schema=FeatureSchema.numeric(["a", "b"]),
                         policy=case.policy, actor=SETUP_ACTOR)
    versions = 1 if case.setup in ("retrain_promote", "watch_drift") else 2
    for _ in range(versions):
        reg.add_version(svc, model, created_by=SETUP_ACTOR, metrics={"accuracy": 0.9})
    reg.promote(svc, 1, actor=SETUP_ACTOR, reason="initial model")
    if case.setup == "rollback_approval":
        reg.promote(svc, 2, actor=SETUP_ACTOR, reason="last week's model")
    elif case.setup == "drop_canary":
        reg.start_canary(svc, 2, 0.05, actor=SETUP_ACTOR, reason="candidate")
    elif case.setup == "retrain_promote":
        write_traffic(fleet, svc, {1: TRAIN_ROWS + 100}, since=fleet.clock.now() - 60.0)


def write_traffic(fleet: Fleet, service: str, per_version: dict[int, int], *, since: float,
                  seed: int = 0) -> None:
    """Labelled traffic after ``since`` under the new concept (``y = b > 0``).

    v1 still answers the old concept (``a > 0``), so it is wrong about half the time; any other
    version answers the new one and is always right.
    """
    rng = np.random.default_rng(seed)
    preds, labels = [], []
    i = 0
    for version, n in per_version.items():
        for _ in range(n):
            a, b = rng.normal(size=2)
            y = float(b > 0)
            p = float(a > 0) if version == 1 else y
            rid = f"{service}-{version}-{i}"
            ts = since + 1e-3 * (i + 1)
            preds.append(PredictionEvent(ts=ts, request_id=rid, version=version,
                                         features=(float(a), float(b)), prediction=p,
                                         latency_ms=2.0))
            labels.append(LabelEvent(ts=ts, request_id=rid, label=y))
            i += 1
    fleet.writer.write_predictions(service, preds)
    fleet.writer.write_labels(service, labels)


def serve_canaries(fleet: Fleet, services: list[str], served: set[tuple[str, int]]) -> None:
    """Play the gateway: the first time a service has a challenger, send it canary traffic."""
    for svc in services:
        s = fleet.registry.service(svc)
        if s.challenger is None or (svc, s.challenger) in served:
            continue
        served.add((svc, s.challenger))
        write_traffic(fleet, svc, {s.champion or 1: 100, s.challenger: 100},
                      since=s.challenger_since, seed=s.challenger)


def seed_and_open(fleet: Fleet, incidents: IncidentStore, cases: list[Case]) -> list[str]:
    """Seed every case's service (one tiny model for all) and open its incident; return the ids."""
    model = tiny_model()
    for case in cases:
        seed_case(fleet, case, model)
    return [open_incident(incidents, fleet.clock, case) for case in cases]


def open_incident(incidents: IncidentStore, clock: Clock, case: Case) -> str:
    """Open the case's incident as its detector would, and return its id."""
    inc = incidents.observe(Signal(
        service=case.service, kind=case.kind, severity="critical", detector="drill",  # type: ignore[arg-type]
        evidence={"statistic": 4.2, "threshold": 3.0}, version=2, at=clock.now()))
    assert inc is not None, f"the incident on {case.service} was suppressed"
    return inc.id


def answer_pending(approvals: ApprovalStore, answers: dict[str, Answer]) -> int:
    """Decide pending requests as the on-call human would for each service; return how many."""
    n = 0
    for req in approvals.pending():
        what = answers.get(req.action.service, "ignore")
        if what == "ignore":
            continue
        try:
            approvals.decide(req.id, approve=what == "approve", by=HUMAN,
                             reason="fine" if what == "approve" else "not during the freeze",
                             digest=req.action_digest)
        except (PolicyViolation, AlreadyDecided):
            continue  # it expired meanwhile, or the loop expired it first
        n += 1
    return n


@dataclass
class DrillReport:
    """What the invariants found, for messages and the drill's closing numbers."""

    statuses: Counter[str] = field(default_factory=Counter)
    writes_done: Counter[str] = field(default_factory=Counter)
    """Registry writes by the agents, by action."""
    approvals: Counter[str] = field(default_factory=Counter)
    """Approval outcomes: approve, reject, expire."""
    replayed: int = 0
    """Guarded writes answered from the ledger instead of running again."""
    unsettled: list[str] = field(default_factory=list)
    """Ledger records left ``running``/``unknown`` (a write interrupted by a kill)."""


def thread_done(runner: Any, inc: Incident) -> bool:
    """Whether the incident's graph thread has nothing left to run.

    A kill inside the close node, after its (atomic) move to a terminal status but before the
    step's checkpoint, leaves a closed incident whose thread reads ``stalled`` at ``close``.
    Nobody resumes a closed incident, and nothing is left to do but the close notification.
    """
    if runner.status(inc.id).state == "done":
        return True
    left = runner.graph.get_state(runner.config(inc.id, inc.service)).next
    return inc.status.terminal and set(left) <= {"close"}


def ended(incidents: IncidentStore, runner: Any, iid: str) -> bool:
    """The incident is resolved or escalated, and its thread is done."""
    inc = incidents.get(iid)
    return inc.status in (Status.RESOLVED, Status.ESCALATED) and thread_done(runner, inc)


def audit_entries(r: redis.Redis, fleet: Fleet) -> list[dict[str, Any]]:
    """Every audit entry of the fleet's prefix, oldest first, with ``details`` parsed."""
    out = []
    for sid, f in r.xrange(fleet.keys.audit):
        out.append({**f, "id": sid, "details": json.loads(f.get("details") or "{}")})
    return out


def check_invariants(fleet: Fleet, approvals: ApprovalStore, incidents: IncidentStore,
                     runner: Any, incident_ids: list[str]) -> DrillReport:
    """Assert the drill invariants over the whole prefix and return what was found.

    - **No duplicate write.** Each guarded write (``ops.*`` audited ``done``) ran at most once per
      incident, action and arguments; each registry write by an agent happened at most once per
      service (every service has one incident); every ledger record closed ``done`` was audited
      as done or replayed, and every ``done`` entry has its record.
    - **No lost approval.** Every ``approval.request`` ends approved, rejected or expired, and
      nothing is left in the pending set.
    - **Every incident ended.** Its graph thread is done and its status is resolved or escalated
      (handed to a person); never failed (a graph crash), never still in progress.
    """
    r, keys = fleet.r, fleet.keys
    rep = DrillReport()
    entries = audit_entries(r, fleet)

    done: Counter[tuple[str, str, str]] = Counter()
    done_keys: Counter[str] = Counter()
    answered: Counter[tuple[str, str, str]] = Counter()  # done or replayed from the ledger
    for e in entries:
        d = e["details"]
        if not e["action"].startswith("ops.") or d.get("outcome") not in ("done", "replayed"):
            continue
        ident = (d.get("incident", ""), e["action"].removeprefix("ops."),
                 canonical_json(d.get("args") or {}))
        answered[ident] += 1
        if d.get("outcome") == "done":
            done[ident] += 1
            done_keys[d.get("key", "")] += 1
        else:
            rep.replayed += 1
    twice = {k: n for k, n in done.items() if n > 1}
    assert not twice, f"guarded writes ran more than once: {twice}"

    registry_writes: Counter[tuple[str, str]] = Counter()
    for e in entries:
        if e["action"] in WRITES and e["actor"] != SETUP_ACTOR:
            registry_writes[(e["service"], e["action"])] += 1
            rep.writes_done[e["action"]] += 1
    twice_reg = {k: n for k, n in registry_writes.items() if n > 1}
    assert not twice_reg, f"registry writes happened more than once per incident: {twice_reg}"

    for k in r.scan_iter(match=keys.action("*"), count=1000):
        h = r.hgetall(k)
        ident = (h.get("incident", ""), h.get("name", ""), h.get("args", "{}"))
        if h.get("state") == "done":
            # Its ``done`` audit entry is missing only if the process died between closing the
            # record and writing the entry; the resumed call then audits a replay.
            assert answered[ident] >= 1, f"ledger record {ident} is done but was never audited"
        elif h.get("state") in ("running", "unknown"):
            rep.unsettled.append(f"{ident[0]}:{ident[1]}")
    orphans = [k for k in done_keys if not r.exists(keys.action(k))]
    assert not orphans, f"'done' audit entries without a ledger record: {orphans}"

    requested = [e["details"]["approval_id"] for e in entries if e["action"] == "approval.request"]
    assert len(requested) == len(set(requested)), "an approval id was requested twice"
    for aid in requested:
        decision = approvals.decision(aid)
        assert decision is not None, f"approval {aid} was lost: still undecided at the end"
    for e in entries:
        if e["action"] in ("approval.approve", "approval.reject", "approval.expire"):
            rep.approvals[e["action"].removeprefix("approval.")] += 1
    assert sum(rep.approvals.values()) == len(requested), (
        f"{len(requested)} approval requests but decisions {dict(rep.approvals)}")
    assert r.zcard(keys.approvals_pending) == 0, "approvals left in the pending set"

    for iid in incident_ids:
        inc = incidents.get(iid)
        rep.statuses[inc.status.value] += 1
        out = runner.status(iid)
        assert thread_done(runner, inc), f"incident {iid} thread is {out.state!r}, not done: {inc}"
        moves = [(e["actor"], e["details"].get("status"), e["reason"][:120]) for e in entries
                 if e["action"] == "incident.transition" and e["details"].get("incident") == iid]
        assert inc.status in (Status.RESOLVED, Status.ESCALATED), (
            f"incident {iid} ended {inc.status.value}: {inc.resolution}; moves: {moves}")
    return rep
