"""Vectorised two-sample tests: error proportions (z-test, Fisher exact) and binned Mann-Whitney U.

Every function takes arrays of any matching shape and tests element by element; "rise"
tests are one-sided: sample 1 (current, challenger) worse than sample 0 (reference, champion).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import hypergeom, norm


def z_rise_p_value(e0: np.ndarray, n0: np.ndarray, e1: np.ndarray, n1: np.ndarray) -> np.ndarray:
    """Pooled two-proportion z-test of ``e1 / n1 > e0 / n0``; 1.0 where undefined.

    Example:
        >>> round(float(z_rise_p_value(10, 1000, 30, 1000)), 5)
        0.0007
    """
    e0, n0, e1, n1 = (np.asarray(v, dtype=np.float64) for v in (e0, n0, e1, n1))
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = (e0 + e1) / (n0 + n1)
        se = np.sqrt(pooled * (1 - pooled) * (1 / n0 + 1 / n1))
        z = (e1 / n1 - e0 / n0) / se
    return np.where(np.isfinite(z), norm.sf(z), 1.0)


def fisher_rise_p_value(
    e0: np.ndarray, n0: np.ndarray, e1: np.ndarray, n1: np.ndarray
) -> np.ndarray:
    """One-sided Fisher exact test of "sample 1 has the higher error rate".

    Given both margins, sample 1's error count is hypergeometric; the p-value is
    ``P(X >= e1)`` (``scipy.stats.fisher_exact(..., alternative="greater")``, vectorised).

    Example:
        >>> round(float(fisher_rise_p_value(1, 20, 7, 20)), 4)
        0.0218
    """
    e0, n0, e1, n1 = (np.asarray(v, dtype=np.int64) for v in (e0, n0, e1, n1))
    return hypergeom.sf(e1 - 1, n0 + n1, e0 + e1, n1)


def rise_p_value(e0: np.ndarray, n0: np.ndarray, e1: np.ndarray, n1: np.ndarray) -> np.ndarray:
    """Fisher exact where an expected cell count is below 5, the z-test elsewhere.

    Example:
        >>> rise_p_value([1, 100], [20, 1000], [7, 150], [20, 1000]).round(4).tolist()
        [0.0218, 0.0004]
    """
    e0, n0, e1, n1 = (np.asarray(v, dtype=np.int64) for v in (e0, n0, e1, n1))
    n, e = n0 + n1, e0 + e1
    with np.errstate(invalid="ignore", divide="ignore"):
        smallest = np.minimum(n0, n1) * np.minimum(e, n - e) / n  # smallest expected cell
    small = ~(smallest >= 5)  # NaN (an empty sample) goes to Fisher too
    return np.where(small, fisher_rise_p_value(e0, n0, e1, n1), z_rise_p_value(e0, n0, e1, n1))


def diff_upper_bound(
    e0: np.ndarray, n0: np.ndarray, e1: np.ndarray, n1: np.ndarray, alpha: float
) -> np.ndarray:
    """One-sided upper ``1 - alpha`` confidence bound of ``p1 - p0``.

    Agresti-Caffo: add one error and one success to each sample, then Wald; this keeps its
    coverage for small counts, where plain Wald is too narrow.

    Example:
        >>> round(float(diff_upper_bound(30, 300, 30, 300, 0.05)), 4)
        0.0406
    """
    e0, n0, e1, n1 = (np.asarray(v, dtype=np.float64) for v in (e0, n0, e1, n1))
    p0 = (e0 + 1) / (n0 + 2)
    p1 = (e1 + 1) / (n1 + 2)
    se = np.sqrt(p0 * (1 - p0) / (n0 + 2) + p1 * (1 - p1) / (n1 + 2))
    return p1 - p0 + norm.isf(alpha) * se


def mann_whitney_binned(counts0: np.ndarray, counts1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mann-Whitney U on two histograms over the same ordered bins (values in a bin are ties).

    Args:
        counts0: ``(..., B)`` counts of sample 0 (champion).
        counts1: ``(..., B)`` counts of sample 1 (challenger).

    Returns:
        ``(effect, p_value)``: ``effect = U1 / (n0 n1)``, the probability that a sample-1 value
        exceeds a sample-0 value (ties count one half; 0.5 = no difference), and the one-sided
        normal-approximation p-value (tie-corrected, continuity-corrected) of "sample 1 is
        larger". NaN / 1.0 where a sample is empty.

    Example:
        >>> eff, p = mann_whitney_binned(np.array([30, 50, 20, 0]), np.array([10, 40, 40, 10]))
        >>> round(float(eff), 3), float(p) < 1e-6   # scipy.stats.mannwhitneyu: 0.695, 1.7e-07
        (0.695, True)
    """
    c0 = np.asarray(counts0, dtype=np.float64)
    c1 = np.asarray(counts1, dtype=np.float64)
    n0 = c0.sum(axis=-1)
    n1 = c1.sum(axis=-1)
    below0 = np.cumsum(c0, axis=-1) - c0
    u1 = (c1 * (below0 + 0.5 * c0)).sum(axis=-1)
    n = n0 + n1
    t = c0 + c1
    with np.errstate(invalid="ignore", divide="ignore"):
        ties = (t**3 - t).sum(axis=-1) / (n * (n - 1))
        var = n0 * n1 / 12.0 * ((n + 1) - ties)
        z = (u1 - n0 * n1 / 2.0 - 0.5) / np.sqrt(var)
        effect = u1 / (n0 * n1)
    p = np.where(np.isfinite(z), norm.sf(z), 1.0)
    return effect, p
