"""Where the new concept of a drift starts: the point after which the error stopped rising.

An abrupt drift raises the champion's error at its onset and the new concept is there from then
on. A gradual or incremental drift raises it over many rows; rows from its early part are a
mixture of old and new concept, and a candidate trained on them is stale when it ships. The
incident graph therefore waits until the error has stopped rising and enough rows of the
*settled* new concept exist, and the retrain uses only those rows. While it waits, the policy's
``stopgap_min_rise`` lets a badly hurt service ship a stopgap first: a model trained on the rows
since the onset as soon as the error is seen to be still rising, then the retrain on the settled
concept (measured on the stopgap's own rows, since the version the drift hit no longer answers)
unless the stopgap already serves the settled concept at the pre-drift error. A rise that does not
last (the settled error is back at the pre-drift error) closes the incident with no retrain.

:func:`settled_start` is pure (numpy on a 0/1 error array); :func:`settling` reads the
champion's labelled rows since an incident's onset and applies it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fleet.incidents import Incident
from fleet.monitor.config import detector_config
from fleet.registry import ServiceRecord
from fleet.schema import Policy
from fleet.telemetry import TelemetryReader
from fleet.telemetry.window import LabelledWindow

Z = 2.0
"""Standard errors a difference of error rates needs to count (one-sided, about 2 %)."""
BLOCK = 100
"""Granularity (rows) of the start point."""


def settled_start(errors: np.ndarray, *, need: int, min_effect: float) -> int | None:
    """Index from which ``errors`` (0/1, oldest first) sit at their recent level, or None.

    None while the error is still rising: the most recent ``need // 2`` errors are higher than
    the ``need // 2`` before them by more than ``min_effect`` and by ``Z`` standard errors.
    Otherwise the start is the earliest multiple of ``BLOCK`` from which the error rate of the
    next ``need // 2`` rows is within that margin of the recent level (either way), i.e. where a
    rise ended (0 for an abrupt change) or a passing spike of errors ended. Fewer than ``need``
    rows: None.

    >>> rng = np.random.default_rng(0)
    >>> ramp = (rng.random(3000) < np.clip(np.arange(3000) / 3000, 0.1, 0.5)).astype(float)
    >>> settled_start(ramp[:1400], need=1000, min_effect=0.02) is None  # still rising
    True
    >>> 1000 <= settled_start(ramp, need=1000, min_effect=0.02) <= 1500  # the ramp ends at 1500
    True
    >>> settled_start((rng.random(2000) < 0.3).astype(float), need=1000, min_effect=0.02)
    0
    >>> spike = (rng.random(2000) < np.where(np.arange(2000) < 600, 0.4, 0.1)).astype(float)
    >>> 500 <= settled_start(spike, need=1000, min_effect=0.02) <= 600  # the spike ends at 600
    True
    """
    e = np.asarray(errors, dtype=np.float64)
    n, half = len(e), need // 2
    if n < need or half < 1:
        return None
    recent = e[n - half:]
    level = float(recent.mean())
    if _higher(level, float(e[n - 2 * half: n - half].mean()), half, min_effect):
        return None
    csum = np.concatenate([[0.0], np.cumsum(e)])
    for start in range(0, n - half + 1, BLOCK):
        rate = float((csum[start + half] - csum[start]) / half)
        # Within the margin either way: rows that erred MORE than the recent level (a transient
        # that has passed) are no more the settled concept than rows that erred less.
        if not _higher(level, rate, half, min_effect) and not _higher(rate, level, half,
                                                                      min_effect):
            return start
    return n - half


def _higher(a: float, b: float, n: int, min_effect: float) -> bool:
    """Whether rate ``a`` beats rate ``b`` (each over ``n`` rows) by the effect and ``Z`` SE."""
    p = (a + b) / 2
    se = math.sqrt(max(p * (1 - p), 1e-9) * 2 / n)
    return a - b > max(min_effect, Z * se)


@dataclass(frozen=True)
class Settling:
    """How far a drift has got, as the champion's labelled rows since the onset show it."""

    rows: int
    """Labelled rows the watched version answered since the onset."""
    since: float | None
    """Start of the settled new concept, once ``need`` settled rows exist (else None)."""
    rising: bool
    """The error is still rising (only judged once ``need`` rows exist)."""
    error: float | None = None
    """Error rate of the settled rows (from ``since`` on), once they exist."""


