"""The trainer's service edge: run training jobs in worker processes, register the candidates.

The caller never blocks on training: :meth:`Trainer.submit` snapshots the champion and the window,
hands a pure :class:`~fleet.trainer.job.TrainJob` to a process pool and returns a future. When the
job comes back, the parent registers the candidate with its lineage, then resolves the future.
A job that raises, or whose worker dies, fails with :class:`~fleet.errors.TrainingFailed`; a
broken pool is replaced (:class:`~fleet.trainer.pool.WorkerPool`), so the next job runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, CancelledError, Executor, Future
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import skops.io as sio

from fleet.datasets.stream import DriftStream
from fleet.errors import FleetError, InvalidInput, TrainingFailed
from fleet.registry import Registry, ServiceRecord, VersionRecord
from fleet.telemetry.window import LabelledWindow
from fleet.trainer import pipeline
from fleet.trainer.job import TrainJob, TrainOutput, check_window, run
from fleet.trainer.pool import ExecutorFactory, TrainerHealth, WorkerPool, local_pool


@dataclass(frozen=True)
class TrainResult:
    """A registered candidate and how it compared with the champion on the recent holdout."""

    version: VersionRecord
    """The candidate as registered (status ``candidate``), with its lineage."""
    metric: str
    """Holdout metric name: ``accuracy`` (higher is better) or ``mae`` (lower is better)."""
    candidate: float
    """Candidate's holdout metric."""
    champion: float | None
    """Champion's metric on the same holdout; None when the service had no champion."""
    improvement: float | None
    """Candidate's gain over the champion in metric units (positive = better); None without one."""
    holdout_rows: int
    train_rows: int
    better: bool
    """``improvement >= policy.min_improvement`` and, for classification, significant on the
    paired holdout rows (:func:`pipeline.significant_gain`); True when there was no champion."""
    learnt: bool = True
    """It beats the constant predictor on the holdout beyond chance
    (:func:`pipeline.beats_constant`)."""


