"""Fixed-bin histograms for the drift detectors: edges from reference quantiles, vectorised binning.

Shapes: raw windows are ``(services, rows, features)``; edges ``(services, features, bins - 1)``;
counts ``(services, features, bins + 1)`` where the last slot counts NaN (nulls).
"""

from __future__ import annotations

import numpy as np


def nan_quantiles(x: np.ndarray, q: np.ndarray | list[float], *, axis: int = -1) -> np.ndarray:
    """Quantiles along ``axis`` ignoring NaN (linear interpolation, as ``np.nanquantile``).

    Vectorised: one sort instead of ``np.nanquantile``'s loop over slices. Slices with no
    finite value give NaN.

    Args:
        x: values, NaN for missing.
        q: quantile levels in [0, 1].
        axis: axis to reduce.

    Returns:
        Array shaped like ``x`` without ``axis``, with a trailing axis of ``len(q)``.

    Example:
        >>> nan_quantiles(np.array([[1.0, 2.0, 3.0, np.nan], [4.0, np.nan, np.nan, np.nan]]),
        ...               [0.0, 0.5, 1.0]).tolist()
        [[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]]
    """
    qs = np.asarray(q, dtype=np.float64)
    s = np.sort(np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1), axis=-1)  # NaN last
    n = (~np.isnan(s)).sum(axis=-1, keepdims=True)
    pos = qs * np.maximum(n - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    frac = pos - lo
    a = np.take_along_axis(s, lo, axis=-1)
    b = np.take_along_axis(s, hi, axis=-1)
    return np.where(n > 0, a + (b - a) * frac, np.nan)


def quantile_edges(reference: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Inner bin edges per (service, feature) at the reference window's quantiles.

    Bins are ``(-inf, e0), [e0, e1), ..., [e_last, inf)``, so every later value has a bin and
    each bin holds about ``1 / n_bins`` of the reference. Tied quantiles (discrete features)
    give repeated edges and empty bins, which the detectors tolerate.

    Args:
        reference: window of shape ``(S, N, F)``, NaN for nulls.
        n_bins: bins for finite values.

    Returns:
        Edges of shape ``(S, F, n_bins - 1)``; NaN where a feature had no finite value.

    Example:
        >>> ref = np.arange(100.0).reshape(1, 100, 1)
        >>> quantile_edges(ref, 4).tolist()
        [[[24.75, 49.5, 74.25]]]
    """
    if n_bins < 2:
        raise ValueError(f"n_bins must be at least 2; got {n_bins!r}")
    levels = np.arange(1, n_bins) / n_bins
    return nan_quantiles(reference, levels, axis=1)


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Count a window into fixed bins per (service, feature), NaN in its own last slot.

    Args:
        values: window of shape ``(S, N, F)``, NaN for nulls.
        edges: inner edges of shape ``(S, F, B - 1)`` from :func:`quantile_edges`.

    Returns:
        int64 counts of shape ``(S, F, B + 1)``: ``B`` value bins, then the NaN count.

    Example:
        >>> v = np.array([[[0.0], [1.0], [2.0], [2.5], [np.nan]]])
        >>> bin_counts(v, np.array([[[1.0, 2.0]]])).tolist()
        [[[1, 1, 2, 1]]]
    """
    x = np.moveaxis(np.asarray(values, dtype=np.float64), 1, -1)  # (S, F, N)
    e = np.asarray(edges, dtype=np.float64)
    s, f, _ = x.shape
    n_slots = e.shape[-1] + 2
    # Loop over the few edges, not the many values: memory stays at one window.
    idx = np.zeros(x.shape, dtype=np.int64)
    for j in range(e.shape[-1]):
        idx += x >= e[..., j : j + 1]
    idx[np.isnan(x)] = n_slots - 1
    flat = (np.arange(s * f).reshape(s, f, 1) * n_slots + idx).ravel()
    return np.bincount(flat, minlength=s * f * n_slots).reshape(s, f, n_slots)


def histogram_quantiles(counts: np.ndarray, edges: np.ndarray, q: list[float]) -> np.ndarray:
    """Quantiles read off a histogram, interpolating linearly inside the bin.

    The open first and last bins have no width; a quantile falling there returns their finite
    edge. NaN slots are not part of ``counts`` here (pass value bins only).

    Args:
        counts: shape ``(..., B)`` over bins ``(-inf, e0), [e0, e1), ..., [e_last, inf)``.
        edges: the ``B - 1`` inner edges, shared by every row, increasing.
        q: quantile levels in [0, 1].

    Returns:
        Shape ``(..., len(q))``; NaN for empty histograms.

    Example:
        >>> histogram_quantiles(np.array([0, 10, 10, 0]), np.array([0.0, 1.0, 2.0]), [0.5, 0.75])
        array([1. , 1.5])
    """
    c = np.asarray(counts, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    n = c.sum(axis=-1, keepdims=True)
    cum = np.cumsum(c, axis=-1)
    target = np.asarray(q, dtype=np.float64) * n  # (..., Q)
    b = np.minimum((cum[..., None, :] < target[..., :, None]).sum(axis=-1), c.shape[-1] - 1)
    lower = np.concatenate([e[:1], e])[b]  # bin b spans [lower, upper)
    upper = np.concatenate([e, e[-1:]])[b]
    below = np.take_along_axis(cum, b, axis=-1) - np.take_along_axis(c, b, axis=-1)
    inside = np.take_along_axis(c, b, axis=-1)
    frac = np.clip((target - below) / np.where(inside > 0, inside, 1.0), 0.0, 1.0)
    return np.where(n > 0, lower + (upper - lower) * frac, np.nan)


def log_edges(low: float, high: float, n_bins: int) -> np.ndarray:
    """Geometrically spaced inner edges from ``low`` to ``high``, e.g. for latency in ms.

    Example:
        >>> log_edges(1.0, 100.0, 3).tolist()
        [1.0, 10.0, 100.0]
    """
    return np.geomspace(low, high, n_bins)
