"""SIGKILL the loop at random points across 30 incidents; it must lose and repeat nothing.

DESIGN §7: "A killed loop resumes every open incident from its checkpoint", and a crash and resume
never deploys twice. A worker process (``tests/drills/worker.py``) runs ``Loop.run_forever`` on a
shared Redis prefix; the test SIGKILLs it at a seeded random point, starts a fresh process that
re-attaches to the same state, and repeats, while it plays the on-call human and the canary
traffic from outside. Four of the kills are failpoints, in the windows a random kill rarely
hits: between a registry change and its ledger record, between a ledger record and the checkpoint,
between an approval request and its interrupt, and between a task's saved writes and the
checkpoint of its step (a thread cut there used to read as done and was never resumed).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from apps.runtime import build_fleet
from apps.system import build_system
from fleet.approvals import ApprovalStore
from fleet.incidents.lifecycle import Status
from tests.drills import worker
from tests.drills.harness import (
    Case,
    answer_pending,
    check_invariants,
    ended,
    seed_and_open,
    serve_canaries,
)

SEED = 7
DELAY_S = (0.0, 1.2)
"""A ``delay`` kill comes this many seconds (uniform, seeded) after the worker first claimed an
incident; a pass over the 30 incidents takes seconds, so these land anywhere inside it."""
PLAN = ("delay", "fp:task_writes", "fp:approval_request", "delay", "fp:ledger_done",
        "after_write", "delay", "fp:registry_write", "after_request", "delay", "delay",
        "after_write", "delay", "delay", "delay", "delay")
"""What each of the 16 kills waits for: a random delay; the audit entry of the next guarded
write (``ops.* done``) or approval request; or a failpoint (see ``worker``), where the worker
kills itself (waiting up to ``FAILPOINT_S`` for it). Then one last worker runs until every
incident has ended."""
FAILPOINT_S = 15.0
START_S = 60.0
FINISH_S = 90.0

CASES = (
    [Case(f"rb{i:02d}", "rollback_approval") for i in range(8)]
    + [Case(f"rj{i:02d}", "rollback_approval", answer="reject") for i in range(2)]
    + [Case(f"ex{i:02d}", "rollback_approval", answer="ignore", approval_ttl_s=3.0)
       for i in range(4)]
    + [Case(f"dc{i:02d}", "drop_canary") for i in range(8)]
    + [Case(f"pr{i:02d}", "retrain_promote") for i in range(6)]
    + [Case(f"pj{i:02d}", "retrain_promote", answer="reject") for i in range(2)]
)
assert len(CASES) == 30
HELD = ("rb07", "pr05")
"""The on-call human answers these services only once the kill plan is through, so their
incidents stay open (paused at an approval) and every planned kill lands however fast the
machine clears the rest; it also kills workers that hold paused approvals."""


def _ended(system, ids: list[str]) -> bool:
    return all(ended(system.incidents, system.runner, i) for i in ids)


@pytest.mark.slow
def test_random_sigkills_of_the_loop_lose_no_approval_repeat_no_write_and_end_every_incident(
        r, keys, redis_url: str, tmp_path: Path):
    """Kills land between checkpoints, inside tools and during writes; the ledger, the approval
    store and the checkpoints must make every restart continue exactly where the last one was."""
    artifacts = tmp_path / "artifacts"
    fleet = build_fleet(r, redis_url, prefix=keys.prefix, artifacts=artifacts)
    system = build_system(fleet)  # the test's own view: reads, and the human's approvals
    approvals: ApprovalStore = system.approvals
    ids = seed_and_open(fleet, system.incidents, CASES)
    answers = {c.service: c.answer for c in CASES}
    now_answering = {s: a for s, a in answers.items() if s not in HELD}  # all once kills end
    services = [c.service for c in CASES]
    served: set[tuple[str, int]] = set()

    def outside_world() -> None:
        """What the test plays from outside the loop: the on-call human and the traffic."""
        answer_pending(approvals, now_answering)
        serve_canaries(fleet, services, served)

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.drills.worker"])
    rng = random.Random(SEED)
    seen: Counter[str] = Counter()  # what the kills interrupted
    procs = 0

    def start() -> multiprocessing.process.BaseProcess:
        """A fresh worker; returns once it holds an incident's lease (it is handling one)."""
        nonlocal procs
        procs += 1
        owner = f"worker-{procs}"
        p = ctx.Process(target=worker.run_loop, daemon=True,
                        args=(redis_url, keys.prefix, str(artifacts), owner))
        p.start()
        deadline = time.monotonic() + START_S
        leases = [keys.loop_incident(i) for i in ids]
        while owner not in r.mget(leases):
            assert p.is_alive() and time.monotonic() < deadline, f"{owner} claimed nothing"
            outside_world()
            time.sleep(0.005)
        return p

    def kill_when(p: multiprocessing.process.BaseProcess, trigger: str) -> None:
        """SIGKILL ``p`` when ``trigger`` fires (or when its wait is over)."""
        until = time.monotonic() + (rng.uniform(*DELAY_S) if trigger == "delay" else
                                    FAILPOINT_S if trigger.startswith("fp:") else 2 * DELAY_S[1])
        last = "$"
        while time.monotonic() < until and p.is_alive():
            if trigger in ("after_write", "after_request"):
                for _, rows in r.xread({keys.audit: last}, block=20) or []:
                    for sid, f in rows:
                        last = sid
                        outcome = json.loads(f.get("details") or "{}").get("outcome")
                        if (trigger == "after_write" and f["action"].startswith("ops.")
                                and outcome == "done") or (
                                trigger == "after_request" and f["action"] == "approval.request"):
                            seen[f"{trigger}:{f['action']}"] += 1
                            until = 0.0
            else:
                time.sleep(0.02)
            outside_world()
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
        elif trigger.startswith("fp:"):
            seen[trigger] += 1  # the worker died at its failpoint
        p.join(5)

    cut_short: set[str] = set()  # ledger records a kill left running
    t0 = time.monotonic()
    try:
        for trigger in PLAN:
            if trigger.startswith("fp:"):
                r.set(worker.crash_key(keys.prefix), trigger.removeprefix("fp:"))
            kill_when(start(), trigger)
            r.delete(worker.crash_key(keys.prefix))
            states = Counter(system.runner.status(i).state for i in ids)
            seen["kills_mid_graph"] += bool(states["stalled"])
            running = {k for k in r.scan_iter(match=keys.action("*"))
                       if r.hget(k, "state") == "running"}
            seen["kills_mid_write"] += bool(running - cut_short)
            cut_short |= running
            if _ended(system, ids):
                break
        t1 = time.monotonic()
        now_answering = answers
        p = start()
        deadline = time.monotonic() + FINISH_S
        while not _ended(system, ids) and time.monotonic() < deadline:
            outside_world()
            time.sleep(0.05)
        t2 = time.monotonic()
        os.kill(p.pid, signal.SIGTERM)
        p.join(10)
    finally:
        for child in multiprocessing.active_children():
            child.kill()

    rep = check_invariants(fleet, approvals, system.incidents, system.runner, ids)
    print(f"\nkill drill: {len(ids)} incidents, {procs} worker processes, {procs - 1} SIGKILLs "
          f"({dict(seen)}); statuses {dict(rep.statuses)}; writes {dict(rep.writes_done)}; "
          f"approvals {dict(rep.approvals)}; ledger replays {rep.replayed}; "
          f"unsettled {rep.unsettled}; {t1 - t0:.0f} s of kills, {t2 - t1:.0f} s to finish")
    assert procs - 1 >= 12, f"only {procs - 1} kills"
    for fp in ("fp:approval_request", "fp:ledger_done", "fp:registry_write", "fp:task_writes"):
        assert seen[fp] == 1, f"failpoint {fp} never fired: {dict(seen)}"
    assert rep.replayed >= 1, "the ledger_done failpoint's write was not answered from the ledger"
    assert rep.unsettled, "the registry_write failpoint left no unsettled ledger record"
    for item in rep.unsettled:  # a write cut short is never guessed at: a person checks
        assert system.incidents.get(item.split(":")[0]).status is Status.ESCALATED, item

    # The humans' choices show in every incident no kill sent to a person.
    for case, iid in zip(CASES, ids, strict=True):
        inc = system.incidents.get(iid)
        s = system.fleet.registry.service(case.service)
        if case.answer == "ignore":
            assert inc.status is Status.ESCALATED and s.champion == 2, (case, inc.resolution)
        if case.answer == "reject":
            assert inc.status is Status.ESCALATED, (case, inc.resolution)
            assert s.champion == (2 if case.setup == "rollback_approval" else 1), case
        if inc.status is Status.RESOLVED:
            want = {"rollback_approval": (1, None), "drop_canary": (1, None),
                    "retrain_promote": (2, None)}[case.setup]
            assert (s.champion, s.challenger) == want, (case, s)
    assert rep.statuses["resolved"] >= 12, rep.statuses
