"""A rolling window kept as a ring of fixed-size blocks of counts: add new events, read the sum.

Pure numpy. Event ``i`` (counting every event ever added, from 0) belongs to block
``i // block_rows``; the window is the newest ``n_blocks`` blocks, so it holds between
``(n_blocks - 1) * block_rows`` and ``n_blocks * block_rows`` events once warm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Field:
    """One named array kept per block."""

    shape: tuple[int, ...] = ()
    """Shape of the per-block array (``()`` for a scalar count)."""
    hist: bool = False
    """Per-event values are slot indices into the last axis (counted), not amounts (summed)."""
    dtype: str = "int64"
    """``int64`` for counts, ``float64`` for sums such as absolute errors."""


class Blocks:
    """Counts over the last ``n_blocks`` blocks of ``block_rows`` events each.

    Only the events that can still be in the window are binned, so adding a large backlog
    costs at most one window of work.

    Args:
        fields: name -> :class:`Field` of each array kept per block.
        block_rows: events per block.
        n_blocks: blocks in the window.

    Example:
        >>> b = Blocks({"err": Field(), "lat": Field((3,), hist=True)}, block_rows=2, n_blocks=2)
        >>> b.add(5, err=np.array([1, 0, 0, 1, 1]), lat=np.array([0, 1, 2, 2, 2]))
        >>> int(b.window("err")), b.window("lat").tolist(), int(b.rows.sum())
        (2, [0, 0, 3], 3)
        >>> bool((b.sums["lat"] == b.data["lat"].sum(axis=0)).all())  # kept in step
        True
    """

    def __init__(self, fields: Mapping[str, Field], *, block_rows: int, n_blocks: int):
        if block_rows < 1 or n_blocks < 1:
            raise ValueError(
                f"need block_rows >= 1 and n_blocks >= 1; got {block_rows}, {n_blocks}")
        self.fields = dict(fields)
        self.block_rows = block_rows
        self.n_blocks = n_blocks
        self.seen = 0
        self.seq = np.full(n_blocks, -1, dtype=np.int64)
        self.rows = np.zeros(n_blocks, dtype=np.int64)
        self.data = {k: np.zeros((n_blocks, *f.shape), dtype=f.dtype) for k, f in fields.items()}
        # Window sums kept up to date on every change, so reading a window costs no sum
        # (detectors stack these live arrays directly; nobody else may write them).
        self.sums = {k: np.zeros(f.shape, dtype=f.dtype) for k, f in fields.items()}

    def add(self, n: int, **values: np.ndarray) -> None:
        """Add ``n`` events; ``values[name]`` has one entry per event (leading axis ``n``).

        Fields left out get nothing for these events (their rows still count in :attr:`rows`).
        """
        if n <= 0:
            return
        first, last = self.seen, self.seen + n - 1
        br = self.block_rows
        lo_seq = max(first // br, last // br - self.n_blocks + 1)
        for s in range(lo_seq, last // br + 1):
            a = max(s * br, first) - first
            b = min((s + 1) * br, last + 1) - first
            slot = self._open(s)
            self.rows[slot] += b - a
            for name, v in values.items():
                part = self._count(name, np.asarray(v)[a:b])
                self.data[name][slot] += part
                self.sums[name] += part
        self.seen += n

    def _open(self, s: int) -> int:
        slot = s % self.n_blocks
        if self.seq[slot] != s:
            self.seq[slot] = s
            self.rows[slot] = 0
            for name, arr in self.data.items():
                self.sums[name] -= arr[slot]
                arr[slot] = 0
        return slot

    def _count(self, name: str, v: np.ndarray) -> np.ndarray:
        f = self.fields[name]
        if not f.hist:
            return v.sum(axis=0)
        slots = f.shape[-1]
        if v.ndim == 1:
            return np.bincount(v, minlength=slots)
        lead = int(np.prod(f.shape[:-1]))
        flat = (np.arange(lead) * slots + v.reshape(len(v), lead)).ravel()
        return np.bincount(flat, minlength=lead * slots).reshape(f.shape)

    def window(self, name: str) -> np.ndarray:
        """Sum of ``name`` over the window (a copy; :attr:`sums` holds the live array)."""
        return self.sums[name].copy()

    @property
    def total(self) -> int:
        """Events in the window."""
        return int(self.rows.sum())

    def slot_of(self, index: int) -> int | None:
        """Slot holding event ``index`` if its block is still in the window."""
        s = index // self.block_rows
        slot = s % self.n_blocks
        return slot if self.seq[slot] == s else None

    def bump(self, name: str, index: int, amount: float = 1) -> bool:
        """Add ``amount`` to ``name`` in event ``index``'s block; False if it left the window."""
        slot = self.slot_of(index)
        if slot is None:
            return False
        self.data[name][slot] += amount
        self.sums[name] += amount
        return True

    def bump_many(self, name: str, indices: np.ndarray) -> int:
        """Add 1 to ``name`` in each event index's block; return how many were in the window."""
        s = np.asarray(indices, dtype=np.int64) // self.block_rows
        slot = s % self.n_blocks
        ok = self.seq[slot] == s
        np.add.at(self.data[name], slot[ok], 1)
        self.sums[name] += int(ok.sum())
        return int(ok.sum())

    def bump_newest(self, name: str, amount: float) -> None:
        """Add ``amount`` to ``name`` in the newest block (for counts with no event index)."""
        s = max((self.seen - 1) // self.block_rows, 0)
        self.data[name][self._open(s)] += amount
        self.sums[name] += amount

    def order(self) -> np.ndarray:
        """Slots of live blocks, oldest first."""
        live = np.flatnonzero(self.seq >= 0)
        return live[np.argsort(self.seq[live])]

    def first_event(self, slot: int) -> int:
        """Index of the first event of the block in ``slot``."""
        return int(self.seq[slot]) * self.block_rows

    def clear(self, name: str) -> None:
        """Zero one field in every block (e.g. histograms whose bins changed)."""
        self.data[name][:] = 0
        self.sums[name][...] = 0

    def to_dict(self) -> dict[str, Any]:
        """Counts and position as JSON-safe lists (the field layout is the caller's)."""
        return {
            "seen": self.seen, "seq": self.seq.tolist(), "rows": self.rows.tolist(),
            "data": {k: v.tolist() for k, v in self.data.items()},
        }

    def load(self, d: Mapping[str, Any]) -> Blocks:
        """Restore counts written by :meth:`to_dict` into this (same-layout) ring."""
        self.seen = int(d["seen"])
        self.seq = np.asarray(d["seq"], dtype=np.int64).reshape(self.n_blocks)
        self.rows = np.asarray(d["rows"], dtype=np.int64).reshape(self.n_blocks)
        for k, f in self.fields.items():
            if k in d["data"]:
                self.data[k] = np.asarray(d["data"][k], dtype=f.dtype).reshape(
                    (self.n_blocks, *f.shape))
            self.sums[k] = np.array(self.data[k].sum(axis=0), dtype=f.dtype)
        return self
