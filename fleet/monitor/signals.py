"""Turn a tick's detector results into incident signals with evidence numbers and an onset.

Pure. One function per incident kind; each returns the signal of a service or ``None``. Evidence
holds only JSON numbers, strings and flat lists (no NaN), rounded to 4 significant digits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fleet.detectors.canary import LATENCY_EDGES_MS
from fleet.detectors.histogram import histogram_quantiles
from fleet.detectors.psi import psi
from fleet.incidents import Evidence, Signal
from fleet.monitor.aggregates import ServiceAgg
from fleet.monitor.detect import Case, Drift, Quality, window_error

TOP_FEATURES = 5
"""Drifted or faulty features named in an evidence list, worst first."""
QUANTILE_NAMES = ("p50", "p95", "p99")


def num(v: Any, digits: int = 4) -> float | int | None:
    """A JSON-safe number: ints stay, floats keep ``digits`` significant digits, NaN is None.

    Example:
        >>> num(0.123456), num(float("nan")), num(np.int64(3)), num(1234567.8)
        (0.1235, None, 3, 1235000.0)
    """
    if isinstance(v, bool | np.bool_):
        return int(v)
    if isinstance(v, int | np.integer):
        return int(v)
    f = float(v)
    if not math.isfinite(f):
        return None
    return float(f"{f:.{digits}g}")


def evidence(**items: Any) -> Evidence:
    """Evidence dict from keyword values, numpy values made plain.

    Numbers are rounded, NaN scalars dropped and NaN inside lists written ``"nan"``.
    """
    out: Evidence = {}
    for k, v in items.items():
        if isinstance(v, str | bool):
            out[k] = v
        elif isinstance(v, list | tuple | np.ndarray):
            out[k] = [x if isinstance(x, str) else (num(x) if num(x) is not None else "nan")
                      for x in list(v)]  # type: ignore[misc]
        elif v is not None and num(v) is not None:
            out[k] = num(v)  # type: ignore[assignment]
    return out


def _signal(c: Case, kind: str, severity: str, detector: str, ev: Evidence, now: float,
            **extra: Any) -> Signal:
    return Signal(service=c.service, kind=kind, severity=severity, detector=detector,  # type: ignore[arg-type]
                  evidence=ev, at=now, **extra)


def _first_block(agg: ServiceAgg, bad: Any, ring: Any = None) -> int | None:
    """Event index of the first block (oldest first) for which ``bad(slot)`` holds."""
    ring = ring if ring is not None else agg.inputs
    for slot in ring.order():
        if ring.rows[slot] and bad(slot):
            return ring.first_event(int(slot))
    return None


# --- kinds -------------------------------------------------------------------------------
def performance_drop(c: Case, held: bool, now: float) -> Signal | None:
    """A latched CUSUM alarm on the champion's labelled error stream."""
    latch = c.agg.latch
    if not held or latch is None:
        return None
    n, rate = window_error(c.agg, c.agg.champion)
    rise = latch["current"] - latch["baseline"]
    # The CUSUM statistic crossed ``cusum_threshold`` at the alarm and restarted; the lasting
    # numbers are the error-rate rise it found and the window that keeps the alarm latched.
    ev = evidence(statistic=rise, threshold=c.cfg.performance_min_effect,
                  cusum_threshold=c.cfg.performance_threshold, baseline_error=latch["baseline"],
                  current_error=latch["current"], window_error=rate, window_labelled=n,
                  onset_event=latch["onset_event"], alarm_event=latch["alarm_event"])
    return _signal(c, "performance_drop", "critical" if rise >= 0.1 else "warning", "cusum",
                   ev, now, onset=int(latch["onset_event"]), onset_at=latch["onset_at"],
                   version=c.agg.champion)


def _top(values: np.ndarray, flags: np.ndarray, names: Sequence[str]) -> list[int]:
    order = np.argsort(-np.nan_to_num(values, nan=-1.0))
    return [int(j) for j in order if flags[j] and j < len(names)][:TOP_FEATURES]


def drift(c: Case, d: Drift, i: int, names: Sequence[str], now: float) -> Signal | None:
    """Covariate drift when features moved; prediction drift when only the answers moved."""
    if not d.active[i]:
        return None
    f = c.agg.n_features
    feat_psi, feat_flag = d.psi[i, 1: f + 1], d.drifted[i, 1: f + 1]
    if feat_flag.any():
        top = _top(feat_psi, feat_flag, names)
        ev = evidence(features=[names[j] for j in top], psi=feat_psi[top],
                      ks=d.ks[i, 1: f + 1][top], statistic=float(np.nanmax(feat_psi[top])),
                      threshold=c.cfg.psi_threshold, ks_min_statistic=c.cfg.ks_min_statistic,
                      drifted_features=int(feat_flag.sum()), prediction_psi=d.psi[i, 0],
                      window_rows=d.n_cur[i], reference_rows=d.n_ref[i])
        return _signal(c, "covariate_drift", "warning", "psi+ks", ev, now,
                       onset=_drift_onset(c, top[0]), version=c.agg.champion)
    if d.drifted[i, 0]:
        ev = evidence(statistic=d.psi[i, 0], threshold=c.cfg.psi_threshold, ks=d.ks[i, 0],
                      ks_p_value=d.ks_p[i, 0], window_rows=d.n_cur[i], reference_rows=d.n_ref[i])
        return _signal(c, "prediction_drift", "warning", "psi+ks", ev, now,
                       onset=_drift_onset(c, -1), version=c.agg.champion)
    return None


