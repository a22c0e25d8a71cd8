"""A bounded map from recent request ids to what answered them, for joining late labels.

Pure numpy: request ids are hashed to 64 bits and kept in a fixed-size ring (about 36 bytes per
entry), and a batch of labels is joined with one sort and one binary search instead of a Python
dict per service. Kept in memory only; after a restart it is rebuilt from the stream tail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def rid_keys(request_ids: Sequence[str]) -> np.ndarray:
    """64-bit keys of request ids (stable within one process, which is all the ring needs).

    Example:
        >>> k = rid_keys(["a", "b", "a"])
        >>> bool(k[0] == k[2]), bool(k[0] == k[1])
        (True, False)
    """
    return np.fromiter((hash(r) for r in request_ids), dtype=np.int64, count=len(request_ids))


@dataclass(frozen=True)
class Joined:
    """Labels matched to their predictions, in label order; unmatched labels are left out."""

    found: np.ndarray
    """``(L,)`` bool over the labels given: matched a prediction still in the ring."""
    version: np.ndarray
    """``(M,)`` version that answered each matched label's request."""
    prediction: np.ndarray
    """``(M,)`` what it answered (NaN for a failed request)."""
    index: np.ndarray
    """``(M,)`` the prediction's event index (answered events of the service, from 0)."""
    ts: np.ndarray
    """``(M,)`` the prediction's event time."""


class JoinRing:
    """The last ``capacity`` answered predictions of one service, keyed by request id.

    A label joins at most once: a matched entry is consumed, so a repeated label is ignored.

    Example:
        >>> ring = JoinRing(2)
        >>> ring.add(rid_keys(["a", "b", "c"]), np.array([1, 1, 2]), np.array([0.0, 1.0, 1.0]),
        ...          np.array([0, 1, 2]), np.zeros(3))
        >>> j = ring.match(rid_keys(["a", "c", "c"]))
        >>> j.found.tolist(), j.version.tolist()
        ([False, True, False], [2])
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1; got {capacity!r}")
        self.capacity = capacity
        self.size = 0
        self._head = 0
        # Arrays grow with traffic up to ``capacity``, so a quiet service stays small.
        self._alloc(min(capacity, 1_024))

    def _alloc(self, n: int) -> None:
        old = self.size
        key, version, pred, index, ts = (np.zeros(n, np.int64), np.full(n, -1, np.int64),
                                         np.full(n, np.nan), np.zeros(n, np.int64), np.zeros(n))
        if old:  # only reached before the ring wraps, so entries sit at 0..size-1
            key[:old], version[:old] = self._key[:old], self._version[:old]
            pred[:old], index[:old], ts[:old] = self._pred[:old], self._index[:old], self._ts[:old]
        self._key, self._version, self._pred, self._index, self._ts = key, version, pred, index, ts

    @property
    def _cap(self) -> int:
        return len(self._key)

    def add(
        self, keys: np.ndarray, version: np.ndarray, prediction: np.ndarray, index: np.ndarray,
        ts: np.ndarray,
    ) -> None:
        """Remember answered predictions, oldest first; the oldest entries fall out when full."""
        n = len(keys)
        if n > self.capacity:  # only the newest fit
            keys, version, prediction, index, ts = (
                a[-self.capacity:] for a in (keys, version, prediction, index, ts))
            n = self.capacity
        if self.size + n > self._cap and self._cap < self.capacity:
            self._alloc(min(self.capacity, max(2 * self._cap, self.size + n)))
        cap = self._cap
        pos = (self._head + np.arange(n)) % cap
        self._key[pos] = keys
        self._version[pos] = version
        self._pred[pos] = prediction
        self._index[pos] = index
        self._ts[pos] = ts
        self._head = int((self._head + n) % cap)
        self.size = min(self.size + n, cap)

    def match(self, keys: np.ndarray) -> Joined:
        """Join labels (by request-id key) to the ring, consuming what matched."""
        live = np.flatnonzero(self._version[: self.size] >= 0) if self.size else np.zeros(0, int)
        found = np.zeros(len(keys), dtype=bool)
        hit_pos = np.zeros(0, dtype=np.int64)
        if live.size and len(keys):
            # Newest entry wins for a reused request id: sort by key, then by age (newest last).
            age = (live - self._head) % self._cap
            order = live[np.lexsort((age, self._key[live]))]
            sk = self._key[order]
            right = np.searchsorted(sk, keys, side="right") - 1
            ok = (right >= 0) & (sk[np.maximum(right, 0)] == keys)
            pos = order[np.maximum(right, 0)]
            # A label repeated within this batch joins once (its first occurrence).
            first = np.zeros(len(keys), dtype=bool)
            _, uniq = np.unique(np.where(ok, pos, -1 - np.arange(len(keys))), return_index=True)
            first[uniq] = True
            found = ok & first
            hit_pos = pos[found]
        out = Joined(found, self._version[hit_pos].copy(), self._pred[hit_pos].copy(),
                     self._index[hit_pos].copy(), self._ts[hit_pos].copy())
        self._version[hit_pos] = -1
        return out
