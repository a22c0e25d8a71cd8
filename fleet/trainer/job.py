"""One training job as pure data in and out, so it can run in a worker process.

The job fits a candidate on the older part of a labelled window and scores it and the champion on
the SAME most recent rows (the holdout), in time order and without shuffling. It may try a few
nested training windows (the whole, then shorter ones ending at the holdout) and keep the one
the holdout scores best; with ``refit`` the model it returns is then fitted again on that
window plus the holdout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from fleet.errors import InvalidInput
from fleet.registry.trust import load_trusted
from fleet.schema import Task
from fleet.trainer import pipeline


@dataclass(frozen=True)
class TrainJob:
    """Everything a worker needs to train and evaluate one candidate; picklable."""

    service: str
    task: Task
    X: np.ndarray
    """Features in time order, shape ``(n, d)``, NaN for nulls."""
    y: np.ndarray
    """Labels in time order, shape ``(n,)``; NaN (or None) where the label is missing."""
    feature_names: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)
    """Model choice and estimator parameters for :func:`pipeline.build_pipeline`."""
    seed: int = 0
    holdout_fraction: float = 0.2
    """Share of the most recent labelled rows held out to compare candidate and champion."""
    champion: bytes | None = None
    """The champion's skops artifact (already sha256-checked by the registry), or None."""
    windows: int = 1
    """Nested training windows to try (:func:`window_starts`); the holdout picks one."""
    refit: bool = False
    """After the holdout comparison, fit the model that ships on ALL the window's rows. The
    holdout metrics then describe the validation fit (the same recipe on fewer rows); the
    shipped model has also learnt from the newest rows, which on a drifting stream are worth the
    most. Shadow or canary analysis judges the shipped model itself before any promotion."""
    threads: int = 1
    """OpenMP/BLAS threads the job may use. Parallelism comes from the pool's workers; letting
    each fit spin up one thread per core makes it up to 100x slower on a busy machine."""


@dataclass(frozen=True)
class TrainOutput:
    """What a job returns to the parent process."""

    model: Any
    """The fitted candidate pipeline."""
    metric: str
    """Name of the holdout metric: ``accuracy`` or ``mae``."""
    candidate: float
    """Candidate's metric on the holdout."""
    champion: float | None
    """Champion's metric on the same holdout; None when there is no champion."""
    train_rows: int
    """Rows the validation fit learnt from (the holdout metrics describe that fit)."""
    holdout_rows: int
    data_hash: str
    """sha256 of the labelled rows the job used (train and holdout)."""
    wins: int = 0
    """Holdout rows the candidate gets right and the champion wrong (classification)."""
    losses: int = 0
    """Holdout rows the champion gets right and the candidate wrong (classification)."""
    fit_rows: int = 0
    """Rows the returned model was fitted on: ``train_rows``, or all rows when refitted."""
    skipped: int = 0
    """Oldest labelled rows of the window the chosen training window left out."""
    constant: float = float("nan")
    """The constant predictor's metric on the holdout (majority class, or training mean)."""
    learnt: bool = True
    """The candidate beats that constant on the holdout beyond chance."""


WINDOW_MIN_ROWS = 300
"""Fewest training rows a shortened window keeps. Fewer are mostly noise for a tabular model,
and a holdout of a few hundred rows cannot rank such fits reliably."""


