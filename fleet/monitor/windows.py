"""Pure summaries for the read facade: raw telemetry windows, validation checks, aggregates.

Everything returns plain JSON-able dicts of rounded numbers (NaN becomes None).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fleet.detectors import DataQuality, DetectorConfig, QualityCounts
from fleet.detectors.canary import LATENCY_EDGES_MS
from fleet.detectors.histogram import histogram_quantiles
from fleet.monitor.aggregates import ServiceAgg
from fleet.monitor.batch import EventBatch
from fleet.monitor.detect import window_error
from fleet.monitor.signals import num
from fleet.schema import FeatureSchema

FAR_OUT_SPANS = 10.0
"""A value more than this many schema ranges outside the range is "far out" (a unit change)."""
SCALE_JUMP = 100.0
"""Median magnitude this many times the reference's (either way) is a scale jump."""
MAX_ISSUES = 20
"""Issues listed at most by one validation."""


def outcomes(prediction: np.ndarray, labels: np.ndarray, task: str
             ) -> tuple[np.ndarray, np.ndarray]:
    """``(wrong, abs_error)`` per labelled answer; a failed request (NaN) is wrong.

    Example:
        >>> y = np.array([1.0, 1.0, 0.0])
        >>> w, a = outcomes(np.array([1.0, 0.0, np.nan]), y, "classification")
        >>> w.tolist()
        [0.0, 1.0, 1.0]
    """
    failed = np.isnan(prediction)
    abs_err = np.abs(prediction - labels)
    if task == "regression":
        return failed.astype(np.float64), abs_err
    return np.where(failed, 1.0, (prediction != labels).astype(np.float64)), abs_err


def metrics(batch: EventBatch, labels: Mapping[str, float], task: str) -> dict[str, Any]:
    """Request, latency and (where labels arrived) accuracy numbers of a window of events."""
    n = len(batch)
    y = np.array([labels.get(r, np.nan) for r in batch.request_ids], dtype=np.float64)
    has = ~np.isnan(y)
    wrong, abs_err = outcomes(batch.prediction[has], y[has], task)
    lat = batch.latency
    q = np.percentile(lat, [50, 95, 99]) if n else [np.nan] * 3
    out: dict[str, Any] = {
        "rows": n, "labelled": int(has.sum()),
        "label_coverage": num(has.mean()) if n else None,
        "accuracy": num(1 - wrong.mean()) if has.any() and task != "regression" else None,
        "mae": num(np.nanmean(abs_err)) if has.any() and task == "regression" else None,
        "error_rate": num(batch.failed.mean()) if n else None,
        "latency_p50_ms": num(q[0]), "latency_p95_ms": num(q[1]), "latency_p99_ms": num(q[2]),
        "latency_mean_ms": num(lat.mean()) if n else None,
    }
    return out


def prediction_summary(prediction: np.ndarray, task: str, top: int = 10) -> dict[str, Any]:
    """Class shares (classification, at most ``top``) or quantiles (regression) of answers.

    Example:
        >>> prediction_summary(np.array([0.0, 1.0, 1.0, np.nan]), "classification")
        {'shares': {'1': 0.5, '0': 0.25}, 'failed': 0.25}
    """
    p = prediction[~np.isnan(prediction)]
    failed = num(np.isnan(prediction).mean()) if len(prediction) else None
    if task == "regression":
        qs = np.percentile(p, [5, 50, 95]) if len(p) else [np.nan] * 3
        return {"mean": num(p.mean()) if len(p) else None, "p5": num(qs[0]),
                "p50": num(qs[1]), "p95": num(qs[2]), "failed": failed}
    values, counts = np.unique(p, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:top]
    return {"shares": {f"{values[i]:g}": num(counts[i] / len(prediction)) for i in order},
            "failed": failed}


def null_rates(X: np.ndarray, names: Sequence[str], top: int = 5) -> dict[str, float]:
    """Null share of the ``top`` features with the most nulls (features without any left out)."""
    if not len(X):
        return {}
    rate = np.isnan(X).mean(axis=0)
    order = [int(j) for j in np.argsort(-rate, kind="stable") if rate[j] > 0][:top]
    return {names[j]: num(rate[j]) for j in order}  # type: ignore[misc]


