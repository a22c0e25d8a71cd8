"""Population Stability Index per (service, feature) from reference and current bin counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

import numpy as np


@dataclass(frozen=True)
class PSIResult:
    """PSI of every (service, feature), with the counts behind it."""

    psi: np.ndarray
    """``(S, F)`` float: the index; 0.1-0.2 is a moderate shift, above 0.2 a large one."""
    drifted: np.ndarray
    """``(S, F)`` bool: ``psi > threshold`` with at least ``min_count`` current values."""
    n_reference: np.ndarray
    """``(S, F)`` int: reference values that entered the index."""
    n_current: np.ndarray
    """``(S, F)`` int: current values that entered the index."""
    nan_reference: np.ndarray
    """``(S, F)`` float: share of nulls in the reference window."""
    nan_current: np.ndarray
    """``(S, F)`` float: share of nulls in the current window."""


def psi(
    reference_counts: np.ndarray,
    current_counts: np.ndarray,
    *,
    include_nan: bool = False,
    eps: float = 1e-4,
) -> np.ndarray:
    """``sum((c - r) * ln(c / r))`` over bins, per leading index.

    Args:
        reference_counts: ``(..., B + 1)`` counts, last slot = NaN, from
            :func:`fleet.detectors.histogram.bin_counts`.
        current_counts: same shape, on the same bins.
        include_nan: treat nulls as one more bin; by default they are left out (the quality
            detector watches the null rate) and shares are over finite values.
        eps: floor on a bin's share, so an empty bin gives a large but finite term.

    Returns:
        ``(...)`` float; NaN where either side has no values.

    Example:
        >>> ref = np.array([25, 25, 25, 25, 0])
        >>> round(float(psi(ref, np.array([25, 25, 25, 25, 3]))), 4)
        0.0
        >>> round(float(psi(ref, np.array([10, 20, 30, 40, 0]))), 4)
        0.2282
    """
    r = np.asarray(reference_counts, dtype=np.float64)
    c = np.asarray(current_counts, dtype=np.float64)
    if not include_nan:
        r, c = r[..., :-1], c[..., :-1]
    nr = r.sum(axis=-1, keepdims=True)
    nc = c.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        pr = np.maximum(r / nr, eps)
        pc = np.maximum(c / nc, eps)
        out = ((pc - pr) * np.log(pc / pr)).sum(axis=-1)
    return np.where((nr[..., 0] > 0) & (nc[..., 0] > 0), out, np.nan)


class PSI:
    """Flag (service, feature) pairs whose current histogram moved away from the reference.

    Stateless apart from its hyperparameters; the reference histogram lives with the caller
    (fixed bins from the reference window).

    Args:
        threshold: PSI above which a feature has drifted (0.2 is the usual "large shift").
        min_count: fewest current values before a feature can be flagged; PSI of small windows
            is biased upwards by about ``(bins - 1) / n``.
        include_nan: count nulls as a bin (see :func:`psi`).
        eps: floor on a bin's share.

    Example:
        >>> ref = np.array([[[250, 250, 250, 250, 0], [250, 250, 250, 250, 0]]])  # (1, 2, 5)
        >>> cur = np.array([[[240, 260, 250, 250, 0], [50, 150, 300, 500, 0]]])
        >>> res = PSI().update(ref, cur).result
        >>> res.psi.round(3).tolist(), res.drifted.tolist()
        ([[0.001, 0.555]], [[False, True]])
    """

    def __init__(
        self,
        *,
        threshold: float = 0.2,
        min_count: int = 200,
        include_nan: bool = False,
        eps: float = 1e-4,
    ):
        self.threshold = threshold
        self.min_count = min_count
        self.include_nan = include_nan
        self.eps = eps
        self._result: PSIResult | None = None

    @property
    def result(self) -> PSIResult | None:
        """Outcome of the last :meth:`update` (``None`` before the first)."""
        return self._result

    def update(self, reference_counts: np.ndarray, current_counts: np.ndarray) -> Self:
        """Compare current to reference counts, both ``(S, F, B + 1)`` on the same bins."""
        r = np.asarray(reference_counts)
        c = np.asarray(current_counts)
        if r.shape != c.shape:
            raise ValueError(f"reference {r.shape} and current {c.shape} counts must match")
        value = psi(r, c, include_nan=self.include_nan, eps=self.eps)
        slots = slice(None) if self.include_nan else slice(None, -1)
        n_ref = r[..., slots].sum(axis=-1)
        n_cur = c[..., slots].sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            nan_ref = r[..., -1] / r.sum(axis=-1)
            nan_cur = c[..., -1] / c.sum(axis=-1)
        self._result = PSIResult(
            psi=value,
            drifted=(value > self.threshold) & (n_cur >= self.min_count),
            n_reference=n_ref, n_current=n_cur, nan_reference=nan_ref, nan_current=nan_cur,
        )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Hyperparameters as a JSON-safe dict (this detector keeps no running state)."""
        return {"params": {"threshold": self.threshold, "min_count": self.min_count,
                           "include_nan": self.include_nan, "eps": self.eps}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PSI:
        """Rebuild a detector saved with :meth:`to_dict`."""
        return cls(**data["params"])