class Trainer:
    """Trains candidates in a process pool and registers them with lineage.

    Args:
        registry: where services, champions and new versions live.
        max_workers: size of the pool the trainer creates when no ``executor`` is given.
        executor: a pool to share (e.g. one per process); the trainer then never shuts it down
            nor replaces it when it breaks.
        threads: OpenMP/BLAS threads each job may use (keep ``max_workers * threads`` at or
            below the free cores: oversubscribed OpenMP slows gradient boosting badly).
        pool: builds the executor (and a fresh one whenever it breaks), e.g. a Dask client's
            ``get_executor``; default a local spawn process pool of ``max_workers``.
        job: the function a worker runs on each :class:`TrainJob` (must be importable by the
            worker, e.g. module-level); default :func:`fleet.trainer.job.run`.
        backend: the executor's name in :meth:`health` (``local``, ``dask``).
        on_close: called once the pool is shut down (e.g. to close a cluster client).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        max_workers: int = 1,
        executor: Executor | None = None,
        threads: int = 1,
        pool: ExecutorFactory | None = None,
        job: Callable[[TrainJob], TrainOutput] = run,
        backend: str | None = None,
        on_close: Callable[[], None] | None = None,
    ):
        self.registry = registry
        self.threads = threads
        self.job = job
        factory = pool or functools.partial(local_pool, max_workers)
        self._pool = WorkerPool(None if executor is not None else factory, executor=executor,
                                backend=backend, on_close=on_close)

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Shut down the pool if this trainer created it."""
        self._pool.close()

    def health(self) -> TrainerHealth:
        """``ok`` / ``rebuilt N times`` / ``broken``: whether training jobs can run now."""
        return self._pool.health()

    def worker_pids(self) -> tuple[int, ...]:
        """Process ids of the local pool's workers (empty for thread or cluster executors)."""
        return self._pool.worker_pids()

    def submit(
        self,
        service: str,
        window: LabelledWindow,
        *,
        params: dict[str, Any] | None = None,
        seed: int = 0,
        created_by: str = "trainer",
        windows: int = 1,
    ) -> Future[TrainResult]:
        """Start training a candidate on ``window``; return at once with a future.

        The champion is fixed now (it becomes the candidate's ``parent``); cancelling the future
        before the job finishes means nothing is registered.

        Args:
            service: a registered service.
            window: labelled rows in time order; its most recent ``policy.holdout_fraction``
                is held out to compare candidate and champion.
            params: model family and estimator parameters (see ``pipeline.build_pipeline``);
                None: the champion's recipe (its family and estimator parameters), so a retrain
                changes the data and nothing else; the task's default family without one.
            seed: makes the model reproducible; recorded in the version's params.
            created_by: actor recorded on the version and in the audit trail.
            windows: nested training windows to try, the holdout picking one
                (:func:`~fleet.trainer.job.window_starts`; ``Policy.window_search``); 1: the
                whole window.

        Raises:
            UnknownService: the service is not registered.
            InvalidInput: columns do not match the schema, too few labelled rows, a single class.
        """
        svc = self.registry.service(service)
        if params is None and svc.champion is not None:
            params = recipe(self.registry.version(service, svc.champion).params)
        _check_columns(svc, window)
        # Reject a hopeless window here, in the caller, rather than through the future later.
        X, y = pipeline.labelled(window.X, window.y)
        cut = check_window(service, len(y), svc.policy.holdout_fraction)
        pipeline.check_trainable(
            y[:cut], task=svc.task, what=f"training rows of the window for {service!r}"
        )
        champion = None
        if svc.champion is not None:
            # load_model checks the sha256; the worker gets verified bytes, never a file path.
            champion = sio.dumps(self.registry.load_model(service, svc.champion))
        job = TrainJob(
            service=service, task=svc.task, X=X, y=y, feature_names=tuple(svc.schema_.names),
            params=dict(params or {}), seed=seed,
            holdout_fraction=svc.policy.holdout_fraction, champion=champion,
            windows=windows, refit=svc.policy.refit_after_holdout,
            threads=self.threads,
        )
        outer: Future[TrainResult] = Future()
        try:
            inner, used = self._pool.submit(self.job, job)
        except BrokenExecutor as exc:
            raise TrainingFailed(
                f"training {service!r} could not start: the training pool is broken and could "
                f"not be replaced ({type(exc).__name__}: {exc}); see the trainer's health"
            ) from exc
        outer.add_done_callback(lambda f: inner.cancel() if f.cancelled() else None)
        inner.add_done_callback(
            lambda f: self._finish(outer, f, used, job, svc, window.bounds, created_by)
        )
        return outer

    def train(
        self,
        service: str,
        window: LabelledWindow,
        *,
        params: dict[str, Any] | None = None,
        seed: int = 0,
        created_by: str = "trainer",
        windows: int = 1,
    ) -> TrainResult:
        """Like :meth:`submit`, but wait for the result."""
        return self.submit(
            service, window, params=params, seed=seed, created_by=created_by, windows=windows
        ).result()

    def train_from_dataset(
        self,
        service: str,
        stream: DriftStream,
        start: int = 0,
        stop: int | None = None,
        *,
        params: dict[str, Any] | None = None,
        seed: int = 0,
        created_by: str = "trainer",
    ) -> TrainResult:
        """Train on rows ``[start, stop)`` of a dataset and wait for the result.

        The version's training window reads ``{"from": "<stream>:row-<start>", "to": ...}``.

        Raises:
            InvalidInput: an empty or out-of-range slice, or any :meth:`submit` error.
        """
        stop = len(stream) if stop is None else stop
        if not 0 <= start < stop <= len(stream):
            raise InvalidInput(
                f"rows [{start}, {stop}) are not a slice of {stream.name!r} "
                f"({len(stream)} rows)"
            )
        window = LabelledWindow.from_arrays(
            service, stream.X[start:stop], stream.y[start:stop],
            feature_names=stream.feature_names, start=start,
        )
        window = replace(
            window, first_id=f"{stream.name}:row-{start}", last_id=f"{stream.name}:row-{stop - 1}"
        )
        return self.train(service, window, params=params, seed=seed, created_by=created_by)

    def _finish(
        self,
        outer: Future[TrainResult],
        inner: Future[TrainOutput],
        used: Executor,
        job: TrainJob,
        svc: ServiceRecord,
        bounds: dict[str, Any],
        created_by: str,
    ) -> None:
        """Register the job's candidate and resolve ``outer`` (runs in the pool's result thread)."""
        if not outer.set_running_or_notify_cancel():
            return  # the caller cancelled: register nothing
        try:
            out = self._outcome(inner, used, job.service)
            result = self._register(out, job, svc, bounds, created_by)
        except BaseException as exc:  # handed to the caller through the future, not swallowed
            outer.set_exception(exc)
        else:
            outer.set_result(result)

    def _outcome(self, inner: Future[TrainOutput], used: Executor, service: str) -> TrainOutput:
        """The job's output; its failure as :class:`TrainingFailed` naming the error.

        Domain errors (too few rows, bad params, an untrusted champion) pass unchanged.
        """
        try:
            return inner.result()
        except (FleetError, CancelledError):
            raise
        except BrokenExecutor as exc:
            fixed = self._pool.replace(used, exc)
            raise TrainingFailed(
                f"the training worker for {service!r} died during the job "
                f"({type(exc).__name__}: {exc}); "
                + ("the pool was replaced, so a retry runs on a fresh worker" if fixed else
                   "the pool could not be replaced; see the trainer's health")
            ) from exc
        except Exception as exc:
            raise TrainingFailed(
                f"training {service!r} raised {type(exc).__name__}: {str(exc)[:400]}"
            ) from exc

    def _register(
        self,
        out: TrainOutput,
        job: TrainJob,
        svc: ServiceRecord,
        bounds: dict[str, Any],
        created_by: str,
    ) -> TrainResult:
        m = out.metric
        metrics: dict[str, float] = {
            f"holdout_{m}": out.candidate,
            "holdout_rows": float(out.holdout_rows),
            "train_rows": float(out.train_rows),
            "fit_rows": float(out.fit_rows),
            f"constant_holdout_{m}": out.constant,
        }
        improvement = None
        if out.champion is not None:
            improvement = pipeline.gain(job.task, out.candidate, out.champion)
            metrics[f"champion_holdout_{m}"] = out.champion
            metrics["improvement"] = improvement
        params = {
            "model": pipeline.MODELS[job.task][0], **job.params,
            "seed": job.seed, "holdout_fraction": job.holdout_fraction, "refit": job.refit,
        }
        version = self.registry.add_version(
            job.service, out.model, created_by=created_by,
            training_window={**bounds, "skipped": out.skipped},
            data_hash=out.data_hash, params=params, metrics=metrics, parent=svc.champion,
        )
        return TrainResult(
            version=version,
            metric=m,
            candidate=out.candidate,
            champion=out.champion,
            improvement=improvement,
            holdout_rows=out.holdout_rows,
            train_rows=out.train_rows,
            learnt=out.learnt,
            better=improvement is None or (
                improvement >= svc.policy.min_improvement
                # A margin on a few hundred holdout rows is noise unless the paired
                # wins/losses say otherwise (classification; mae has no such count).
                and (job.task != "classification"
                     or pipeline.significant_gain(out.wins, out.losses))),
        )


RUN_KEYS = ("seed", "holdout_fraction", "refit")
"""Keys of a version's ``params`` that describe the training run, not the model."""


def recipe(params: dict[str, Any]) -> dict[str, Any]:
    """The model family and estimator parameters in a version's recorded ``params``.

    >>> recipe({"model": "logreg", "C": 0.5, "seed": 3, "holdout_fraction": 0.2, "refit": True})
    {'model': 'logreg', 'C': 0.5}
    """
    return {k: v for k, v in params.items() if k not in RUN_KEYS}


def _check_columns(svc: ServiceRecord, window: LabelledWindow) -> None:
    names = svc.schema_.names
    X = np.asarray(window.X)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise InvalidInput(
            f"window for {svc.name!r} has feature matrix of shape {X.shape}; "
            f"the service's schema has {len(names)} features {names}"
        )
    if window.feature_names and list(window.feature_names) != names:
        raise InvalidInput(
            f"window for {svc.name!r} has features {list(window.feature_names)}; "
            f"the service's schema expects {names} in that order"
        )
