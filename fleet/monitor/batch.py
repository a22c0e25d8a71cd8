"""New telemetry of one service as arrays: what the aggregates and the facade's windows take in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from fleet.detectors.canary import LATENCY_EDGES_MS
from fleet.telemetry.events import PredictionEvent

LATENCY_SLOTS = len(LATENCY_EDGES_MS) + 1
"""Latency histogram slots: the canary detector's log-spaced bins, 0.1 ms to 60 s."""

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@dataclass(frozen=True)
class EventBatch:
    """Prediction events in stream order; ``N`` events, ``F`` features."""

    ids: tuple[str, ...]
    """Telemetry stream ids."""
    request_ids: tuple[str, ...]
    """Request ids (what labels join on)."""
    X: np.ndarray
    """``(N, F)`` features, NaN for nulls."""
    prediction: np.ndarray
    """``(N,)`` answer, NaN when the request failed."""
    latency: np.ndarray
    """``(N,)`` milliseconds."""
    failed: np.ndarray
    """``(N,)`` bool: the request returned an error."""
    version: np.ndarray
    """``(N,)`` int: version that scored the request."""
    shadow: np.ndarray
    """``(N,)`` bool: scored in shadow (not answered)."""
    ts: np.ndarray
    """``(N,)`` event time, seconds."""

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_events(
        cls, rows: Sequence[tuple[str, PredictionEvent]], n_features: int
    ) -> EventBatch:
        """Arrays of ``(stream id, event)`` rows; feature vectors are cut or NaN-padded to ``F``.

        Example:
            >>> ev = PredictionEvent(1.0, "r1", 2, (1.0, None), 1.0, 5.0)
            >>> b = EventBatch.from_events([("1-0", ev)], 2)
            >>> b.X.tolist(), b.version.tolist(), b.failed.tolist()
            ([[1.0, nan]], [2], [False])
        """
        n = len(rows)
        X = np.full((n, n_features), np.nan)
        for i, (_, ev) in enumerate(rows):
            x = [np.nan if v is None else v for v in ev.features[:n_features]]
            X[i, : len(x)] = x
        return cls(
            ids=tuple(sid for sid, _ in rows),
            request_ids=tuple(ev.request_id for _, ev in rows),
            X=X,
            prediction=np.array([np.nan if e.prediction is None else e.prediction
                                 for _, e in rows], dtype=np.float64),
            latency=np.array([e.latency_ms for _, e in rows], dtype=np.float64),
            failed=np.array([e.error is not None for _, e in rows], dtype=bool),
            version=np.array([e.version for _, e in rows], dtype=np.int64),
            shadow=np.array([e.shadow for _, e in rows], dtype=bool),
            ts=np.array([e.ts for _, e in rows], dtype=np.float64),
        )

    def take(self, mask: np.ndarray) -> EventBatch:
        """The events where ``mask`` (bool or indices) selects them, in order."""
        idx = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask)
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = tuple(v[i] for i in idx) if isinstance(v, tuple) else v[idx]
        return EventBatch(**out)


def latency_slots(latency_ms: np.ndarray) -> np.ndarray:
    """Histogram slot of each latency on :data:`LATENCY_EDGES_MS`.

    Example:
        >>> latency_slots(np.array([0.05, 1.0, 1e9])).tolist()
        [0, 21, 120]
    """
    return np.searchsorted(LATENCY_EDGES_MS, latency_ms, side="right")


def value_slots(X: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin slot per value on fixed inner ``edges``, NaN in the last slot (as ``bin_counts``).

    Args:
        X: ``(N, F)`` values.
        edges: ``(F, B - 1)`` inner edges.

    Returns:
        ``(N, F)`` int slots in ``[0, B]``.

    Example:
        >>> value_slots(np.array([[0.5], [1.5], [np.nan]]), np.array([[1.0]])).tolist()
        [[0], [1], [2]]
    """
    x = np.asarray(X, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    idx = np.zeros(x.shape, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        for j in range(e.shape[1]):
            idx += x >= e[None, :, j]
    idx[np.isnan(x)] = e.shape[1] + 1
    return idx


def row_hashes(X: np.ndarray) -> np.ndarray:
    """64-bit FNV-style hash of each row (NaN equals NaN, -0.0 equals 0.0), for duplicates.

    Example:
        >>> h = row_hashes(np.array([[1.0, np.nan], [1.0, np.nan], [0.0, 2.0]]))
        >>> bool(h[0] == h[1]), bool(h[0] == h[2])
        (True, False)
    """
    x = np.asarray(X, dtype=np.float64) + 0.0
    x = np.where(np.isnan(x), np.nan, x)
    bits = np.ascontiguousarray(x).view(np.uint64)
    h = np.full(x.shape[0], _FNV_OFFSET, dtype=np.uint64)
    for j in range(x.shape[1]):
        h = (h ^ bits[:, j]) * _FNV_PRIME
    return h