def quality_issues(X: np.ndarray, schema: FeatureSchema, cfg: DetectorConfig, *,
                   labelled: int, due: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The quality detector on one window: issues ``{check, feature, value, threshold}``.

    Args:
        X: ``(N, F)`` window, NaN for nulls.
        schema: ranges and nullability per feature.
        cfg: the service's thresholds.
        labelled: labelled rows among ``due``.
        due: predictions in the window's span (for label coverage).

    Returns:
        ``(issues, rates)`` with the window's overall rates.
    """
    names = schema.names
    low = np.array([np.nan if f.min is None else f.min for f in schema.features])
    high = np.array([np.nan if f.max is None else f.max for f in schema.features])
    counts = QualityCounts.from_window(X[None], low=low, high=high)
    counts = QualityCounts(counts.rows, counts.nulls, counts.out_of_range, counts.duplicates,
                           np.array([labelled]), np.array([due]), counts.rejected)
    r = DataQuality(**cfg.kwargs("quality")).update(counts).result
    assert r is not None
    issues: list[dict[str, Any]] = []
    for j, name in enumerate(names):
        if r.nulls[0, j]:
            issues.append(_issue("nulls", name, r.null_rate[0, j], cfg.quality_max_null_rate))
        if r.out_of_range[0, j]:
            issues.append(_issue("out_of_range", name, r.out_of_range_rate[0, j],
                                 cfg.quality_max_out_of_range_rate))
        if not schema.features[j].nullable and counts.nulls[0, j]:
            issues.append(_issue("schema", name, r.null_rate[0, j], 0.0))
    if r.duplicates[0]:
        issues.append(_issue("duplicates", None, r.duplicate_rate[0],
                             cfg.quality_max_duplicate_rate))
    if r.low_labels[0]:
        issues.append(_issue("label_coverage", None, r.label_coverage[0],
                             cfg.quality_min_label_coverage))
    rates = {"null_rate": num(np.isnan(X).mean()) if X.size else None,
             "label_coverage": num(r.label_coverage[0]),
             "duplicate_rate": num(r.duplicate_rate[0])}
    return issues, rates


def sanity_issues(X: np.ndarray, schema: FeatureSchema, cfg: DetectorConfig,
                  reference_median: np.ndarray | None) -> list[dict[str, Any]]:
    """Checks that hold however the data drifts, both typical of unit changes.

    Values far outside the schema range, and medians that jumped by orders of magnitude from
    the reference window's.

    Example:
        >>> from fleet.schema import FeatureSchema
        >>> s = FeatureSchema.numeric(["a"], a=(0.0, 10.0))
        >>> X = np.full((100, 1), 5000.0)
        >>> [i["check"] for i in sanity_issues(X, s, DetectorConfig(), np.array([5.0]))]
        ['far_out_of_range', 'scale_jump']
    """
    issues: list[dict[str, Any]] = []
    if not len(X):
        return issues
    with np.errstate(invalid="ignore", all="ignore"):
        for j, f in enumerate(schema.features):
            col = X[:, j]
            if f.min is not None and f.max is not None:
                span = max(f.max - f.min, 1e-12)
                far = ((col < f.min - FAR_OUT_SPANS * span) | (col > f.max + FAR_OUT_SPANS * span))
                rate = float(far.mean())
                if rate > cfg.quality_max_out_of_range_rate:
                    issues.append(_issue("far_out_of_range", f.name, rate,
                                         cfg.quality_max_out_of_range_rate))
            if reference_median is not None and j < len(reference_median):
                ref, cur = abs(float(reference_median[j])), abs(float(np.nanmedian(col)))
                if ref > 0 and cur > 0 and max(cur / ref, ref / cur) >= SCALE_JUMP:
                    issues.append(_issue("scale_jump", f.name, cur / ref, SCALE_JUMP))
    return issues


def _issue(check: str, feature: str | None, value: float, threshold: float) -> dict[str, Any]:
    return {"check": check, "feature": feature, "value": num(value), "threshold": num(threshold)}


def agg_window(agg: ServiceAgg, version: int) -> dict[str, Any]:
    """The monitor's window numbers of one version (what the tick judged)."""
    ops, acc = agg.ops.get(version), agg.acc.get(version)
    n = ops.total if ops else 0
    q = (histogram_quantiles(ops.window("lat"), LATENCY_EDGES_MS, [0.5, 0.95, 0.99])
         if ops and n else [np.nan] * 3)
    scored = int(acc.window("scored")) if acc else 0
    labelled = acc.total if acc else 0
    return {
        "rows": n, "labelled": labelled,
        "accuracy": num(1 - acc.window("wrong") / scored)
        if acc and scored and agg.task != "regression" else None,
        "mae": num(acc.window("abs") / labelled) if acc and labelled and agg.task == "regression"
        else None,
        "error_rate": num(ops.window("err") / n) if ops and n else None,
        "latency_p50_ms": num(q[0]), "latency_p95_ms": num(q[1]), "latency_p99_ms": num(q[2]),
    }


def performance_state(agg: ServiceAgg | None, cfg: DetectorConfig) -> dict[str, Any]:
    """The performance detector's state: latched alarm, window error, CUSUM statistic."""
    n, rate = window_error(agg, agg.champion) if agg else (0, float("nan"))
    stat = max(agg.cusum["stat"]) if agg and agg.cusum else None
    latch = agg.latch if agg else None
    return {"alarm": latch is not None,
            "baseline_error": num(latch["baseline"]) if latch else None,
            "window_error": num(rate), "window_labelled": n,
            "cusum_statistic": num(stat) if stat is not None else None,
            "cusum_threshold": cfg.performance_threshold, "min_effect": cfg.performance_min_effect}


def reference_median(agg: ServiceAgg) -> np.ndarray | None:
    """Per-feature median of the frozen reference, read off its quantile edges."""
    ref = agg.reference
    if ref is None:
        return None
    levels = np.arange(1, ref.n_bins) / ref.n_bins
    return np.array([np.interp(0.5, levels, row) for row in ref.edges[:-1]])