def _drift_onset(c: Case, col: int) -> int | None:
    """First block whose own histogram of column ``col`` (-1: prediction) is past the PSI limit."""
    agg = c.agg
    ref = agg.reference
    if ref is None:
        return None
    b = agg.n_bins

    def bad(slot: int) -> bool:
        cur = (agg.inputs.data["pred"][slot][: b + 1] if col < 0
               else agg.inputs.data["hist"][slot][col])
        return bool(psi(ref.counts[col], cur) > c.cfg.psi_threshold)

    return _first_block(agg, bad)


def data_quality(c: Case, q: Quality, i: int, names: Sequence[str], now: float) -> Signal | None:
    """Nulls, out-of-range values, duplicate bursts, missing labels or schema rejections."""
    f = c.agg.n_features
    nulls, oor = q.nulls[i, :f], q.out_of_range[i, :f]
    checks = [name for name, hit in (
        ("nulls", nulls.any()), ("out_of_range", oor.any()), ("duplicates", q.duplicates[i]),
        ("label_coverage", q.low_labels[i]), ("schema", q.schema[i])) if hit]
    if not checks:
        return None
    bad = nulls | oor
    worst = np.fmax(np.nan_to_num(q.null_rate[i, :f]), np.nan_to_num(q.out_of_range_rate[i, :f]))
    top = _top(worst, bad, names)
    ev = evidence(checks=checks, features=[names[j] for j in top],
                  null_rate=q.null_rate[i, :f][top],
                  out_of_range_rate=q.out_of_range_rate[i, :f][top],
                  statistic=float(worst[top].max()) if top else 0.0,
                  max_null_rate=c.cfg.quality_max_null_rate,
                  max_out_of_range_rate=c.cfg.quality_max_out_of_range_rate,
                  duplicate_rate=q.duplicate_rate[i], label_coverage=q.label_coverage[i],
                  rejected_rate=q.rejected_rate[i], window_rows=q.rows[i])
    critical = oor.any() or float(np.nanmax(np.append(q.null_rate[i, :f], 0.0))) >= 0.2
    onset = None
    if top:
        j, field = top[0], ("nulls" if nulls[top[0]] else "oor")
        lim = (c.cfg.quality_max_null_rate if field == "nulls"
               else c.cfg.quality_max_out_of_range_rate)
        onset = _first_block(c.agg, lambda s: c.agg.inputs.data[field][s][j]
                             > lim * c.agg.inputs.rows[s])
    return _signal(c, "data_quality", "critical" if critical else "warning", "quality", ev, now,
                   onset=onset, version=c.agg.champion)


def ops_regression(c: Case, row: dict[str, Any] | None, now: float) -> list[Signal]:
    """Latency and error-rate regressions of the champion against its ops baseline."""
    if row is None:
        return []
    agg, out = c.agg, []
    ref_version = agg.ops_ref.version if agg.ops_ref else None
    sizes = {"window_rows": int(row["n_cur"]), "reference_rows": int(row["n_ref"]),
             "reference_version": ref_version}
    if row["latency"].any():
        flagged = [QUANTILE_NAMES[k] for k in range(3) if row["latency"][k]]
        ev = evidence(quantiles=flagged, latency_ms=row["cur_latency"],
                      reference_ms=row["ref_latency"], ratio=row["latency_ratio"],
                      statistic=float(np.nanmax(row["latency_ratio"])),
                      threshold=1 + c.cfg.regression_latency_rel,
                      threshold_abs_ms=c.cfg.regression_latency_abs_ms, **sizes)
        ring = agg.ops[agg.champion]  # type: ignore[index]
        limit = row["ref_latency"][1] * (1 + c.cfg.regression_latency_rel)
        onset = _first_block(agg, lambda s: histogram_quantiles(
            ring.data["lat"][s], LATENCY_EDGES_MS, [0.95])[0] > limit, ring)
        severe = float(np.nan_to_num(row["latency_ratio"][2])) >= 2.0
        out.append(_signal(c, "latency_regression", "critical" if severe else "warning",
                           "regression", ev, now, onset=onset, version=agg.champion))
    if row["error"]:
        ev = evidence(statistic=row["error_rate_current"],
                      reference_error_rate=row["error_rate_reference"],
                      p_value=row["error_p_value"], threshold_abs=c.cfg.regression_error_abs,
                      threshold_rel=c.cfg.regression_error_rel, alpha=c.cfg.regression_alpha,
                      **sizes)
        rise = row["error_rate_current"] - row["error_rate_reference"]
        out.append(_signal(c, "error_rate_regression", "critical" if rise >= 0.1 else "warning",
                           "regression", ev, now, version=agg.champion))
    return out


def canary(c: Case, row: dict[str, Any] | None, now: float, deadline_s: float) -> Signal | None:
    """``canary_fail`` at once; ``canary_inconclusive`` only past the canary's deadline."""
    arms = c.agg.canary
    if row is None or arms is None:
        return None
    age = now - arms.since
    verdict = row["verdict"]
    if verdict == "pass" or (verdict == "inconclusive" and age < deadline_s):
        return None
    ev = evidence(**{k: v for k, v in row.items() if k != "verdict"}, verdict=verdict,
                  age_s=age, deadline_s=deadline_s, champion_version=arms.champion)
    kind, severity = (("canary_fail", "critical") if verdict == "fail"
                      else ("canary_inconclusive", "warning"))
    return _signal(c, kind, severity, "canary", ev, now, onset_at=arms.since,
                   version=arms.challenger)
