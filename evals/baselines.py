"""Baselines on the same streams as flywheel: fast, in one process, no Redis.

Every baseline sees exactly the rows flywheel's replay sends (the case's data and concept faults
applied the same way, with the same seed), serves them in time order with the SAME model family
(``fleet.trainer.pipeline.fit`` with the case's ``model``, as flywheel's v1 and its retrains)
and trains on at most the SAME window
(the policy's ``train_window`` most recent labelled rows). Labels arrive with no delay, as in the
replay. Each retrain is deployed to all traffic at once: no holdout, no canary, no approval.

- ``static``: the first model forever. It is flywheel's v1 exactly: trained on rows
  ``[0, train_rows)`` (minus the most recent ``holdout_fraction`` when the policy turns
  ``refit_after_holdout`` off).
- ``every K`` (``periodic``): retrain on the last ``train_window`` rows every K rows,
  K in :data:`PERIODS`. On Electricity ``every 500`` is the upper reference.
- ``ADWIN`` / ``HDDM_A``: river's detector (default parameters) on the served model's 0/1 error
  stream; when it fires, retrain on the last ``train_window`` rows and promote at once; the
  detector is rebuilt for the new model. ADWIN is two-sided, so an alarm counts only when the
  error rose (the direction check of :mod:`evals.detection_delay`); HDDM_A is one-sided.
- ``oracle`` (synthetic streams): knows the drift schedule. It retrains as soon as it has seen
  ``min_rows_after_drift`` labelled rows of a drift (at ``onset + m``, on the rows since the onset)
  and, for a drift that takes ``width > 1`` rows (gradual, incremental), once more when it has
  seen ``m`` rows of the completed new concept (at ``onset + width + m``, on the rows since
  ``onset + width``). It never trains on rows it has not seen and never waits for a verdict.

Serving faults: a baseline has no canary, so a fault on ``version: challenger`` hits every
version it deploys after the first, and a fault on ``version: N`` hits its N-th version (v1 is
the first model). A failed request counts as a wrong answer. Baselines never roll back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from river import drift
from sklearn.pipeline import Pipeline

from evals.cases import Case
from evals.detection_delay import DIRECTION_WINDOW
from evals.scorers import Event, SystemRun
from fleet.datasets import DriftStream
from fleet.errors import InvalidInput
from fleet.replay.faults import uniform
from fleet.trainer import pipeline
from fleet.trainer.job import split

PERIODS = (500, 1_000, 2_000, 5_000)
"""K of the periodic baselines (rows between retrains)."""

DETECTORS: dict[str, tuple[Callable[[], object], bool]] = {
    "adwin": (drift.ADWIN, True),
    "hddm_a": (drift.binary.HDDMA, False),
}
"""Baseline name -> (river detector factory with default parameters, needs a direction check)."""

NAMES = {"adwin": "ADWIN", "hddm_a": "HDDM_A"}

ERROR_SALT = 7_919
"""Salt of the counter-based draws that decide which requests a serving fault fails."""

CHUNK = 2_000
"""Rows predicted at once while a detector baseline walks the stream."""


@dataclass(frozen=True)
class Setup:
    """The rows every baseline serves, and the policy numbers they share with flywheel."""

    X: np.ndarray
    """Features after data faults (rows before ``start`` are the clean training rows)."""
    y: np.ndarray
    """Labels after concept faults."""
    start: int
    stop: int
    train_window: int
    min_rows_after_drift: int
    holdout_fraction: float
    refit: bool
    """The policy's ``refit_after_holdout``: flywheel's v1 was fitted on all its rows."""
    seed: int
    params: dict[str, Any]
    """The case's model family and estimator parameters (``Case.model``)."""
    drifts: tuple[tuple[int, int], ...]
    """``(onset, width)`` of every true drift."""
    errors: Callable[[np.ndarray, int], np.ndarray]
    """``errors(rows, version)``: which of these requests a serving fault fails."""

    def fit(self, lo: int, hi: int) -> Pipeline:
        """Fit the case's model on rows ``[lo, hi)``."""
        return pipeline.fit(self.X[lo:hi], self.y[lo:hi], task="classification",
                            params=self.params, seed=self.seed)


def setup(case: Case, stream: DriftStream) -> Setup:
    """Apply the case's faults to ``stream`` exactly as the replay does."""
    sched = case.schedule
    X, y = sched.apply(stream.X, stream.y, index=0, feature_names=stream.feature_names,
                       seed=case.seed)
    # The first model trains on clean rows, as flywheel's v1 does (faults start at train_rows).
    X[: case.train_rows] = stream.X[: case.train_rows]
    y[: case.train_rows] = stream.y[: case.train_rows]
    serving = [f for f in sched.faults if f.serving and f.kind == "errors"]

    def errors(rows: np.ndarray, version: int) -> np.ndarray:
        fail = np.zeros(len(rows), dtype=bool)
        for k, f in enumerate(serving):
            hits = f.version == version or (f.version == "challenger" and version > 1)
            if hits:
                draw = uniform(case.seed, ERROR_SALT + k, rows)
                fail |= f.active(rows) & (draw < float(f.param("error_rate")))
        return fail

    p = case.service_policy
    return Setup(
        X=X, y=y, start=case.train_rows, stop=len(stream), train_window=p.train_window,
        min_rows_after_drift=p.min_rows_after_drift, holdout_fraction=p.holdout_fraction,
        refit=p.refit_after_holdout, seed=case.seed, params=dict(case.model), errors=errors,
        drifts=tuple(zip(stream.drift_points, stream.drift_widths, strict=True)),
    )


