"""Data-quality signals per (service, feature): nulls, out-of-range values, duplicates, labels.

The counts are what the aggregates keep per window; :meth:`QualityCounts.from_window` builds
them from a raw ``(services, rows, features)`` window when that is at hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

import numpy as np

_FNV_PRIME = np.uint64(0x100000001B3)
_PAD_SALT = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class QualityCounts:
    """Counts over one window per service; ``F`` features."""

    rows: np.ndarray
    """``(S,)`` int: rows accepted in the window."""
    nulls: np.ndarray
    """``(S, F)`` int: null (NaN) values."""
    out_of_range: np.ndarray
    """``(S, F)`` int: values below the schema ``min`` or above its ``max``."""
    duplicates: np.ndarray
    """``(S,)`` int: rows that exactly repeat an earlier row of the same window."""
    labelled: np.ndarray
    """``(S,)`` int: rows whose label has arrived, among ``label_due``."""
    label_due: np.ndarray
    """``(S,)`` int: rows old enough that their label should have arrived."""
    rejected: np.ndarray
    """``(S,)`` int: requests refused by the schema (sent to the dead-letter queue)."""

    @classmethod
    def from_window(
        cls,
        X: np.ndarray,
        *,
        low: np.ndarray,
        high: np.ndarray,
        valid: np.ndarray | None = None,
        labelled: np.ndarray | None = None,
        rejected: np.ndarray | None = None,
    ) -> QualityCounts:
        """Count a raw window.

        Args:
            X: ``(S, N, F)`` feature values, NaN for nulls.
            low: schema minimum per feature, ``(F,)`` or ``(S, F)``; NaN means no bound.
            high: schema maximum, same shape; NaN means no bound.
            valid: ``(S, N)`` bool marking real rows when services with fewer rows are padded.
            labelled: ``(S, N)`` bool, label arrived; every valid row counts as due.
            rejected: ``(S,)`` schema rejections in the same period.

        Example:
            >>> X = np.array([[[1.0, 5.0], [np.nan, 50.0], [1.0, 5.0], [2.0, 3.0]]])
            >>> c = QualityCounts.from_window(X, low=np.array([0.0, 0.0]),
            ...                               high=np.array([10.0, 10.0]))
            >>> c.nulls.tolist(), c.out_of_range.tolist(), c.duplicates.tolist()
            ([[1, 0]], [[0, 1]], [1])
        """
        x = np.asarray(X, dtype=np.float64)
        s, n, _ = x.shape
        ok = np.ones((s, n), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
        lo = np.broadcast_to(np.asarray(low, dtype=np.float64), (s, x.shape[2]))[:, None, :]
        hi = np.broadcast_to(np.asarray(high, dtype=np.float64), (s, x.shape[2]))[:, None, :]
        keep = ok[..., None]
        with np.errstate(invalid="ignore"):
            outside = (x < lo) | (x > hi)
        lab = np.zeros((s, n), dtype=bool) if labelled is None else np.asarray(labelled, bool)
        rows = ok.sum(axis=1)
        return cls(
            rows=rows,
            nulls=(np.isnan(x) & keep).sum(axis=1),
            out_of_range=(outside & keep).sum(axis=1),
            duplicates=duplicate_rows(x, ok),
            labelled=(lab & ok).sum(axis=1),
            label_due=rows if labelled is not None else np.zeros(s, dtype=np.int64),
            rejected=np.zeros(s, np.int64) if rejected is None else np.asarray(rejected),
        )


def duplicate_rows(X: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Rows per service that exactly repeat an earlier row of the same window.

    Rows are hashed to 64 bits (NaN equals NaN, -0.0 equals 0.0) and sorted; equal neighbours
    are duplicates. A hash collision needs about 2**32 rows in one window to become likely.

    Args:
        X: ``(S, N, F)`` values.
        valid: ``(S, N)`` bool, real rows (padding never counts).

    Example:
        >>> X = np.array([[[1.0, np.nan], [1.0, np.nan], [1.0, np.nan], [0.0, 2.0]]])
        >>> duplicate_rows(X).tolist()
        [2]
    """
    x = np.asarray(X, dtype=np.float64) + 0.0  # -0.0 becomes 0.0
    x = np.where(np.isnan(x), np.nan, x)  # one NaN bit pattern
    bits = np.ascontiguousarray(x).view(np.uint64)
    h = np.full(x.shape[:2], np.uint64(0xCBF29CE484222325), dtype=np.uint64)
    for j in range(x.shape[2]):
        h = (h ^ bits[..., j]) * _FNV_PRIME
    h ^= h >> np.uint64(29)
    if valid is not None:
        pad = (np.arange(x.shape[1], dtype=np.uint64) * _FNV_PRIME) ^ _PAD_SALT
        h = np.where(np.asarray(valid, dtype=bool), h, pad[None, :])
    h.sort(axis=1)
    return (h[:, 1:] == h[:, :-1]).sum(axis=1)


