"""Canary analysis: challenger vs champion over the same period, verdict pass / fail / inconclusive.

As in Argo Rollouts' analysis: fail rolls back, pass may be promoted, inconclusive goes to a
person when the deadline comes. Vectorised over services running a canary.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self

import numpy as np

from fleet.detectors.histogram import histogram_quantiles, log_edges
from fleet.detectors.twosample import diff_upper_bound, mann_whitney_binned, rise_p_value

LATENCY_EDGES_MS = log_edges(0.1, 60_000.0, 120)
"""Default inner latency bin edges: 120 geometric edges from 0.1 ms to 60 s (about 12 % apart)."""
LATENCY_EDGES_MS.setflags(write=False)  # a shared default must not be mutable


class Verdict(StrEnum):
    """Outcome of a canary analysis."""

    PASS = "pass"
    """Enough samples and not worse than the champion by the margin: may be promoted."""
    FAIL = "fail"
    """Significantly and materially worse: roll back."""
    INCONCLUSIVE = "inconclusive"
    """Too few samples, or not enough evidence either way yet."""


@dataclass(frozen=True)
class Arm:
    """One side of the comparison over the analysis period; ``S`` services."""

    n: np.ndarray
    """``(S,)`` int: scored requests (labelled predictions when ``errors`` are wrong answers)."""
    errors: np.ndarray
    """``(S,)`` int: bad outcomes among ``n`` (wrong predictions or failed requests)."""
    latency_counts: np.ndarray
    """``(S, B)`` int: latency histogram on :data:`LATENCY_EDGES_MS` (or the edges passed on)."""

    @classmethod
    def from_samples(
        cls, errors: np.ndarray, latency_ms: np.ndarray, edges: np.ndarray = LATENCY_EDGES_MS
    ) -> Arm:
        """Build an arm from raw requests, ``(S, N)`` each, NaN-padded.

        Example:
            >>> arm = Arm.from_samples(np.array([[0, 1, np.nan]]), np.array([[5.0, 7.0, np.nan]]))
            >>> arm.n.tolist(), arm.errors.tolist(), int(arm.latency_counts.sum())
            ([2], [1], 2)
        """
        err = np.asarray(errors, dtype=np.float64)
        lat = np.asarray(latency_ms, dtype=np.float64)
        s, b = lat.shape[0], len(edges) + 1
        bins = np.searchsorted(edges, lat, side="right")
        ok = ~np.isnan(lat)
        flat = (np.arange(s)[:, None] * b + bins)[ok]
        return cls(
            n=(~np.isnan(err)).sum(axis=1),
            errors=np.nansum(err, axis=1).astype(np.int64),
            latency_counts=np.bincount(flat, minlength=s * b).reshape(s, b),
        )


@dataclass(frozen=True)
class CanaryResult:
    """Verdict and evidence per service."""

    verdict: np.ndarray
    """``(S,)`` str: a :class:`Verdict` value per service."""
    n_champion: np.ndarray
    """``(S,)``: champion samples."""
    n_challenger: np.ndarray
    """``(S,)``: challenger samples."""
    error_rate_champion: np.ndarray
    """``(S,)``."""
    error_rate_challenger: np.ndarray
    """``(S,)``."""
    error_diff: np.ndarray
    """``(S,)``: challenger - champion error rate (the effect)."""
    error_diff_upper: np.ndarray
    """``(S,)``: one-sided upper confidence bound of ``error_diff`` at ``1 - alpha``."""
    error_p_value: np.ndarray
    """``(S,)``: p-value of "challenger errs more" (Fisher exact for small counts, else z)."""
    latency_ratio: np.ndarray
    """``(S, 2)``: challenger / champion latency at p50 and p95."""
    latency_effect: np.ndarray
    """``(S,)``: P(challenger slower than champion) from Mann-Whitney U; 0.5 = equal."""
    latency_p_value: np.ndarray
    """``(S,)``: one-sided Mann-Whitney p-value of "challenger is slower"."""
    reasons: tuple[tuple[str, ...], ...]
    """Per service, short codes for the verdict: ``too_few_samples``, ``errors_worse``,
    ``latency_worse``, ``errors_not_shown_non_inferior``, ``latency_over_margin``."""


class Canary:
    """Two-sample canary analysis with a minimum sample, a minimum effect and a margin.

    * INCONCLUSIVE while either arm has fewer than ``min_samples``.
    * FAIL when the challenger is significantly (at ``alpha``) *and* materially worse: its error
      rate is higher by at least ``min_effect``, or it is slower (Mann-Whitney U) with its p50 or
      p95 at least ``latency_margin`` (relative) above the champion's.
    * PASS when it is shown non-inferior: the upper confidence bound of the error-rate
      difference is below ``margin``, and its p50 and p95 are within ``latency_margin``.
    * INCONCLUSIVE otherwise (keep collecting; a person decides at the deadline).

    Args:
        min_samples: samples each arm needs before any pass or fail.
        alpha: significance level (also sets the ``1 - alpha`` confidence bound).
        min_effect: smallest error-rate rise (absolute) that fails the canary.
        margin: non-inferiority margin of the error rate (absolute).
        latency_margin: relative p50/p95 slowdown that fails (if significant) or blocks a pass.

    Example:
        >>> champion = Arm(np.array([1000, 1000, 50]), np.array([100, 100, 5]),
        ...                np.array([[0, 500, 500, 0]] * 3))
        >>> challenger = Arm(np.array([1000, 1000, 50]), np.array([180, 95, 5]),
        ...                  np.array([[0, 500, 500, 0]] * 3))
        >>> c = Canary(latency_edges=np.array([10.0, 20.0, 40.0]))
        >>> c.update(champion, challenger).result.verdict.tolist()
        ['fail', 'pass', 'inconclusive']
    """

    def __init__(
        self,
        *,
        min_samples: int = 150,
        alpha: float = 0.05,
        min_effect: float = 0.02,
        margin: float = 0.05,
        latency_margin: float = 0.1,
        latency_edges: np.ndarray = LATENCY_EDGES_MS,
    ):
        self.min_samples = min_samples
        self.alpha = alpha
        self.min_effect = min_effect
        self.margin = margin
        self.latency_margin = latency_margin
        self.latency_edges = np.asarray(latency_edges, dtype=np.float64)
        self._result: CanaryResult | None = None

    @property
    def result(self) -> CanaryResult | None:
        """Outcome of the last :meth:`update` (``None`` before the first)."""
        return self._result

    def update(self, champion: Arm, challenger: Arm) -> Self:
        """Analyse one period; both arms cover the same services in the same order."""
        n0, e0 = np.asarray(champion.n), np.asarray(champion.errors)
        n1, e1 = np.asarray(challenger.n), np.asarray(challenger.errors)
        with np.errstate(invalid="ignore", divide="ignore"):
            r0, r1 = e0 / n0, e1 / n1
            q0 = histogram_quantiles(champion.latency_counts, self.latency_edges, [0.5, 0.95])
            q1 = histogram_quantiles(challenger.latency_counts, self.latency_edges, [0.5, 0.95])
            ratio = q1 / q0
        diff = r1 - r0
        upper = diff_upper_bound(e0, n0, e1, n1, self.alpha)
        p_err = rise_p_value(e0, n0, e1, n1)
        effect, p_lat = mann_whitney_binned(champion.latency_counts, challenger.latency_counts)
        # Without latency data on either arm only the error rates decide.
        slowdown = np.where(np.isnan(ratio), 1.0, ratio).max(axis=1) - 1.0

        few = (n0 < self.min_samples) | (n1 < self.min_samples)
        err_worse = (p_err < self.alpha) & (diff >= self.min_effect)
        lat_worse = (p_lat < self.alpha) & (slowdown >= self.latency_margin)
        err_ok = upper < self.margin
        lat_ok = slowdown < self.latency_margin
        verdict = np.where(
            few, Verdict.INCONCLUSIVE.value,
            np.where(err_worse | lat_worse, Verdict.FAIL.value,
                     np.where(err_ok & lat_ok, Verdict.PASS.value, Verdict.INCONCLUSIVE.value)),
        )
        codes = (
            (few, "too_few_samples"), (~few & err_worse, "errors_worse"),
            (~few & lat_worse, "latency_worse"),
            (~few & ~err_ok & ~err_worse, "errors_not_shown_non_inferior"),
            (~few & ~lat_ok & ~lat_worse, "latency_over_margin"),
        )
        reasons = tuple(tuple(code for mask, code in codes if mask[i]) for i in range(len(n0)))
        self._result = CanaryResult(
            verdict=verdict, n_champion=n0, n_challenger=n1, error_rate_champion=r0,
            error_rate_challenger=r1, error_diff=diff, error_diff_upper=upper,
            error_p_value=p_err, latency_ratio=ratio, latency_effect=effect,
            latency_p_value=p_lat, reasons=reasons,
        )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Hyperparameters as a JSON-safe dict (this detector keeps no running state)."""
        params = {k: getattr(self, k) for k in (
            "min_samples", "alpha", "min_effect", "margin", "latency_margin")}
        return {"params": {**params, "latency_edges": self.latency_edges.tolist()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Canary:
        """Rebuild a detector saved with :meth:`to_dict`."""
        return cls(**data["params"])