def split(n: int, holdout_fraction: float) -> int:
    """Return the index where the holdout starts: the last ``holdout_fraction`` of ``n`` rows.

    At least one row is held out and at least one is left to train on.

    >>> split(100, 0.2), split(10, 0.01)
    (80, 9)
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise InvalidInput(f"holdout_fraction must be in (0, 1), got {holdout_fraction!r}")
    held = min(max(1, round(n * holdout_fraction)), max(n - 1, 0))
    return n - held


def window_starts(cut: int, windows: int) -> list[int]:
    """Where each tried training window of ``[0, cut)`` starts, longest first.

    The whole, then its newest ``(k-1)/k`` ... ``1/k`` for ``k = windows``, skipping any
    shorter than :data:`WINDOW_MIN_ROWS`.

    >>> window_starts(1200, 3), window_starts(600, 3), window_starts(5000, 1)
    ([0, 400, 800], [0, 200], [0])
    """
    starts = [0]
    for i in range(1, windows):
        lo = cut * i // windows
        if cut - lo >= WINDOW_MIN_ROWS:
            starts.append(lo)
    return starts


def check_window(service: str, labelled_rows: int, holdout_fraction: float) -> int:
    """Return where the holdout starts, or raise if too few rows are left to train on.

    Raises:
        InvalidInput: fewer than :data:`pipeline.MIN_ROWS` rows before the holdout.
    """
    cut = split(labelled_rows, holdout_fraction)
    if cut < pipeline.MIN_ROWS:
        raise InvalidInput(
            f"window for {service!r} has {labelled_rows} labelled rows; holding out the most "
            f"recent {labelled_rows - cut} (holdout_fraction={holdout_fraction}) leaves {cut} "
            f"to train on, and training needs at least {pipeline.MIN_ROWS}. "
            "Wait for more labels or widen the window"
        )
    return cut


def run(job: TrainJob) -> TrainOutput:
    """Train the candidate and score it and the champion on the most recent holdout.

    Raises:
        InvalidInput: too few labelled rows, a single class, or bad params.
        IntegrityError: the champion artifact holds types outside the trusted list.
    """
    with threadpool_limits(limits=job.threads):
        return _run(job)


def _run(job: TrainJob) -> TrainOutput:
    X, y = pipeline.labelled(job.X, job.y)
    cut = check_window(job.service, len(y), job.holdout_fraction)
    metric = pipeline.metric_name(job.task)
    candidate, lo, model = _best_window(job, X, y, cut, metric)
    # From here on the window is the chosen one; the holdout rows are the same.
    X, y, cut = X[lo:], y[lo:], cut - lo
    constant, learnt = pipeline.beats_constant(model, y[:cut], X[cut:], y[cut:], job.task)
    champion = None
    wins = losses = 0
    if job.champion is not None:
        old = load_artifact(job.champion)
        champion = pipeline.score(old, X[cut:], y[cut:], job.task)[metric]
        if job.task == "classification":
            wins, losses = pipeline.paired_counts(model, old, X[cut:], y[cut:])
    if job.refit:
        model = pipeline.fit(X, y, task=job.task, params=job.params, seed=job.seed,
                             what=f"window for {job.service!r}")
    return TrainOutput(
        model=model,
        metric=metric,
        candidate=candidate,
        champion=champion,
        train_rows=cut,
        holdout_rows=len(y) - cut,
        data_hash=pipeline.data_hash(X, y),
        wins=wins,
        losses=losses,
        fit_rows=len(y) if job.refit else cut,
        skipped=lo,
        constant=constant,
        learnt=learnt,
    )


def _best_window(
    job: TrainJob, X: np.ndarray, y: np.ndarray, cut: int, metric: str
) -> tuple[float, int, Any]:
    """``(holdout score, start, model)`` of the training window the holdout scores best.

    Windows are tried longest first and a shorter one must score strictly better, so on a tie
    the longer is kept. The chosen score is the best of a few on the same rows, so slightly
    optimistic; the shadow or canary judges the shipped model on live traffic. (Asking a
    shorter window to win beyond chance kept SEA gradual's mixed windows: 0.9874 of the
    oracle against 0.9911.)
    """
    best: tuple[float, int, Any] | None = None
    for lo in window_starts(cut, job.windows):
        try:
            model = pipeline.fit(
                X[lo:cut], y[lo:cut], task=job.task, params=job.params, seed=job.seed,
                what=f"training rows of the window for {job.service!r}",
            )
        except InvalidInput:
            if lo == 0:
                raise
            continue  # e.g. a single class in a short window: it is simply not a choice
        score = pipeline.score(model, X[cut:], y[cut:], job.task)[metric]
        if best is None or pipeline.gain(job.task, score, best[0]) > 0:
            best = (score, lo, model)
    assert best is not None  # the whole window either fitted or raised
    return best


def load_artifact(data: bytes) -> Any:
    """Load skops bytes, trusting only the allowlist of :mod:`fleet.registry.trust`.

    Raises:
        IntegrityError: the bytes name a type off the allowlist.
    """
    return load_trusted(data, what="champion artifact")