@dataclass(frozen=True)
class QualityResult:
    """Rates and the signals they raise; rates are NaN where the window is empty."""

    null_rate: np.ndarray
    """``(S, F)``: share of rows with a null in the feature."""
    out_of_range_rate: np.ndarray
    """``(S, F)``: share of rows outside the schema range."""
    duplicate_rate: np.ndarray
    """``(S,)``: share of rows repeating an earlier row."""
    label_coverage: np.ndarray
    """``(S,)``: share of due rows whose label arrived."""
    rejected_rate: np.ndarray
    """``(S,)``: share of requests refused by the schema."""
    nulls: np.ndarray
    """``(S, F)`` bool: null rate above its limit."""
    out_of_range: np.ndarray
    """``(S, F)`` bool: out-of-range rate above its limit."""
    duplicates: np.ndarray
    """``(S,)`` bool: a duplicate burst."""
    low_labels: np.ndarray
    """``(S,)`` bool: too few labels arrived."""
    schema: np.ndarray
    """``(S,)`` bool: too many requests violated the schema."""

    @property
    def any(self) -> np.ndarray:
        """``(S,)`` bool: some quality signal fired for the service."""
        return (self.nulls.any(axis=1) | self.out_of_range.any(axis=1) | self.duplicates
                | self.low_labels | self.schema)


class DataQuality:
    """Turn window counts into quality signals by fixed limits.

    Args:
        max_null_rate: null share per feature above which the feature is flagged.
        max_out_of_range_rate: out-of-range share per feature above which it is flagged.
        max_duplicate_rate: duplicate-row share above which the window is a duplicate burst.
        min_label_coverage: labelled share of due rows below which labels are missing.
        max_rejected_rate: share of requests refused by the schema above which it is flagged.
        min_rows: fewest rows (or due labels) before any signal; small windows are noise.

    Example:
        >>> c = QualityCounts(rows=np.array([1000, 1000]), nulls=np.array([[5, 0], [300, 0]]),
        ...     out_of_range=np.zeros((2, 2), int), duplicates=np.array([0, 120]),
        ...     labelled=np.array([900, 100]), label_due=np.array([1000, 1000]),
        ...     rejected=np.array([0, 0]))
        >>> r = DataQuality().update(c).result
        >>> r.nulls.tolist(), r.duplicates.tolist(), r.low_labels.tolist(), r.any.tolist()
        ([[False, False], [True, False]], [False, True], [False, True], [False, True])
    """

    def __init__(
        self,
        *,
        max_null_rate: float = 0.05,
        max_out_of_range_rate: float = 0.01,
        max_duplicate_rate: float = 0.05,
        min_label_coverage: float = 0.5,
        max_rejected_rate: float = 0.01,
        min_rows: int = 100,
    ):
        self.max_null_rate = max_null_rate
        self.max_out_of_range_rate = max_out_of_range_rate
        self.max_duplicate_rate = max_duplicate_rate
        self.min_label_coverage = min_label_coverage
        self.max_rejected_rate = max_rejected_rate
        self.min_rows = min_rows
        self._result: QualityResult | None = None

    @property
    def result(self) -> QualityResult | None:
        """Outcome of the last :meth:`update` (``None`` before the first)."""
        return self._result

    def update(self, counts: QualityCounts) -> Self:
        """Compute rates and signals for one window of counts."""
        rows = np.asarray(counts.rows, dtype=np.float64)
        due = np.asarray(counts.label_due, dtype=np.float64)
        rej = np.asarray(counts.rejected, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            null_rate = counts.nulls / rows[:, None]
            oor_rate = counts.out_of_range / rows[:, None]
            dup_rate = counts.duplicates / rows
            coverage = counts.labelled / due
            rej_rate = rej / (rows + rej)
        enough = rows >= self.min_rows
        self._result = QualityResult(
            null_rate=null_rate, out_of_range_rate=oor_rate, duplicate_rate=dup_rate,
            label_coverage=coverage, rejected_rate=rej_rate,
            nulls=(null_rate > self.max_null_rate) & enough[:, None],
            out_of_range=(oor_rate > self.max_out_of_range_rate) & enough[:, None],
            duplicates=(dup_rate > self.max_duplicate_rate) & enough,
            low_labels=(coverage < self.min_label_coverage) & (due >= self.min_rows),
            schema=(rej_rate > self.max_rejected_rate) & (rows + rej >= self.min_rows),
        )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Hyperparameters as a JSON-safe dict (this detector keeps no running state)."""
        return {"params": {k: getattr(self, k) for k in (
            "max_null_rate", "max_out_of_range_rate", "max_duplicate_rate",
            "min_label_coverage", "max_rejected_rate", "min_rows")}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataQuality:
        """Rebuild a detector saved with :meth:`to_dict`."""
        return cls(**data["params"])
