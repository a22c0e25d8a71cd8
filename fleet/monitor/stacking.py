"""Stacking many services' small arrays into one array per detector call, and grouping them.

Services whose thresholds differ are grouped by a detector's arguments, so a fleet on default
thresholds makes one call per detector kind per batch of services.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fleet.detectors import DetectorConfig

if TYPE_CHECKING:  # the aggregates import the canary arms, which import this module
    from fleet.monitor.aggregates import Feed, ServiceAgg


@dataclass(frozen=True)
class Case:
    """One service's inputs to a tick's detection."""

    service: str
    cfg: DetectorConfig
    agg: ServiceAgg
    feed: Feed
    """The champion's newly labelled answers."""


def groups(cases: Sequence[Case], *prefixes: str, where: np.ndarray | None = None
           ) -> list[tuple[DetectorConfig, np.ndarray | slice]]:
    """Indices of ``cases`` (where ``where`` holds) grouped by the named detectors' arguments.

    A group that is every case comes back as ``slice(None)`` so callers index without copying.
    """
    by_obj: dict[int, list[int]] = defaultdict(list)
    objs: dict[int, DetectorConfig] = {}
    for i, c in enumerate(cases):
        if where is None or where[i]:
            by_obj[id(c.cfg)].append(i)
            objs[id(c.cfg)] = c.cfg
    # Distinct config objects with equal arguments for these detectors still share one call.
    merged: dict[tuple, tuple[DetectorConfig, list[int]]] = {}
    for k, idx in by_obj.items():
        key = tuple(tuple(sorted(objs[k].kwargs(p).items())) for p in prefixes)
        merged.setdefault(key, (objs[k], []))[1].extend(idx)
    out: list[tuple[DetectorConfig, np.ndarray | slice]] = []
    for cfg, idx in merged.values():
        out.append((cfg, slice(None) if len(idx) == len(cases) else np.asarray(sorted(idx))))
    return out


def members(idx: np.ndarray | slice, n: int) -> list[int]:
    """The case indices of a group from :func:`groups`."""
    return list(range(n)) if isinstance(idx, slice) else idx.tolist()


def stack(arrays: Sequence[np.ndarray | None], shape: tuple[int, ...], fill: float = 0
          ) -> np.ndarray:
    """Stack arrays of at most ``shape`` into ``(len, *shape)``, left-aligned, padded by ``fill``.

    Example:
        >>> stack([np.array([1, 2]), None, np.array([3])], (2,)).tolist()
        [[1.0, 2.0], [0.0, 0.0], [3.0, 0.0]]
    """
    out = np.full((len(arrays), *shape), fill, dtype=np.float64)
    for i, a in enumerate(arrays):
        if a is not None:
            out[(i, *(slice(0, n) for n in a.shape))] = a
    return out


def stack_same(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """One ``np.stack`` when shapes agree (the usual fleet), else zero-padded, left-aligned."""
    try:
        return np.stack(arrays)
    except ValueError:
        shape = tuple(max(a.shape[d] for a in arrays) for d in range(arrays[0].ndim))
        return stack(arrays, shape)


def stack_hist(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Stack ``(..., B + 1)`` histograms whose last slot counts nulls.

    Padding keeps that slot last, so services with fewer bins or features line up.
    """
    try:
        return np.stack(arrays)
    except ValueError:
        bmax = max(a.shape[-1] for a in arrays) - 1
        lead = tuple(max(a.shape[d] for a in arrays) for d in range(arrays[0].ndim - 1))
        out = np.zeros((len(arrays), *lead, bmax + 1))
        for i, a in enumerate(arrays):
            at = (i, *(slice(0, n) for n in a.shape[:-1]))
            out[(*at, slice(0, a.shape[-1] - 1))] = a[..., :-1]
            out[(*at, -1)] = a[..., -1]
        return out
