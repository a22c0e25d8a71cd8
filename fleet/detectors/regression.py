"""Latency (p50/p95/p99) and error-rate regressions of a current window against a reference.

Rows are groups, one per (service, version), so a new version is compared with the window the
previous one served, and a running version with its own past.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from fleet.detectors.histogram import histogram_quantiles, nan_quantiles
from fleet.detectors.twosample import z_rise_p_value

QUANTILES = (0.5, 0.95, 0.99)
"""Latency quantiles compared, in this order (p50, p95, p99)."""


@dataclass(frozen=True)
class WindowStats:
    """What a window of requests looked like, per group; ``G`` groups."""

    n: np.ndarray
    """``(G,)`` int: requests."""
    errors: np.ndarray
    """``(G,)`` int: failed requests (or wrong predictions, if that is what is compared)."""
    latency: np.ndarray
    """``(G, 3)`` float: p50, p95 and p99 latency in ms (NaN without requests)."""

    @classmethod
    def from_samples(cls, latency_ms: np.ndarray, errors: np.ndarray) -> WindowStats:
        """Summarise raw requests.

        Args:
            latency_ms: ``(G, N)`` latencies, NaN-padded where a group has fewer requests.
            errors: ``(G, N)`` 0/1 per request, NaN-padded the same way.

        Example:
            >>> lat = np.array([[10.0, 20.0, 30.0, np.nan]])
            >>> WindowStats.from_samples(lat, np.array([[0, 1, 0, np.nan]])).latency.tolist()
            [[20.0, 29.0, 29.8]]
        """
        lat = np.asarray(latency_ms, dtype=np.float64)
        err = np.asarray(errors, dtype=np.float64)
        return cls(
            n=(~np.isnan(lat)).sum(axis=1),
            errors=np.nansum(err, axis=1).astype(np.int64),
            latency=nan_quantiles(lat, QUANTILES, axis=1),
        )

    @classmethod
    def from_histogram(
        cls, n: np.ndarray, errors: np.ndarray, latency_counts: np.ndarray, edges: np.ndarray
    ) -> WindowStats:
        """Summarise a window kept as a latency histogram on fixed ``edges`` (inner edges, ms).

        Example:
            >>> WindowStats.from_histogram(np.array([20]), np.array([1]),
            ...     np.array([[0, 10, 10, 0]]), np.array([0.0, 10.0, 20.0])).latency.tolist()
            [[10.0, 19.0, 19.8]]
        """
        return cls(
            n=np.asarray(n), errors=np.asarray(errors),
            latency=histogram_quantiles(latency_counts, edges, list(QUANTILES)),
        )


@dataclass(frozen=True)
class RegressionResult:
    """Per group: how far the current window moved and whether that is a regression."""

    latency_ratio: np.ndarray
    """``(G, 3)``: current / reference latency at p50, p95, p99."""
    latency_delta_ms: np.ndarray
    """``(G, 3)``: current - reference latency at p50, p95, p99, in ms."""
    latency: np.ndarray
    """``(G, 3)`` bool: that quantile regressed (both the relative and absolute limits)."""
    error_rate_reference: np.ndarray
    """``(G,)``: reference error rate."""
    error_rate_current: np.ndarray
    """``(G,)``: current error rate."""
    error_p_value: np.ndarray
    """``(G,)``: one-sided two-proportion z-test p-value of "current is higher"."""
    error: np.ndarray
    """``(G,)`` bool: the error rate regressed (relative, absolute and significant)."""
    enough: np.ndarray
    """``(G,)`` bool: both windows had ``min_samples`` requests; no signal otherwise."""

    @property
    def any(self) -> np.ndarray:
        """``(G,)`` bool: a latency quantile or the error rate regressed."""
        return self.latency.any(axis=1) | self.error


class Regression:
    """Compare current to reference windows with relative and absolute limits.

    A latency quantile regresses when it grew by more than ``latency_rel`` (relative) *and*
    ``latency_abs_ms``: the relative limit ignores fast services' jitter of a millisecond, the
    absolute one ignores small relative changes of slow services. The error rate regresses when
    it rose by more than ``error_abs`` and ``error_rel`` and a one-sided z-test agrees at
    ``alpha``, so a handful of errors in a quiet window does not count.

    Args:
        latency_rel: relative growth of a latency quantile that counts (0.2 = +20 %).
        latency_abs_ms: absolute growth in ms that counts.
        error_rel: relative growth of the error rate that counts (0.5 = +50 %).
        error_abs: absolute growth of the error rate that counts.
        alpha: significance of the error-rate test.
        min_samples: requests each window needs before anything is flagged.

    Example:
        >>> ref = WindowStats(np.array([1000, 1000]), np.array([10, 10]),
        ...                   np.array([[20.0, 50.0, 80.0], [20.0, 50.0, 80.0]]))
        >>> cur = WindowStats(np.array([1000, 1000]), np.array([12, 60]),
        ...                   np.array([[21.0, 90.0, 150.0], [20.0, 52.0, 85.0]]))
        >>> r = Regression().update(ref, cur).result
        >>> r.latency.tolist(), r.error.tolist()
        ([[False, True, True], [False, False, False]], [False, True])
    """

    def __init__(
        self,
        *,
        latency_rel: float = 0.2,
        latency_abs_ms: float = 10.0,
        error_rel: float = 0.5,
        error_abs: float = 0.02,
        alpha: float = 0.01,
        min_samples: int = 200,
    ):
        self.latency_rel = latency_rel
        self.latency_abs_ms = latency_abs_ms
        self.error_rel = error_rel
        self.error_abs = error_abs
        self.alpha = alpha
        self.min_samples = min_samples
        self._result: RegressionResult | None = None

    @property
    def result(self) -> RegressionResult | None:
        """Outcome of the last :meth:`update` (``None`` before the first)."""
        return self._result

    def update(self, reference: WindowStats, current: WindowStats) -> Self:
        """Compare the two windows group by group."""
        n_ref = np.asarray(reference.n, dtype=np.float64)
        n_cur = np.asarray(current.n, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = current.latency / reference.latency
            r_ref = reference.errors / n_ref
            r_cur = current.errors / n_cur
        delta = current.latency - reference.latency
        enough = (n_ref >= self.min_samples) & (n_cur >= self.min_samples)
        p = z_rise_p_value(reference.errors, n_ref, current.errors, n_cur)
        error = (
            (r_cur - r_ref > self.error_abs)
            & (r_cur > r_ref * (1 + self.error_rel))
            & (p < self.alpha)
            & enough
        )
        self._result = RegressionResult(
            latency_ratio=ratio, latency_delta_ms=delta,
            latency=(ratio > 1 + self.latency_rel) & (delta > self.latency_abs_ms)
            & enough[:, None],
            error_rate_reference=r_ref, error_rate_current=r_cur, error_p_value=p, error=error,
            enough=enough,
        )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Hyperparameters as a JSON-safe dict (this detector keeps no running state)."""
        return {"params": {k: getattr(self, k) for k in (
            "latency_rel", "latency_abs_ms", "error_rel", "error_abs", "alpha", "min_samples")}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Regression:
        """Rebuild a detector saved with :meth:`to_dict`."""
        return cls(**data["params"])