def first_model(s: Setup) -> Pipeline:
    """The first model, exactly as flywheel's v1 is fitted.

    On rows ``[0, start)``, or on all but their most recent ``holdout_fraction`` when the policy
    does not refit after the holdout.
    """
    cut = s.start if s.refit else split(s.start, s.holdout_fraction)
    return s.fit(0, cut)


@dataclass
class _Sim:
    """One baseline walking the stream: the serving model, its version and the record."""

    s: Setup
    name: str
    model: object = None
    version: int = 1
    t: int = 0
    correct: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    served: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        s = self.s
        self.model = first_model(s)
        self.t = s.start
        self.correct = np.zeros(s.stop - s.start, dtype=bool)
        self.served = np.zeros(s.stop - s.start, dtype=np.int64)

    def serve(self, stop: int) -> np.ndarray:
        """Serve rows ``[t, stop)`` with the current model; return their 0/1 errors."""
        s, lo = self.s, self.t
        rows = np.arange(lo, stop)
        pred = np.asarray(self.model.predict(s.X[lo:stop]))  # type: ignore[attr-defined]
        ok = (pred == s.y[lo:stop]) & ~s.errors(rows, self.version)
        self.correct[lo - s.start: stop - s.start] = ok
        self.served[lo - s.start: stop - s.start] = self.version
        self.t = stop
        return (~ok).astype(np.float64)

    def retrain(self, since: int = 0) -> bool:
        """Fit on the last ``train_window`` rows (none before ``since``) and deploy at once."""
        s, at = self.s, self.t
        lo = max(0, at - s.train_window, since)
        try:
            self.model = s.fit(lo, at)
        except InvalidInput:
            return False  # too few rows or one class: keep serving the current model
        self.version += 1
        self.events += [Event(at, "retrain", self.version), Event(at, "promote", self.version)]
        return True

    def result(self, wall: float, alarms: list[int] | None = None) -> SystemRun:
        return SystemRun(self.name, self.s.start, self.correct, self.served, self.events,
                         alarms=alarms or [], wall_s=wall, detects=alarms is not None)


def static(s: Setup) -> SystemRun:
    """Never retrain."""
    t0 = time.perf_counter()
    sim = _Sim(s, "static")
    sim.serve(s.stop)
    return sim.result(time.perf_counter() - t0)


def periodic(s: Setup, every: int) -> SystemRun:
    """Retrain on the last ``train_window`` rows every ``every`` rows."""
    t0 = time.perf_counter()
    sim = _Sim(s, f"every {every}")
    for at in range(s.start + every, s.stop, every):
        sim.serve(at)
        sim.retrain()
    sim.serve(s.stop)
    return sim.result(time.perf_counter() - t0)


def detector(s: Setup, which: str) -> SystemRun:
    """Retrain when a river detector fires on the error stream; promote at once."""
    t0 = time.perf_counter()
    factory, two_sided = DETECTORS[which]
    sim = _Sim(s, NAMES[which])
    alarms: list[int] = []
    det, seen = factory(), []
    while sim.t < s.stop:
        lo = sim.t
        hi = min(s.stop, lo + CHUNK)
        # Predict a chunk ahead, then walk it row by row; an alarm cuts the chunk short.
        pred = np.asarray(sim.model.predict(s.X[lo:hi]))  # type: ignore[attr-defined]
        wrong = (pred != s.y[lo:hi]) | s.errors(np.arange(lo, hi), sim.version)
        fired = None
        for i, e in enumerate(wrong.tolist()):
            seen.append(float(e))
            det.update(int(e))  # type: ignore[attr-defined]
            if det.drift_detected and (not two_sided or _rose(seen)):  # type: ignore[attr-defined]
                fired = lo + i
                break
        end = hi if fired is None else fired + 1
        sim.serve(end)
        if fired is not None:
            alarms.append(fired)
            if sim.t < s.stop and sim.retrain():
                det, seen = factory(), []
    return sim.result(time.perf_counter() - t0, alarms)


def _rose(errors: list[float]) -> bool:
    """Direction check: the error of the last events exceeds the error before them."""
    n = len(errors)
    w = min(DIRECTION_WINDOW, n // 2)
    if w < 10:
        return False
    recent = sum(errors[n - w:]) / w
    before = sum(errors[: n - w]) / (n - w)
    return recent > before


def oracle_points(s: Setup) -> list[tuple[int, int]]:
    """``(retrain row, first training row)`` of the oracle, in order."""
    m = s.min_rows_after_drift
    out: list[tuple[int, int]] = []
    for k, (p, w) in enumerate(s.drifts):
        nxt = s.drifts[k + 1][0] if k + 1 < len(s.drifts) else s.stop
        wanted = [(p + m, p)] + ([(p + w + m, p + w)] if w > 1 else [])
        out += [(at, since) for at, since in wanted if at < nxt]
    return [(at, since) for at, since in out if s.start < at < s.stop]


def oracle(s: Setup) -> SystemRun:
    """Retrain ``min_rows_after_drift`` rows after each true drift (and after it completes)."""
    t0 = time.perf_counter()
    sim = _Sim(s, "oracle")
    for at, since in oracle_points(s):
        sim.serve(at)
        sim.retrain(since=since)
    sim.serve(s.stop)
    return sim.result(time.perf_counter() - t0)


def run_baselines(case: Case, stream: DriftStream, names: list[str]) -> Iterator[SystemRun]:
    """Run the named baseline families on the case's stream, one system at a time."""
    s = setup(case, stream)
    for name in names:
        if name == "static":
            yield static(s)
        elif name == "periodic":
            for k in PERIODS:
                yield periodic(s, k)
        elif name in DETECTORS:
            yield detector(s, name)
        elif name == "oracle":
            yield oracle(s)
        else:  # the case schema lists the allowed names
            raise InvalidInput(f"unknown baseline {name!r}")
