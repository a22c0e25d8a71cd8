"""Kolmogorov-Smirnov-type drift test per (service, feature) on fixed-bin histograms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from scipy.special import kolmogorov


@dataclass(frozen=True)
class KSResult:
    """Binned KS statistic of every (service, feature), with its approximate p-value."""

    statistic: np.ndarray
    """``(S, F)`` float: largest gap between the two empirical CDFs at the bin edges."""
    p_value: np.ndarray
    """``(S, F)`` float: asymptotic p-value for the effective sample size (conservative: a
    binned statistic is never larger than the exact one)."""
    critical: np.ndarray
    """``(S, F)`` float: the statistic a difference needs to be significant at ``alpha``."""
    drifted: np.ndarray
    """``(S, F)`` bool: significant, at least ``min_statistic`` and at least ``min_count``
    current values."""
    n_effective: np.ndarray
    """``(S, F)`` float: ``n_ref * n_cur / (n_ref + n_cur)``."""


def ks_statistic(reference_counts: np.ndarray, current_counts: np.ndarray) -> np.ndarray:
    """``max |F_ref - F_cur|`` over bin edges, ignoring the last (NaN) slot.

    Args:
        reference_counts: ``(..., B + 1)`` counts, last slot = NaN.
        current_counts: same shape, same bins.

    Example:
        >>> float(ks_statistic(np.array([50, 50, 0, 0]), np.array([0, 50, 50, 9])))
        0.5
    """
    r = np.asarray(reference_counts, dtype=np.float64)[..., :-1]
    c = np.asarray(current_counts, dtype=np.float64)[..., :-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        fr = np.cumsum(r, axis=-1) / r.sum(axis=-1, keepdims=True)
        fc = np.cumsum(c, axis=-1) / c.sum(axis=-1, keepdims=True)
        return np.abs(fr - fc).max(axis=-1)


def ks_p_value(statistic: np.ndarray, n_effective: np.ndarray) -> np.ndarray:
    """Asymptotic two-sample p-value with Stephens' small-sample correction.

    ``P(D > d) ~ Q_KS((sqrt(ne) + 0.12 + 0.11 / sqrt(ne)) * d)`` (Numerical Recipes 14.3).

    Example:
        >>> round(float(ks_p_value(np.array(0.1), np.array(100.0))), 4)
        0.2562
    """
    ne = np.sqrt(np.maximum(np.asarray(n_effective, dtype=np.float64), 1e-12))
    return kolmogorov((ne + 0.12 + 0.11 / ne) * np.asarray(statistic, dtype=np.float64))


def ks_critical(alpha: float, n_effective: np.ndarray) -> np.ndarray:
    """Smallest statistic significant at ``alpha``: ``c(alpha) / sqrt(ne)`` (asymptotic).

    Example:
        >>> round(float(ks_critical(0.05, np.array(500.0))), 4)
        0.0607
    """
    c = np.sqrt(-0.5 * np.log(alpha / 2.0))
    return c / np.sqrt(np.maximum(np.asarray(n_effective, dtype=np.float64), 1e-12))


class KS:
    """Flag (service, feature) pairs whose distribution differs from the reference.

    Significance alone flags every tiny shift once windows are large, so a pair also needs a
    statistic of at least ``min_statistic`` (an effect size: the largest CDF gap).

    Args:
        alpha: significance level per (service, feature); small, as many pairs are tested.
        min_statistic: smallest CDF gap worth flagging.
        min_count: fewest current values before a pair can be flagged.

    Example:
        >>> ref = np.array([[[250, 250, 250, 250, 0], [250, 250, 250, 250, 0]]])
        >>> cur = np.array([[[240, 260, 250, 250, 0], [50, 150, 300, 500, 0]]])
        >>> res = KS().update(ref, cur).result
        >>> res.statistic.round(3).tolist(), res.drifted.tolist()
        ([[0.01, 0.3]], [[False, True]])
    """

    def __init__(self, *, alpha: float = 0.001, min_statistic: float = 0.1, min_count: int = 200):
        self.alpha = alpha
        self.min_statistic = min_statistic
        self.min_count = min_count
        self._result: KSResult | None = None

    @property
    def result(self) -> KSResult | None:
        """Outcome of the last :meth:`update` (``None`` before the first)."""
        return self._result

    def update(self, reference_counts: np.ndarray, current_counts: np.ndarray) -> Self:
        """Compare current to reference counts, both ``(S, F, B + 1)`` on the same bins."""
        r = np.asarray(reference_counts)
        c = np.asarray(current_counts)
        if r.shape != c.shape:
            raise ValueError(f"reference {r.shape} and current {c.shape} counts must match")
        d = ks_statistic(r, c)
        n_ref = r[..., :-1].sum(axis=-1).astype(np.float64)
        n_cur = c[..., :-1].sum(axis=-1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            ne = n_ref * n_cur / (n_ref + n_cur)
        ne = np.nan_to_num(ne)
        p = np.where(ne > 0, ks_p_value(np.nan_to_num(d), ne), np.nan)
        self._result = KSResult(
            statistic=d, p_value=p, critical=ks_critical(self.alpha, ne),
            drifted=(p < self.alpha) & (d >= self.min_statistic) & (n_cur >= self.min_count),
            n_effective=ne,
        )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Hyperparameters as a JSON-safe dict (this detector keeps no running state)."""
        return {"params": {"alpha": self.alpha, "min_statistic": self.min_statistic,
                           "min_count": self.min_count}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KS:
        """Rebuild a detector saved with :meth:`to_dict`."""
        return cls(**data["params"])
