"""The background loop across real processes on one real Redis (DESIGN §7, §9; issue 5).

Worker processes run ``tests.apps.loop_worker`` (the system ``flywheel run`` builds, with short
lease TTLs) or ``flywheel run`` itself. The test registers services, opens incidents whose
runbook is quick (a latency regression → roll back), and reads the outcome from Redis: shard
lease holders, the audit trail ("picked up … on worker X", ``registry.rollback``), and the
workers' run records. Waits are bounded polls; nothing asserts how fast anything is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis
from sklearn.dummy import DummyClassifier

from apps.loop import Loop, LoopConfig
from apps.runtime import Fleet, build_fleet
from apps.system import build_system
from fleet.approvals import EXPIRED_BY, ApprovalStore
from fleet.audit import Audit, AuditEntry
from fleet.clock import Clock, ManualClock, SystemClock
from fleet.incidents import Incident, IncidentStore, Signal
from fleet.keys import Keys
from fleet.leases import shard_of
from fleet.schema import FeatureSchema, Policy
from tests.apps.loop_worker import runs_key, stall_key

ROOT = Path(__file__).resolve().parents[2]
SHARDS = 8
GATED = Policy(needs_approval=frozenset({"promote", "retire", "rollback"}))
"""A policy under which the runbook's rollback stops for a person."""


# --- the fleet the workers attach to ---------------------------------------------------------


def _const(value: int) -> DummyClassifier:
    return DummyClassifier(strategy="constant", constant=value).fit(np.zeros((2, 2)), [0, 1])


def _fleet(r: redis.Redis, keys: Keys, url: str, artifacts: Path, clock: Clock) -> Fleet:
    return build_fleet(r, url, prefix=keys.prefix, artifacts=artifacts, clock=clock)


def _register(fleet: Fleet, name: str, policy: Policy | None = None) -> None:
    """``name`` with v2 champion and v1 previous: the runbook's rollback restores v1."""
    reg = fleet.registry
    reg.register_service(name, task="classification", schema=FeatureSchema.numeric(["a", "b"]),
                         policy=policy or Policy(), actor="test")
    for n in (1, 2):
        reg.add_version(name, _const(n % 2), created_by="test")
        reg.promote(name, n, actor="test", reason=f"setup v{n}")


def _latency(store: IncidentStore, service: str, now: float) -> Incident:
    inc = store.observe(Signal(service=service, kind="latency_regression", severity="critical",
                               detector="test", evidence={"p95_ms": 900.0, "threshold": 200.0},
                               version=2, at=now))
    assert inc is not None
    return inc


