"""One-sided Bernoulli CUSUM on labelled 0/1 error streams, vectorised over services.

Only a rise in the error rate alarms; the baseline rate is learnt after each reset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

import numpy as np

_PRIOR = (0.5, 0.5)
"""Jeffreys pseudo-counts (errors, non-errors) so a baseline of 0 or 1 never gives log(0)."""
_P_MAX = 1.0 - 1e-6


@dataclass(frozen=True)
class CusumResult:
    """What one :meth:`ErrorRateCusum.update` saw, one entry per service.

    Event indices count every event a service has sent since the detector was built, from 0.
    """

    alarm: np.ndarray
    """``(S,)`` bool: the error rate rose during this batch."""
    alarm_at: np.ndarray
    """``(S,)`` int64: index of the event that raised the (first) alarm; -1 without one."""
    onset: np.ndarray
    """``(S,)`` int64: estimated first event of the change (the statistic was last 0 just
    before it); -1 without an alarm."""
    baseline: np.ndarray
    """``(S,)`` float: error rate before the change (at the alarm), else the current baseline."""
    current: np.ndarray
    """``(S,)`` float: error rate from ``onset`` to ``alarm_at``; NaN without an alarm."""
    statistic: np.ndarray
    """``(S,)`` float: largest CUSUM value at the end of the batch (alarm threshold units)."""
    n_alarms: np.ndarray
    """``(S,)`` int64: alarms in this batch (more than 1 only when a batch outlasts ``warmup``)."""


class ErrorRateCusum:
    """Page's CUSUM of Bernoulli log-likelihood ratios, at a few effect sizes, per service.

    Each service learns its baseline error rate ``p0`` as the mean of the first
    ``baseline_rows`` errors after its last reset, then holds it. Once ``warmup`` events are in,
    every new 0/1 error adds ``log P(x | p1) / P(x | p0)`` to a statistic kept at or above 0,
    for ``p1 = p0 + e`` with ``e`` in ``min_effect * (2, 4, 8, ...)`` (``scales`` values). The
    first statistic to exceed ``threshold`` raises an alarm, the change is dated to the event
    after that statistic was last 0, and the service resets. Several effect sizes approximate a
    generalised likelihood ratio test: small rises are caught by the smallest ``e``, large ones
    fast by the largest.

    Why the baseline is held: a running mean over all events absorbs a change as it happens. A
    model whose error rises by 3 points drags a running ``p0`` up with it, the rise left over
    falls under ``min_effect`` and the statistic never reaches the threshold, however long the
    change lasts (a SEA threshold move went unseen for 8,000 rows that way).

    Why a minimum effect: a statistic built for ``p1 = p0 + 2 * min_effect`` drifts *down*
    while the error rate stays below about ``p0 + min_effect``, so a wiggle smaller than that
    never alarms, however many events arrive. The false-alarm rate per event is at most about
    ``scales * exp(-threshold)`` (Wald's bound; measured: about 1e-6 per event at the defaults).

    Args:
        n_services: services tracked; service ``i`` is row ``i`` of every batch.
        threshold: alarm level of the log-likelihood ratio (higher: fewer false alarms, later
            detection).
        min_effect: smallest rise of the error rate (absolute, 0..1) worth an alarm.
        scales: effect sizes tried, doubling from ``2 * min_effect``.
        warmup: events after a reset spent learning the baseline before any alarm.
        baseline_rows: events after a reset the baseline is the mean of (at least ``warmup``);
            until then it is the running mean of the events so far.

    Example:
        >>> rng = np.random.default_rng(7)
        >>> errors = (rng.random((2, 4000)) < 0.1).astype(float)
        >>> errors[1, 2500:] = rng.random(1500) < 0.3   # service 1 degrades at event 2500
        >>> det = ErrorRateCusum(2).update(errors)
        >>> det.result.alarm.tolist(), int(det.result.alarm_at[1]), int(det.result.onset[1])
        ([False, True], 2603, 2507)
        >>> round(float(det.result.baseline[1]), 3), round(float(det.result.current[1]), 3)
        (0.104, 0.289)
    """

    def __init__(
        self,
        n_services: int,
        *,
        threshold: float = 11.0,
        min_effect: float = 0.02,
        scales: int = 3,
        warmup: int = 300,
        baseline_rows: int = 2_000,
    ):
        if n_services < 0 or scales < 1 or warmup < 1 or baseline_rows < warmup:
            raise ValueError(
                f"need n_services >= 0, scales >= 1, warmup >= 1, baseline_rows >= warmup; got "
                f"{n_services=}, {scales=}, {warmup=}, {baseline_rows=}"
            )
        if not 0.0 < min_effect < 0.5:
            raise ValueError(f"min_effect is an error-rate rise in (0, 0.5); got {min_effect!r}")
        self.n_services = n_services
        self.threshold = threshold
        self.min_effect = min_effect
        self.scales = scales
        self.warmup = warmup
        self.baseline_rows = baseline_rows
        self._reset()

    def _reset(self) -> None:
        s, k = self.n_services, self.scales
        self._seen = np.zeros(s, dtype=np.int64)
        self._n = np.zeros(s, dtype=np.int64)
        self._errors = np.zeros(s, dtype=np.float64)
        self._base_errors = np.zeros(s, dtype=np.float64)  # errors among the first baseline_rows
        self._stat = np.zeros((s, k), dtype=np.float64)
        self._zero_n = np.zeros((s, k), dtype=np.int64)
        self._zero_e = np.zeros((s, k), dtype=np.float64)
        self._result: CusumResult | None = None

    @property
    def effects(self) -> np.ndarray:
        """The error-rate rises ``e`` the parallel statistics are tuned to, shape ``(scales,)``."""
        return self.min_effect * 2.0 ** np.arange(1, self.scales + 1)

    @property
    def result(self) -> CusumResult | None:
        """Outcome of the last :meth:`update` (``None`` before the first)."""
        return self._result

    def reset(self, services: np.ndarray | None = None) -> Self:
        """Forget the baseline of some services (all by default), e.g. after a new version.

        Args:
            services: boolean mask or integer indices of the services to reset.
        """
        rows = np.arange(self.n_services) if services is None else np.asarray(services)
        self._forget(rows)
        return self

    def _forget(self, rows: np.ndarray) -> None:
        self._n[rows] = 0
        self._errors[rows] = 0.0
        self._base_errors[rows] = 0.0
        self._stat[rows] = 0.0
        self._zero_n[rows] = 0
        self._zero_e[rows] = 0.0

    def update(self, errors: np.ndarray) -> Self:
        """Feed a batch of 0/1 errors per service; the outcome is in :attr:`result`.

        Args:
            errors: shape ``(S,)`` (one event each) or ``(S, T)`` in time order; NaN marks
                "no event" so services with fewer events can share one padded array.
        """
        x = np.asarray(errors, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[0] != self.n_services:
            raise ValueError(f"errors must be shaped ({self.n_services}, T); got {x.shape}")
        if np.any((x != 0) & (x != 1) & ~np.isnan(x)):
            raise ValueError("errors must be 0 (right), 1 (wrong) or NaN (no event)")
        s = self.n_services
        alarm_at = np.full(s, -1, dtype=np.int64)
        onset = np.full(s, -1, dtype=np.int64)
        current = np.full(s, np.nan)
        baseline = np.full(s, np.nan)
        n_alarms = np.zeros(s, dtype=np.int64)
        rows = np.arange(s if x.shape[1] else 0)
        while rows.size:
            hit, t, ev = self._scan(rows, x)
            first = hit & (alarm_at[rows] < 0)
            for name, arr in (("at", alarm_at), ("onset", onset), ("cur", current),
                              ("base", baseline)):
                arr[rows[first]] = ev[name][first]
            n_alarms[rows[hit]] += 1
            # An alarmed service restarts from a fresh baseline on the events after the alarm.
            rows, t = rows[hit], t[hit]
            x = x[hit].copy()
            x[np.arange(x.shape[1])[None, :] <= t[:, None]] = np.nan
            self._forget(rows)
        quiet = alarm_at < 0
        baseline[quiet] = self._baseline(np.arange(s))[quiet]
        self._result = CusumResult(
            alarm=~quiet, alarm_at=alarm_at, onset=onset, baseline=baseline, current=current,
            statistic=self._stat.max(axis=1), n_alarms=n_alarms,
        )
        return self

    def _baseline(self, rows: np.ndarray) -> np.ndarray:
        a, b = _PRIOR
        n = np.minimum(self._n[rows], self.baseline_rows)
        return (self._base_errors[rows] + a) / (n + a + b)

    def _scan(self, rows: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        """Run ``x`` (rows of the batch) through the services ``rows``; stop each at its alarm.

        Page's recursion ``S_t = max(0, S_{t-1} + z_t)`` equals ``D_t - min(0, min_u D_u)``
        with ``D = S_prev + cumsum(z)``, so a whole batch is a few cumulative sums.
        """
        a, b = _PRIOR
        valid = ~np.isnan(x)
        xv = np.where(valid, x, 0.0)
        count = self._n[rows, None] + np.cumsum(valid, axis=1)
        errs = self._errors[rows, None] + np.cumsum(xv, axis=1)
        n_prev = count - valid
        # The baseline learns from the first ``baseline_rows`` events since the reset only.
        learned = np.where(valid & (count <= self.baseline_rows), xv, 0.0)
        berrs = self._base_errors[rows, None] + np.cumsum(learned, axis=1)
        p0 = (berrs - learned + a) / (
            np.minimum(n_prev, self.baseline_rows) + a + b)
        p1 = np.minimum(p0[..., None] + self.effects, _P_MAX)
        # log P(x | p1) / P(x | p0): one log per element, of the likelihood of what happened.
        err = (xv > 0)[..., None]
        z = np.log(np.where(err, p1, 1.0 - p1) / np.where(err, p0[..., None], 1.0 - p0[..., None]))
        live = valid & (n_prev >= self.warmup)
        z *= live[..., None]
        d = self._stat[rows, None, :] + np.cumsum(z, axis=1)
        stat = d - np.minimum.accumulate(np.minimum(d, 0.0), axis=1)
        # Counts since reset where each statistic was last 0: the change starts right after.
        pos = np.arange(x.shape[1])[None, :, None]
        last = np.maximum.accumulate(np.where(stat <= 0.0, pos, -1), axis=1)
        at_last = np.maximum(last, 0)
        zero_n = np.where(last >= 0, np.take_along_axis(count[..., None], at_last, axis=1),
                          self._zero_n[rows, None, :])
        zero_e = np.where(last >= 0, np.take_along_axis(errs[..., None], at_last, axis=1),
                          self._zero_e[rows, None, :])
        over = (stat > self.threshold).any(axis=2) & live
        hit = over.any(axis=1)
        t = np.where(hit, over.argmax(axis=1), x.shape[1] - 1)
        r = np.arange(rows.size)
        k = stat[r, t].argmax(axis=1)
        n_t, e_t = count[r, t], errs[r, t]
        z_n, z_e = zero_n[r, t, k], zero_e[r, t, k]
        first = self._seen[rows] - self._n[rows]  # index of the first event since reset
        ev = {
            "at": first + n_t - 1,
            "onset": first + z_n,
            "cur": (e_t - z_e) / np.maximum(n_t - z_n, 1),
            "base": (z_e + a) / (z_n + a + b),
        }
        keep = ~hit
        kr = rows[keep]
        self._seen[kr] = first[keep] + count[keep, -1]
        self._seen[rows[hit]] = ev["at"][hit] + 1
        self._n[kr] = count[keep, -1]
        self._errors[kr] = errs[keep, -1]
        self._base_errors[kr] = berrs[keep, -1]
        self._stat[kr] = stat[keep, -1]
        self._zero_n[kr] = zero_n[keep, -1]
        self._zero_e[kr] = zero_e[keep, -1]
        return hit, t, ev

    def to_dict(self) -> dict[str, Any]:
        """Hyperparameters and running state as JSON-safe plain lists (Redis round-trip)."""
        return {
            "params": {
                "n_services": self.n_services, "threshold": self.threshold,
                "min_effect": self.min_effect, "scales": self.scales, "warmup": self.warmup,
                "baseline_rows": self.baseline_rows,
            },
            "state": {
                "seen": self._seen.tolist(), "n": self._n.tolist(),
                "errors": self._errors.tolist(), "base_errors": self._base_errors.tolist(),
                "stat": self._stat.tolist(),
                "zero_n": self._zero_n.tolist(), "zero_e": self._zero_e.tolist(),
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorRateCusum:
        """Rebuild a detector saved with :meth:`to_dict`."""
        det = cls(**data["params"])
        st = data["state"]
        k = det.scales
        det._seen = np.asarray(st["seen"], dtype=np.int64).reshape(det.n_services)
        det._n = np.asarray(st["n"], dtype=np.int64).reshape(det.n_services)
        det._errors = np.asarray(st["errors"], dtype=np.float64).reshape(det.n_services)
        # State saved before the baseline was held: its running mean stands in for the baseline.
        base = st.get("base_errors")
        det._base_errors = (np.asarray(base, dtype=np.float64).reshape(det.n_services)
                            if base is not None else
                            det._errors * np.minimum(det._n, det.baseline_rows)
                            / np.maximum(det._n, 1))
        det._stat = np.asarray(st["stat"], dtype=np.float64).reshape(det.n_services, k)
        det._zero_n = np.asarray(st["zero_n"], dtype=np.int64).reshape(det.n_services, k)
        det._zero_e = np.asarray(st["zero_e"], dtype=np.float64).reshape(det.n_services, k)
        return det
