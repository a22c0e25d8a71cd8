"""Reference windows the current windows are compared with: frozen bins and counts, ops baselines.

Pure numpy. The drift reference is the first ``reference_rows`` answered events of a champion:
bin edges at its quantiles and its counts on them, for every feature and for the predictions.
The ops baseline is a window of requests (count, failures, latency histogram) that a champion's
latency and error rate are held to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fleet.detectors import bin_counts, quantile_edges
from fleet.detectors.quality import duplicate_rows


@dataclass(frozen=True)
class Reference:
    """Frozen drift reference of one champion; ``F`` features, ``B`` value bins."""

    champion: int
    """Version whose first answered events these are."""
    edges: np.ndarray
    """``(F + 1, B - 1)`` inner bin edges: features, then the prediction last."""
    counts: np.ndarray
    """``(F + 1, B + 1)`` reference counts on ``edges`` (last slot: nulls)."""
    rows: int
    """Events in the reference window."""
    duplicate_rate: float = 0.0
    """Share of rows repeating an earlier row of their block: the duplicates that are normal
    for this service (e.g. few, discrete features); only an excess over it is a burst."""

    @classmethod
    def freeze(cls, champion: int, X: np.ndarray, prediction: np.ndarray, n_bins: int,
               block_rows: int = 250) -> Reference:
        """Bins at the quantiles of a window and its counts on them.

        Args:
            champion: the version that answered the window.
            X: ``(N, F)`` features, NaN for nulls.
            prediction: ``(N,)`` answers, NaN for failures.
            n_bins: value bins per column.
            block_rows: rows per block of the current windows (duplicates count per block).

        Example:
            >>> X = np.arange(8.0).reshape(8, 1)
            >>> ref = Reference.freeze(1, X, np.array([0.0, 1.0] * 4), 4)
            >>> ref.edges[0].tolist(), ref.counts[0].tolist(), ref.counts[1].tolist()
            ([1.75, 3.5, 5.25], [2, 2, 2, 2, 0], [0, 4, 0, 4, 0])
        """
        cols = np.column_stack([np.asarray(X, dtype=np.float64), prediction])[None]
        edges = quantile_edges(cols, n_bins)
        counts = bin_counts(cols, edges)
        n = len(X)
        dups = sum(int(duplicate_rows(X[None, a: a + block_rows])[0])
                   for a in range(0, n, block_rows))
        return cls(champion, edges[0], counts[0], n, dups / n if n else 0.0)

    @property
    def n_bins(self) -> int:
        """Value bins per column."""
        return int(self.edges.shape[1] + 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (NaN edges, of all-null columns, become None)."""
        return {"champion": self.champion, "rows": self.rows,
                "duplicate_rate": self.duplicate_rate,
                "edges": [[None if np.isnan(v) else float(v) for v in row] for row in self.edges],
                "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reference:
        """Inverse of :meth:`to_dict`."""
        edges = np.array([[np.nan if v is None else v for v in row] for row in d["edges"]],
                         dtype=np.float64)
        return cls(int(d["champion"]), edges, np.asarray(d["counts"], dtype=np.int64),
                   int(d["rows"]), float(d.get("duplicate_rate", 0.0)))


@dataclass(frozen=True)
class OpsBaseline:
    """A window of requests a version's latency and failure rate are compared with."""

    version: int
    """Version that served the window."""
    n: int
    """Requests."""
    errors: int
    """Failed requests."""
    latency: np.ndarray
    """Latency histogram on the canary detector's bins."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"version": self.version, "n": self.n, "errors": self.errors,
                "latency": self.latency.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpsBaseline:
        """Inverse of :meth:`to_dict`."""
        return cls(int(d["version"]), int(d["n"]), int(d["errors"]),
                   np.asarray(d["latency"], dtype=np.int64))


class Collector:
    """Gathers a champion's first answered events until there are enough for a reference.

    In memory only: after a restart the monitor refills it from the stream (the events after
    ``start`` are still there), so no raw rows are ever written to Redis.

    Example:
        >>> c = Collector(3)
        >>> c.add(np.ones((2, 1)), np.ones(2)), c.add(np.ones((2, 1)), np.ones(2)), c.full
        (2, 1, True)
    """

    def __init__(self, needed: int):
        self.needed = needed
        self._X: list[np.ndarray] = []
        self._p: list[np.ndarray] = []
        self.rows = 0

    @property
    def full(self) -> bool:
        """Whether the reference window is complete."""
        return self.rows >= self.needed

    def add(self, X: np.ndarray, prediction: np.ndarray) -> int:
        """Take rows until full; return how many were taken (from the front)."""
        take = min(len(X), self.needed - self.rows)
        if take > 0:
            self._X.append(X[:take])
            self._p.append(prediction[:take])
            self.rows += take
        return max(take, 0)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The collected ``(X, prediction)``."""
        return np.concatenate(self._X), np.concatenate(self._p)
