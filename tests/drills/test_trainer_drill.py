"""Drills on the trainer: SIGKILL its worker process mid-job and between jobs, and a fit that
raises. Nothing may be left stuck (issue #15, "Failures that leave it stuck").

- Mid-job: the loop's retrain is inside the worker when the worker is killed (the pid comes from
  the trainer's pool); the job fails, the pool is replaced, the retry within
  ``max_retrain_failures`` trains the candidate on a fresh worker, and the incident goes on to
  its canary, all in the same loop and trainer. The loop and ``/healthz`` say ``rebuilt 1 times``.
- Between jobs: the idle worker is killed after one incident's retrain; the next incident's
  retrain succeeds without restarting anything.
- A fit that raises (a champion recipe with ``C=-1``, which sklearn rejects inside ``fit``): the
  retrain is tried ``max_retrain_failures`` times, then the incident is escalated with the error's
  name and text, and ``flywheel incidents`` (a subprocess on the same Redis) lists it. A graph that
  crashes ends ``failed``: audited, notified and listed too.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from apps.api import create_api
from apps.loop import Loop, LoopConfig, PassReport
from apps.runtime import Fleet, build_fleet
from apps.system import System, build_system
from fleet.clock import SystemClock
from fleet.incidents import IncidentStore
from fleet.incidents.lifecycle import Status
from fleet.schema import FeatureSchema
from fleet.trainer import Trainer
from tests.drills.harness import (
    SETUP_ACTOR,
    TRAIN_ROWS,
    Case,
    audit_entries,
    open_incident,
    seed_case,
    tiny_model,
    write_traffic,
)
from tests.fakes.jobs import held_once

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 90.0


def _until(pred: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie waiting for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


@pytest.fixture()
def fleet(r, keys, redis_url, clock, artifacts_dir) -> Fleet:
    return build_fleet(r, redis_url, prefix=keys.prefix, artifacts=artifacts_dir, clock=clock)


def _loop(fleet: Fleet, trainer: Trainer) -> tuple[System, Loop]:
    system = build_system(fleet, trainer=trainer)
    return system, Loop(system, LoopConfig(shards=4), owner="drill-loop")


@pytest.fixture()
def held(fleet: Fleet, tmp_path: Path) -> Iterator[tuple[System, Loop, Path]]:
    marker = tmp_path / "job-started"
    system, loop = _loop(fleet, Trainer(fleet.registry,
                                        job=functools.partial(held_once, str(marker))))
    try:
        yield system, loop, marker
    finally:
        loop.shards.release_all()
        system.close()


def _retrains(fleet: Fleet, service: str) -> list[tuple[str, str]]:
    return [(e["details"]["outcome"], e["details"].get("error", ""))
            for e in audit_entries(fleet.r, fleet) if e["action"] == "ops.retrain"
            and e["service"] == service]


def test_worker_killed_mid_job_the_retry_trains_and_the_incident_goes_on(fleet, held) -> None:
    system, loop, marker = held
    case = Case("mid", "retrain_promote")
    seed_case(fleet, case, tiny_model())
    iid = open_incident(system.incidents, fleet.clock, case)

    # A worker SIGKILLed long ago left its report behind; the live loop prunes it.
    fleet.r.hset(fleet.keys.loop_trainers, "dead-worker", '{"summary": "ok"}')
    reports: list[PassReport] = []
    passing = threading.Thread(target=lambda: reports.append(loop.run_once()))
    passing.start()
    _until(marker.exists, "the retrain to start in the worker")
    (pid,) = system.trainer.worker_pids()
    assert pid == int(marker.read_text())
    os.kill(pid, signal.SIGKILL)
    passing.join(WAIT_S)
    assert not passing.is_alive()

    [rep] = reports
    assert rep.errors == {} and rep.started == [iid]
    assert fleet.r.hkeys(fleet.keys.loop_trainers) == ["drill-loop"]
    assert rep.trainer == "rebuilt 1 times"
    outcomes = _retrains(fleet, "mid")
    assert [o for o, _ in outcomes] == ["failed", "done"], outcomes
    assert outcomes[0][1].startswith("TrainingFailed: the training worker for 'mid' died during "
                                     "the job (BrokenProcessPool: ")
    v2 = fleet.registry.version("mid", 2)
    assert (v2.parent, v2.created_by) == (1, "agent:continuous_learning")
    svc = fleet.registry.service("mid")
    assert svc.challenger == 2  # the incident went on to its canary
    assert system.incidents.get(iid).status == Status.MITIGATING

    # /healthz reads what the loop worker published.
    api = create_api(registry=fleet.registry, incidents=system.incidents,
                     approvals=system.approvals, writer=fleet.writer, tokens=None, auth=False,
                     trainer=system.trainer.health)
    body = TestClient(api).get("/healthz").json()
    assert (body["status"], body["trainer"], body["trainers"]) == (
        "ok", "rebuilt 1 times", {"drill-loop": "rebuilt 1 times"})


def test_worker_killed_between_jobs_the_next_retrain_succeeds(fleet) -> None:
    system, loop = _loop(fleet, Trainer(fleet.registry))
    try:
        first, second = Case("one", "retrain_promote"), Case("two", "retrain_promote")
        model = tiny_model()
        seed_case(fleet, first, model)
        open_incident(system.incidents, fleet.clock, first)
        assert loop.run_once().errors == {}
        assert fleet.registry.service("one").challenger == 2
        (pid,) = system.trainer.worker_pids()
        os.kill(pid, signal.SIGKILL)
        _until(lambda: _gone(pid), "the killed worker to exit")

        seed_case(fleet, second, model)
        iid = open_incident(system.incidents, fleet.clock, second)
        rep = loop.run_once()
    finally:
        loop.shards.release_all()
        system.close()
    assert rep.errors == {} and iid in rep.started
    assert rep.trainer == "rebuilt 1 times"
    assert _retrains(fleet, "two")[-1] == ("done", "")
    assert fleet.registry.service("two").challenger == 2
    assert system.incidents.get(iid).status == Status.MITIGATING


def _seed_bad_recipe(fleet: Fleet, case: Case) -> None:
    """Hand-made fixture: the champion's recorded recipe has ``C=-1.0``, which passes
    ``set_params`` but which sklearn rejects inside ``fit`` (a retrain reuses the recipe)."""
    reg = fleet.registry
    reg.register_service(case.service, task="classification",
                         schema=FeatureSchema.numeric(["a", "b"]), policy=case.policy,
                         actor=SETUP_ACTOR)
    reg.add_version(case.service, tiny_model(), created_by=SETUP_ACTOR,
                    params={"model": "logreg", "C": -1.0})
    reg.promote(case.service, 1, actor=SETUP_ACTOR, reason="initial model")
    write_traffic(fleet, case.service, {1: TRAIN_ROWS + 100}, since=fleet.clock.now() - 60.0)


def _cli_incidents(redis_url: str, prefix: str) -> str:
    env = {**os.environ, "REDIS_URL": redis_url, "FLYWHEEL_PREFIX": prefix,
           "PYTHONPATH": str(ROOT), "COLUMNS": "400"}
    out = subprocess.run([sys.executable, "-c", "from apps.cli import main; main()",
                          "incidents"], env=env, capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_fit_that_raises_escalates_with_the_error_and_is_listed(fleet, keys, redis_url):
    notified: list[tuple[str, dict[str, Any]]] = []
    # The fit's failure is the point here, not the worker process: a thread pool keeps it quick.
    with ThreadPoolExecutor(1) as ex:
        system, loop = _loop(fleet, Trainer(fleet.registry, executor=ex))
        system.driver.notify = lambda event, payload: notified.append((event, payload))
        try:
            bad = Case("badfit", "retrain_promote")
            _seed_bad_recipe(fleet, bad)
            iid = open_incident(system.incidents, fleet.clock, bad)
            # A graph that crashes (a test-only fault in the runner) must end failed, loudly.
            crash = Case("crash", "watch_drift")
            seed_case(fleet, crash, tiny_model())
            crashed = open_incident(system.incidents, fleet.clock, crash)
            real = system.runner.start

            def start(incident_id: str) -> Any:
                if incident_id == crashed:
                    raise RuntimeError("injected graph crash")
                return real(incident_id)

            system.runner.start = start  # type: ignore[method-assign]
            rep = loop.run_once()
        finally:
            loop.shards.release_all()
            system.close()

    inc = system.incidents.get(iid)
    assert inc.status == Status.ESCALATED
    assert "InvalidParameterError: The 'C' parameter of LogisticRegression" in inc.resolution
    assert "failed 2 time(s) in a row" in inc.resolution
    assert [o for o, _ in _retrains(fleet, "badfit")] == ["failed", "failed"]
    assert fleet.registry.service("badfit").challenger is None

    assert rep.errors == {crashed: "RuntimeError: injected graph crash"}
    assert system.incidents.get(crashed).status == Status.FAILED
    assert notified == [("incident.failed", {
        "incident": crashed, "service": "crash", "kind": "covariate_drift", "status": "failed",
        "error": "RuntimeError: injected graph crash"})]
    [entry] = [e for e in audit_entries(fleet.r, fleet) if e["action"] == "incident.failed"]
    assert entry["details"]["incident"] == crashed

    listing = _cli_incidents(redis_url, keys.prefix)
    rows = {line.split("│")[1].strip(): line for line in listing.splitlines()
            if line.count("│") > 3 and line.split("│")[1].strip() in (iid, crashed)}
    assert set(rows) == {iid, crashed}, listing
    assert "escalated" in rows[iid] and "failed" in rows[crashed]


@pytest.mark.slow
def test_flywheel_run_survives_its_trainer_worker_killed_between_jobs(
    r, keys, redis_url, tmp_path: Path
) -> None:
    """The real ``flywheel run`` process: after one incident's retrain, its trainer worker is
    SIGKILLed (the pid from the trainer health the loop publishes); the next incident's retrain
    succeeds in the same loop process, and its published health says ``rebuilt 1 times``."""
    fleet = build_fleet(r, redis_url, prefix=keys.prefix, artifacts=tmp_path / "artifacts",
                        clock=SystemClock())
    store = IncidentStore(r, keys, fleet.clock, fleet.audit)
    model = tiny_model()
    first, second = Case("one", "retrain_promote"), Case("two", "retrain_promote")
    seed_case(fleet, first, model)
    env = {**os.environ, "REDIS_URL": redis_url, "FLYWHEEL_PREFIX": keys.prefix,
           "FLYWHEEL_HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("FLYWHEEL_MODEL", None)
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", "from apps.cli import main; main()",
                                 "run", "--shards", "4", "--interval", "0.2"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT)

    def published() -> dict[str, Any]:
        raw = r.hgetall(keys.loop_trainers)
        return json.loads(next(iter(raw.values()))) if raw else {}

    def alive(what: str, pred: Any) -> None:
        def check() -> bool:
            assert proc.poll() is None, f"flywheel run exited: {log.read_text()[-3000:]}"
            return bool(pred())
        _until(check, what)

    try:
        open_incident(store, fleet.clock, first)
        alive("the first retrain", lambda: fleet.registry.service("one").challenger == 2)
        alive("a published worker pid", lambda: published().get("workers"))
        (pid,) = published()["workers"]
        os.kill(pid, signal.SIGKILL)
        seed_case(fleet, second, model)
        iid = open_incident(store, fleet.clock, second)
        alive("the second retrain", lambda: fleet.registry.service("two").challenger == 2)
        alive("the rebuild to be published",
              lambda: published().get("summary") == "rebuilt 1 times")
        assert store.get(iid).status == Status.MITIGATING
        assert pid not in published()["workers"]
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    assert rc == 0, log.read_text()[-3000:]
    assert r.hlen(keys.loop_trainers) == 0  # a stopped worker withdraws its report