def _names(count: int, *, start: int = 0, tag: str = "svc") -> list[str]:
    """``count`` service names spread over both halves of the shards (each worker gets some)."""
    low, high = [], []
    for i in range(start, start + 10_000):
        name = f"{tag}-{i}"
        (low if shard_of(name, SHARDS) < SHARDS // 2 else high).append(name)
        if len(low) >= count // 2 and len(high) >= count - count // 2:
            break
    return low[: count // 2] + high[: count - count // 2]


# --- worker processes -----------------------------------------------------------------------


@dataclass
class Worker:
    """One spawned loop worker."""

    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return f"--- {self.name} (rc={self.proc.poll()}) ---\n" + "\n".join(lines[-n:])


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", LITELLM_LOCAL_MODEL_COST_MAP="True",
               PYTHONUNBUFFERED="1", **extra)
    env.pop("FLYWHEEL_MODEL", None)
    return env


@pytest.fixture()
def spawn(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start processes; any still alive at teardown are killed."""
    started: list[Worker] = []

    def start(name: str, cmd: list[str], env: dict[str, str] | None = None) -> Worker:
        log = tmp_path / f"{name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    env=env or _env())
        w = Worker(name, proc, log)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait(10)


@pytest.fixture()
def worker(spawn: Callable[..., Worker], redis_url: str, keys: Keys,
           artifacts_dir: Path) -> Callable[..., Worker]:
    """``worker(name, stall_service=…)``: a ``tests.apps.loop_worker`` on this test's prefix."""

    def start(name: str, *, stall_service: str | None = None,
              stall_seconds: float = 3_600.0) -> Worker:
        cmd = [sys.executable, "-m", "tests.apps.loop_worker", "--redis-url", redis_url,
               "--prefix", keys.prefix, "--artifacts", str(artifacts_dir), "--worker", name,
               "--shards", str(SHARDS), "--interval", "0.2", "--shard-ttl", "2",
               "--incident-ttl", "2", "--heartbeat-ttl", "2"]
        if stall_service:
            cmd += ["--stall-service", stall_service, "--stall-seconds", str(stall_seconds)]
        return spawn(name, cmd)

    return start


def _wait(what: str, pred: Callable[[], object], workers: list[Worker], *,
          timeout: float = 60.0, alive: list[Worker] | None = None) -> object:
    """Poll ``pred`` until truthy; fail with the workers' logs on timeout or an early death."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        dead = [w for w in (workers if alive is None else alive) if w.proc.poll() is not None]
        if dead:
            pytest.fail(f"worker died while waiting for {what}\n"
                        + "\n".join(w.tail() for w in workers))
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n"
                + "\n".join(w.tail() for w in workers))


def _holders(r: redis.Redis, keys: Keys) -> dict[int, str | None]:
    return {s: r.get(keys.loop_shard(s)) for s in range(SHARDS)}


def _split_between(r: redis.Redis, keys: Keys, names: set[str]) -> dict[str, set[int]] | None:
    """Shards per worker once every shard is held and each of ``names`` owns its fair share."""
    h = _holders(r, keys)
    owned = {n: {s for s, w in h.items() if w == n} for n in names}
    if set(h.values()) == names and all(len(v) == SHARDS // len(names) for v in owned.values()):
        return owned
    return None


def _all_terminal(store: IncidentStore, ids: list[str]) -> bool:
    return all(store.get(i).status.terminal for i in ids)


def _audit(r: redis.Redis, keys: Keys, prefix: str) -> list[AuditEntry]:
    return Audit(r, keys).read(action_prefix=prefix, count=2_000)


def _picked_up(r: redis.Redis, keys: Keys) -> dict[str, list[str]]:
    """Incident id -> the reasons of its 'picked up' transitions."""
    out: dict[str, list[str]] = {}
    for e in _audit(r, keys, "incident.transition"):
        if e.reason.startswith("picked up by the incident graph"):
            out.setdefault(e.details["incident"], []).append(e.reason)
    return out


def _runs(r: redis.Redis, keys: Keys) -> list[dict]:
    return [json.loads(x) for x in r.lrange(runs_key(keys.prefix), 0, -1)]


def _rollbacks(r: redis.Redis, keys: Keys) -> dict[str, list[AuditEntry]]:
    out: dict[str, list[AuditEntry]] = {}
    for e in _audit(r, keys, "registry.rollback"):
        out.setdefault(e.service, []).append(e)
    return out


def _stop(workers: list[Worker]) -> None:
    for w in workers:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)
    for w in workers:
        assert w.proc.wait(30) in (0, -signal.SIGKILL), w.tail()


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_workers_split_the_shards_and_handle_each_incident_once(
        r, keys, redis_url, artifacts_dir, worker):
    """Two loop processes on one Redis: shard leases split, and no incident is handled twice.

    Evidence from Redis: the shard leases' holders; one "picked up … on worker X" transition per
    incident, X holding the incident's shard; every thread run of an incident by that same
    worker; one rollback per service; both workers did some of the work.
    """
    fleet = _fleet(r, keys, redis_url, artifacts_dir, SystemClock())
    services = _names(8)
    for s in services:
        _register(fleet, s)
    a, b = worker("wa"), worker("wb")
    owned = _wait("the shards to split between wa and wb",
                  lambda: _split_between(r, keys, {"wa", "wb"}), [a, b])
    assert owned["wa"].isdisjoint(owned["wb"]) and owned["wa"] | owned["wb"] == set(range(SHARDS))

    store = IncidentStore(r, keys, fleet.clock, fleet.audit)
    ids = [_latency(store, s, fleet.clock.now()).id for s in services]
    _wait("every incident to close", lambda: _all_terminal(store, ids), [a, b])

    assert {i: store.get(i).status.value for i in ids} == dict.fromkeys(ids, "resolved")
    picked, runs = _picked_up(r, keys), _runs(r, keys)
    by_worker: dict[str, set[str]] = {"wa": set(), "wb": set()}
    for inc in map(store.get, ids):
        owner = "wa" if shard_of(inc.service, SHARDS) in owned["wa"] else "wb"
        assert picked[inc.id] == [f"picked up by the incident graph on worker {owner}"]
        assert {x["worker"] for x in runs if x["incident"] == inc.id} == {owner}
        by_worker[owner].add(inc.id)
    assert all(by_worker.values()), by_worker
    assert {s: len(v) for s, v in _rollbacks(r, keys).items()} == dict.fromkeys(services, 1)
    _stop([a, b])


@pytest.mark.slow
def test_a_worker_killed_mid_incident_is_taken_over_and_its_incidents_finished(
        r, keys, redis_url, artifacts_dir, worker):
    """SIGKILL one worker mid-incident: the other takes its shards and finishes its incidents.

    The victim holds two kinds of unfinished work when it dies: incidents paused on a rollback
    approval (checkpointed at the interrupt), and one incident it is running right now (stuck
    inside a rollback, holding the incident lease, renewed while it runs). After the leases
    lapse the survivor owns every shard, resumes the paused threads once the approvals are
    decided, continues the stalled thread from its last checkpoint, and every rollback happens
    exactly once.
    """
    fleet = _fleet(r, keys, redis_url, artifacts_dir, SystemClock())
    gated = _names(4, tag="gated")
    stall = _names(1, tag="stall")[0]
    for s in gated:
        _register(fleet, s, GATED)
    _register(fleet, stall)
    a, b = worker("wa", stall_service=stall), worker("wb", stall_service=stall)
    workers = [a, b]
    owned = _wait("the shards to split", lambda: _split_between(r, keys, {"wa", "wb"}), workers)

    store = IncidentStore(r, keys, fleet.clock, fleet.audit)
    approvals = ApprovalStore(r, keys, fleet.clock, fleet.audit)
    paused = [_latency(store, s, fleet.clock.now()).id for s in gated]
    _wait("every gated incident to await its approval",
          lambda: all(store.get(i).status.value == "awaiting_approval" for i in paused), workers)
    stuck = _latency(store, stall, fleet.clock.now()).id
    victim_name = _wait("a worker to stall inside the rollback", lambda: r.get(stall_key(
        keys.prefix)), workers)
    victim, survivor = (a, b) if victim_name == "wa" else (b, a)
    time.sleep(3.0)  # longer than the lease TTLs: the stuck but live victim keeps its leases
    assert r.get(keys.loop_incident(stuck)) == victim.name
    assert {s for s, w in _holders(r, keys).items() if w == victim.name} == owned[victim.name]
    assert not [x for x in _runs(r, keys) if x["incident"] == stuck and x["worker"] != victim.name]
    victims_paused = [i for i in paused
                      if shard_of(store.get(i).service, SHARDS) in owned[victim.name]]
    assert victims_paused, (owned, paused)

    victim.proc.send_signal(signal.SIGKILL)
    assert victim.proc.wait(10) == -signal.SIGKILL
    killed_at = time.time()
    for req in approvals.pending():
        approvals.decide(req.id, approve=True, by="oncall", reason="go", digest=req.action_digest)
    _wait("every incident to close", lambda: _all_terminal(store, [*paused, stuck]), workers,
          alive=[survivor])

    assert {i: store.get(i).status.value for i in [*paused, stuck]} == dict.fromkeys(
        [*paused, stuck], "resolved")
    assert set(_holders(r, keys).values()) == {survivor.name}
    # The survivor releases the incident lease just after the graph's close node has marked
    # the incident resolved, so the release is awaited rather than read at once (a fresh-clone
    # run caught the lease still held in that gap).
    _wait("the stalled incident's lease to be released",
          lambda: r.get(keys.loop_incident(stuck)) is None, workers, timeout=10.0,
          alive=[survivor])
    runs = _runs(r, keys)
    for inc in victims_paused:
        mine = [x for x in runs if x["incident"] == inc]
        assert [(x["worker"], x["op"], x["event"]) for x in mine] == [
            (victim.name, "start", "begin"), (victim.name, "start", "end"),
            (survivor.name, "resume_decision", "begin"), (survivor.name, "resume_decision", "end")]
    took = [x for x in runs if x["incident"] == stuck]
    assert [(x["worker"], x["event"]) for x in took] == [
        (victim.name, "begin"), (survivor.name, "begin"), (survivor.name, "end")]
    assert took[1]["t"] > killed_at  # the survivor waited for the dead worker's lease
    assert took[-1]["state"] == "done"
    picked = _picked_up(r, keys)
    assert all(len(picked[i]) == 1 for i in [*paused, stuck]), picked
    assert picked[stuck] == [f"picked up by the incident graph on worker {victim.name}"]
    assert {s: len(v) for s, v in _rollbacks(r, keys).items()} == dict.fromkeys(
        [*gated, stall], 1)
    _stop([survivor])


@pytest.mark.slow
def test_sigterm_mid_pass_finishes_the_pass_releases_the_leases_and_exits_zero(
        r, keys, redis_url, artifacts_dir, worker):
    """SIGTERM while a rollback runs: the pass (and the incident) finishes, then a clean exit.

    The worker is inside a slow rollback when the signal arrives; it completes the rollback and
    the incident, releases its shard leases and its heartbeat, and exits 0.
    """
    fleet = _fleet(r, keys, redis_url, artifacts_dir, SystemClock())
    _register(fleet, "svc")
    w = worker("wa", stall_service="svc", stall_seconds=2.0)
    _wait("wa to hold every shard", lambda: _split_between(r, keys, {"wa"}), [w])
    store = IncidentStore(r, keys, fleet.clock, fleet.audit)
    inc = _latency(store, "svc", fleet.clock.now())
    _wait("wa to be inside the rollback", lambda: r.get(stall_key(keys.prefix)), [w])

    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(60) == 0, w.tail()
    assert store.get(inc.id).status.value == "resolved"
    assert [(x["op"], x["event"], x.get("state")) for x in _runs(r, keys)] == [
        ("start", "begin", None), ("start", "end", "done")]
    assert len(_rollbacks(r, keys)["svc"]) == 1
    assert _holders(r, keys) == dict.fromkeys(range(SHARDS))
    assert r.exists(keys.loop_incident(inc.id)) == 0
    assert r.zcard(keys.loop_workers) == 0
    lines = [json.loads(line) for line in w.log.read_text().splitlines() if line.startswith("{")]
    events = [e for e in lines if str(e.get("event", "")).startswith("loop.")]
    assert [(e["event"], e.get("started")) for e in events[-2:]] == [
        ("loop.pass", [inc.id]), ("loop.stop", None)]  # the interrupted pass was completed


@pytest.mark.slow
def test_flywheel_run_handles_an_incident_and_stops_cleanly_on_sigterm(
        r, keys, redis_url, tmp_path, spawn):
    """The real ``flywheel run`` command: it handles an incident; SIGTERM: exit 0, leases gone."""
    fleet = _fleet(r, keys, redis_url, tmp_path / "artifacts", SystemClock())
    _register(fleet, "svc")
    cmd = [str(Path(sys.executable).parent / "flywheel"), "run", "--shards", "4",
           "--interval", "0.2"]
    w = spawn("flywheel-run", cmd, _env(REDIS_URL=redis_url, FLYWHEEL_PREFIX=keys.prefix,
                                         FLYWHEEL_HOME=str(tmp_path)))
    _wait("flywheel run to hold every shard",
          lambda: all(r.get(keys.loop_shard(s)) for s in range(4)), [w])
    store = IncidentStore(r, keys, fleet.clock, fleet.audit)
    inc = _latency(store, "svc", fleet.clock.now())
    _wait("the incident to close", lambda: store.get(inc.id).status.terminal, [w])
    assert r.zcard(keys.loop_workers) == 1

    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(30) == 0, w.tail()
    assert store.get(inc.id).status.value == "resolved"
    assert [s for s in range(4) if r.exists(keys.loop_shard(s))] == []
    assert r.exists(keys.loop_incident(inc.id)) == 0
    assert r.zcard(keys.loop_workers) == 0
    assert '"event": "loop.stop"' in w.log.read_text(), w.tail()


def test_an_overdue_approval_expires_and_the_incident_escalates(r, keys, redis_url,
                                                                 artifacts_dir):
    """Nobody answers the rollback approval: the loop auto-denies it ("expired") and escalates.

    In simulated time: the first pass pauses the thread on the approval; after the policy's
    ``approval_ttl_s`` the next pass expires it, resumes the thread with the denial, and the
    supervisor escalates without rolling back.
    """
    clock = ManualClock(1_700_000_000.0)
    fleet = _fleet(r, keys, redis_url, artifacts_dir, clock)
    _register(fleet, "svc", GATED.model_copy(update={"approval_ttl_s": 60.0}))
    system = build_system(fleet)
    loop = Loop(system, LoopConfig(shards=SHARDS), owner="solo")
    try:
        inc = _latency(system.incidents, "svc", clock.now())
        first = loop.run_once()
        assert first.started == [inc.id] and first.errors == {}
        [req] = system.approvals.pending()
        assert req.incident == inc.id and req.action.name == "rollback"
        assert system.incidents.get(inc.id).status.value == "awaiting_approval"

        clock.advance(30.0)
        assert loop.run_once().expired == []  # not due yet
        clock.advance(31.0)
        second = loop.run_once()
    finally:
        loop.shards.release_all()
        system.close()

    assert second.expired == [req.id] and second.resumed == [inc.id] and second.errors == {}
    d = system.approvals.decision(req.id)
    assert d is not None and (d.approved, d.by, d.reason) == (False, EXPIRED_BY, "expired")
    assert system.approvals.pending() == []
    done = system.incidents.get(inc.id)
    assert done.status.value == "escalated"
    assert "rollback" in done.resolution and "expired" in done.resolution, done.resolution
    [expire] = _audit(r, keys, "approval.expire")
    assert (expire.actor, expire.reason, expire.details["approval_id"]) == (
        EXPIRED_BY, "expired", req.id)
    moves = [(e.actor, e.reason) for e in _audit(r, keys, "incident.transition")
             if e.details["incident"] == inc.id]
    assert (EXPIRED_BY, f"approval {req.id} expired") in moves
    assert "svc" not in _rollbacks(r, keys)  # nothing was rolled back
    assert fleet.registry.service("svc").champion == 2
