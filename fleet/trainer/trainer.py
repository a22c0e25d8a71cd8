"""The trainer's service edge: run training jobs in worker processes, register the candidates.

The caller never blocks on training: :meth:`Trainer.submit` snapshots the champion and the window,
hands a pure :class:`~fleet.trainer.job.TrainJob` to a process pool and returns a future. When the
job comes back, the parent registers the candidate with its lineage, then resolves the future.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import skops.io as sio

from fleet.datasets.stream import DriftStream
from fleet.errors import InvalidInput
from fleet.registry import Registry, ServiceRecord, VersionRecord
from fleet.telemetry.window import LabelledWindow
from fleet.trainer import pipeline
from fleet.trainer.job import TrainJob, TrainOutput, check_window, run


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
        executor: a pool to share (e.g. one per process); the trainer then never shuts it down.
        threads: OpenMP/BLAS threads each job may use (keep ``max_workers * threads`` at or
            below the free cores: oversubscribed OpenMP slows gradient boosting badly).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        max_workers: int = 1,
        executor: Executor | None = None,
        threads: int = 1,
    ):
        self.registry = registry
        self.threads = threads
        self._owns_executor = executor is None
        # "spawn": a forked child of a threaded parent (Redis pools, gateways) can deadlock.
        self._executor = executor or ProcessPoolExecutor(
            max_workers=max_workers, mp_context=multiprocessing.get_context("spawn")
        )

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Shut down the pool if this trainer created it."""
        if self._owns_executor:
            self._executor.shutdown(wait=True, cancel_futures=True)

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
        inner = self._executor.submit(run, job)
        outer.add_done_callback(lambda f: inner.cancel() if f.cancelled() else None)
        inner.add_done_callback(
            lambda f: self._finish(outer, f, job, svc, window.bounds, created_by)
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
        job: TrainJob,
        svc: ServiceRecord,
        bounds: dict[str, Any],
        created_by: str,
    ) -> None:
        """Register the job's candidate and resolve ``outer`` (runs in the pool's result thread)."""
        if not outer.set_running_or_notify_cancel():
            return  # the caller cancelled: register nothing
        try:
            result = self._register(inner.result(), job, svc, bounds, created_by)
        except BaseException as exc:  # handed to the caller through the future, not swallowed
            outer.set_exception(exc)
        else:
            outer.set_result(result)

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