def settling(
    reader: TelemetryReader,
    service: str,
    *,
    onset_at: float,
    version: int | None,
    need: int,
    min_effect: float,
    most: int,
) -> Settling:
    """Where a drift that began at ``onset_at`` stands, from the rows ``version`` answered.

    Reads at most ``most`` labelled rows answered since ``onset_at`` and keeps those ``version``
    answered (all if None).
    """
    win = reader.labelled_window(service, most, since_ts=onset_at, scan_limit=most * 4)
    keep = np.ones(len(win.y), dtype=bool) if version is None else win.versions == version
    errors = _errors(win)[keep]
    ts = np.asarray(win.ts, dtype=np.float64)[keep]
    n = len(errors)
    start = settled_start(errors, need=need, min_effect=min_effect)
    if start is not None and n - start >= need:
        return Settling(n, float(ts[start]), rising=False, error=float(errors[start:].mean()))
    if n < need:
        # A slow drift's onset is estimated late: judge the rise on the version's last ``need``
        # rows, reaching back before the estimate. (An abrupt change seen early looks like a
        # rise too; a stopgap then is a quick first model, refined once the drift settles.)
        errors = _recent_errors(reader, service, version, need)
    rising = len(errors) >= need and settled_start(
        errors[len(errors) - need:], need=need, min_effect=min_effect) is None
    return Settling(n, None, rising=rising)


def _recent_errors(reader: TelemetryReader, service: str, version: int | None,
                   need: int) -> np.ndarray:
    """0/1 errors of the last ``need`` labelled rows ``version`` answered (all if None)."""
    return _errors(reader.labelled_window(service, need, version=version, scan_limit=need * 4))


def _errors(win: LabelledWindow) -> np.ndarray:
    """0/1 per row of ``win``: the served answer differed from the label."""
    return (np.asarray(win.predictions, dtype=np.float64)
            != np.asarray(win.y, dtype=np.float64)).astype(np.float64)


def stopgap_due(incident: Incident, st: Settling, policy: Policy) -> bool:
    """Whether a drift still under way gets a stopgap now.

    The error is still rising, the drift raised it by at least ``stopgap_min_rise``, and the
    ``min_rows_after_drift`` rows a stopgap trains on exist since the onset. Waiting for all of
    them also tells the drifts apart: an abrupt change has settled by then (its ordinary round
    trains on clean rows of the new concept, one retrain), so only a drift still rising after
    that many rows gets a stopgap. With half the rows, abrupt changes caught early looked like
    rises and got a stopgap that was seldom better than the champion and a second retrain
    (SEA abrupt, three draws: 17 retrains against the oracle's 12; with all the rows, 14).
    """
    least = policy.stopgap_min_rise
    rise = incident.evidence.get("statistic")
    return (st.rising and least is not None and isinstance(rise, int | float) and rise >= least
            and st.rows >= policy.min_rows_after_drift)


def back_to_baseline(incident: Incident, st: Settling | None, policy: Policy) -> bool:
    """Whether the serving version's error on the settled rows is back at the pre-drift error.

    Within the performance detector's ``min_effect`` of the error the champion had before the
    drift (the incident's ``baseline_error``). Before any retrain this means the rise did not
    last (a transient, or a false alarm): retraining would spend a retrain on a concept the
    champion already serves. After a stopgap it means the stopgap already serves the settled
    concept, so a second retrain has little to gain.
    """
    base = incident.evidence.get("baseline_error")
    if st is None or st.error is None or not isinstance(base, int | float):
        return False
    return st.error <= float(base) + detector_config(policy).performance_min_effect


def drift_settling(svc: ServiceRecord, reader: TelemetryReader,
                   incident: Incident) -> Settling | None:
    """Where a performance incident's drift stands, or None (no onset to measure from).

    Watches the version serving now: the one the drift hit, or a stopgap promoted during the
    incident (then from its promotion on, since the version the drift hit no longer answers).
    Uses the service's policy: ``min_rows_after_drift`` settled rows are needed, a rise smaller
    than the performance detector's ``min_effect`` does not count, and at most ``train_window``
    rows since the onset are read.
    """
    if incident.onset_at is None:
        return None
    policy = svc.policy
    onset_at, version = incident.onset_at, incident.version
    if (svc.champion is not None and svc.champion != incident.version
            and svc.champion_since > incident.opened_at):
        onset_at, version = svc.champion_since, svc.champion
    need = policy.min_rows_after_drift
    return settling(
        reader, incident.service, onset_at=onset_at, version=version,
        need=need, min_effect=detector_config(policy).performance_min_effect,
        most=max(policy.train_window, 2 * need))
