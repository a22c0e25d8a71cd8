"""The trainer survives its worker process dying (SIGKILL, the OOM killer) mid-job and between
jobs: the job that was running fails with a clear error, the pool is replaced, the next job runs,
and health says what happened. A fit that raises fails with the error's name and text.

Regression: issue #15 ("every later retrain fails with BrokenProcessPool until flywheel run is
restarted, while the loop reports healthy")."""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from fleet.datasets import rotating_hyperplane
from fleet.errors import TrainingFailed
from fleet.registry import ArtifactStore, Registry
from fleet.schema import FeatureSchema, Policy
from fleet.telemetry.window import LabelledWindow
from fleet.trainer import Trainer
from tests.fakes.jobs import held_once

STREAM = rotating_hyperplane(1200, drifts=(), width=1, d=3, noise=0.05, seed=5)
SCHEMA = FeatureSchema.numeric(list(STREAM.feature_names))
WAIT_S = 60.0


@pytest.fixture()
def registry(r, keys, clock, artifacts_dir: Path) -> Registry:
    reg = Registry(r, keys, ArtifactStore(artifacts_dir), clock=clock)
    reg.register_service("hp", task="classification", schema=SCHEMA, policy=Policy())
    return reg


def _window(start: int = 0, stop: int = 600) -> LabelledWindow:
    return LabelledWindow.from_arrays("hp", STREAM.X[start:stop], STREAM.y[start:stop],
                                      feature_names=STREAM.feature_names, start=start)


def _until(pred, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


@pytest.fixture()
def held(registry: Registry, tmp_path: Path) -> Iterator[tuple[Trainer, Path]]:
    marker = tmp_path / "job-started"
    with Trainer(registry, job=functools.partial(held_once, str(marker))) as trainer:
        yield trainer, marker


def test_worker_killed_mid_job_fails_that_job_and_the_next_one_trains(held) -> None:
    trainer, marker = held
    fut = trainer.submit("hp", _window())
    _until(marker.exists, "the job to start in the worker")
    pids = trainer.worker_pids()
    assert pids == (int(marker.read_text()),)  # the pool names the worker running the job
    _kill(pids[0])

    with pytest.raises(TrainingFailed, match=r"^the training worker for 'hp' died during the job "
                       r"\(BrokenProcessPool: .*\); the pool was replaced, so a retry runs on a "
                       r"fresh worker$"):
        fut.result(timeout=WAIT_S)
    assert trainer.health().summary == "rebuilt 1 times"

    res = trainer.train("hp", _window())  # same trainer, no restart
    assert res.version.number == 1 and res.candidate > 0.8
    health = trainer.health()
    assert (health.state, health.rebuilds, health.backend) == ("ok", 1, "local")
    assert health.workers and pids[0] not in health.workers


def test_worker_killed_between_jobs_is_replaced_before_the_next_job(registry) -> None:
    with Trainer(registry) as trainer:
        assert trainer.train("hp", _window()).version.number == 1
        assert trainer.health().summary == "ok"
        (pid,) = trainer.worker_pids()
        _kill(pid)
        # The pool notices the death on its own; health replaces it (no job had to fail).
        _until(lambda: trainer.health().rebuilds == 1, "the broken pool to be replaced")
        assert trainer.health().summary == "rebuilt 1 times"
        res = trainer.train("hp", _window(600, 1200))
        assert res.version.number == 2 and res.version.parent is None


def test_a_fit_that_raises_fails_with_the_error_named(registry) -> None:
    # ``C=-1`` passes ``set_params`` and is rejected by sklearn inside ``fit``, in the worker.
    with Trainer(registry) as trainer, pytest.raises(
        TrainingFailed, match=r"^training 'hp' raised InvalidParameterError: The 'C' parameter "
                              r"of LogisticRegression must be a float in the range \(0\.0, inf\]"
    ):
        trainer.train("hp", _window(), params={"model": "logreg", "C": -1.0})
    assert registry.versions("hp") == []


def test_a_shared_pool_that_breaks_is_reported_broken(registry) -> None:
    """A pool the trainer does not own is not its to replace: health says broken, and a job
    fails at once with a clear error instead of hanging."""
    ex = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        trainer = Trainer(registry, executor=ex)
        assert trainer.train("hp", _window()).version.number == 1
        (pid,) = trainer.worker_pids()
        _kill(pid)
        _until(lambda: trainer.health().state == "broken", "health to report the pool broken")
        assert trainer.health().summary.startswith("broken: BrokenExecutor: ")
        with pytest.raises(TrainingFailed, match=r"^training 'hp' could not start: the training "
                                                 r"pool is broken and could not be replaced"):
            trainer.train("hp", _window())
    finally:
        ex.shutdown(wait=True)
