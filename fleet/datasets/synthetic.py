"""Synthetic concept-drift streams (numpy): SEA abrupt/gradual, rotating hyperplane, stationary.

Every generator is deterministic given ``seed`` and records the true drift onsets, so evals can
measure detection delay and run an oracle that retrains at each true drift.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fleet.datasets.stream import DriftStream

SEA_THRESHOLDS = (8.0, 9.0, 7.0, 9.5)
"""The four SEA concepts: ``y = x1 + x2 <= theta`` (Street & Kim, 2001)."""


def irregular_points(n: int, k: int, *, min_gap: int, margin: int, seed: int) -> list[int]:
    """Pick ``k`` drift onsets in ``[margin, n - margin)`` at irregular, well-separated positions.

    Irregular spacing keeps periodic retraining from matching an oracle by luck.

    >>> irregular_points(20_000, 3, min_gap=3000, margin=2000, seed=1) == sorted(
    ...     irregular_points(20_000, 3, min_gap=3000, margin=2000, seed=1))
    True
    """
    if k == 0:
        return []
    span = n - 2 * margin - (k - 1) * min_gap
    if span <= 0:
        raise ValueError(f"cannot fit {k} drifts {min_gap} apart in {n} rows with margin {margin}")
    rng = np.random.default_rng(seed)
    base = np.sort(rng.integers(0, span, size=k))
    return [int(margin + b + i * min_gap) for i, b in enumerate(base)]


def _concept_index(n: int, drifts: Sequence[int], widths: Sequence[int], rng: np.random.Generator):
    """Concept id per row; inside a gradual drift the new concept wins with linearly rising odds."""
    idx = np.zeros(n, dtype=np.int64)
    t = np.arange(n)
    u = rng.random(n)
    for k, (p, w) in enumerate(zip(drifts, widths, strict=True), start=1):
        if w <= 1:
            idx[t >= p] = k
        else:
            prob_new = np.clip((t - p) / w, 0.0, 1.0)
            switch = (t >= p) & (u < prob_new)
            idx[switch] = k
    return idx


def sea(
    n: int,
    *,
    drifts: Sequence[int] = (),
    width: int | Sequence[int] = 1,
    noise: float = 0.1,
    seed: int = 0,
    name: str | None = None,
) -> DriftStream:
    """SEA stream: 3 features uniform on [0, 10]; ``y = x1 + x2 <= theta``; x3 is irrelevant.

    Args:
        n: rows.
        drifts: row indices where the concept changes (cycling through :data:`SEA_THRESHOLDS`).
        width: rows a drift takes (1 = abrupt; larger = gradual), one value or one per drift.
        noise: share of labels flipped at random.
        seed: makes the stream reproducible.
        name: report name (default ``sea_abrupt`` or ``sea_gradual``).
    """
    rng = np.random.default_rng(seed)
    widths = [width] * len(drifts) if isinstance(width, int) else list(width)
    X = rng.uniform(0.0, 10.0, size=(n, 3))
    concept = _concept_index(n, list(drifts), widths, rng)
    theta = np.asarray(SEA_THRESHOLDS)[concept % len(SEA_THRESHOLDS)]
    y = (X[:, 0] + X[:, 1] <= theta).astype(np.int64)
    flip = rng.random(n) < noise
    y[flip] = 1 - y[flip]
    gradual = any(w > 1 for w in widths)
    return DriftStream(
        name or ("sea_gradual" if gradual else "sea_abrupt"),
        X, y, ("x1", "x2", "x3"), tuple(int(p) for p in drifts), tuple(int(w) for w in widths),
        {"generator": "sea", "noise": noise, "seed": seed},
    )


def rotating_hyperplane(
    n: int,
    *,
    drifts: Sequence[int] = (),
    width: int = 2000,
    d: int = 10,
    noise: float = 0.05,
    seed: int = 0,
    name: str = "hyperplane_incremental",
) -> DriftStream:
    """Rotating hyperplane: ``y = w·(x - 0.5) >= 0`` with x uniform on [0, 1]^d.

    At each drift the weights rotate smoothly (incremental drift) from one random hyperplane to
    the next over ``width`` rows.
    """
    rng = np.random.default_rng(seed)
    X = rng.random((n, d))
    weights = rng.normal(size=(len(drifts) + 1, d))
    W = np.repeat(weights[:1], n, axis=0)
    t = np.arange(n)
    for k, p in enumerate(drifts, start=1):
        a = np.clip((t - p) / max(width, 1), 0.0, 1.0)[:, None]
        moving = t >= p
        W[moving] = (1 - a[moving]) * weights[k - 1] + a[moving] * weights[k]
    y = (np.einsum("ij,ij->i", W, X - 0.5) >= 0).astype(np.int64)
    flip = rng.random(n) < noise
    y[flip] = 1 - y[flip]
    return DriftStream(
        name, X, y, tuple(f"x{i + 1}" for i in range(d)),
        tuple(int(p) for p in drifts), tuple(int(width) for _ in drifts),
        {"generator": "rotating_hyperplane", "noise": noise, "seed": seed, "d": d},
    )


def stationary(n: int, *, noise: float = 0.1, seed: int = 0) -> DriftStream:
    """A SEA stream with one concept throughout: the control where nothing should happen."""
    return sea(n, drifts=(), noise=noise, seed=seed, name="stationary")
