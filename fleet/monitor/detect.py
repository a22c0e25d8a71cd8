"""Run each detector once per kind over a batch of services: stack their aggregates, call, split.

Pure. Drift (PSI + KS), data quality, the performance CUSUM with its alarm latch, and latency /
failure-rate regressions (canary analysis is in :mod:`fleet.monitor.canary`). The Python loops
here only gather each service's small arrays; the maths run on the stacks (see
:mod:`fleet.monitor.stacking`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fleet.detectors import (
    KS,
    PSI,
    DataQuality,
    ErrorRateCusum,
    QualityCounts,
    Regression,
    WindowStats,
)
from fleet.detectors.canary import LATENCY_EDGES_MS
from fleet.monitor.aggregates import Feed, ServiceAgg
from fleet.monitor.canary import canary, canary_row
from fleet.monitor.stacking import Case, groups, members, stack, stack_hist, stack_same

__all__ = [
    "Case", "Drift", "Ops", "Quality", "canary", "canary_row", "drift", "drift_counts",
    "groups", "latch", "members", "performance", "quality", "quality_counts", "regression",
    "stack", "window_error",
]

CUSUM_CHUNK = 4_096
"""Labelled events per CUSUM call; a service with a long backlog is fed in chunks."""


# --- drift -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Drift:
    """PSI and KS per (service, column); column 0 is the prediction, 1..F the features."""

    active: np.ndarray
    """``(S,)`` bool: the service has a frozen reference and a current window."""
    psi: np.ndarray
    """``(S, 1 + Fmax)``."""
    ks: np.ndarray
    """``(S, 1 + Fmax)`` binned KS statistic."""
    ks_p: np.ndarray
    """``(S, 1 + Fmax)``."""
    drifted: np.ndarray
    """``(S, 1 + Fmax)`` bool: PSI or KS flagged the column."""
    n_ref: np.ndarray
    """``(S,)`` reference rows."""
    n_cur: np.ndarray
    """``(S,)`` current values of the first feature (the window the tests saw)."""


def drift_counts(cases: Sequence[Case]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(active, reference, current)``: counts ``(S, 1 + Fmax, Bmax + 1)``, prediction first.

    The current window is the sum of the ring's blocks, taken for all services at once.
    """
    active = np.array([c.agg.reference is not None for c in cases], dtype=bool)
    refs = [c.agg.reference.counts if c.agg.reference is not None
            else np.zeros((c.agg.n_features + 1, c.agg.n_bins + 1)) for c in cases]
    ref_feat = stack_hist([r[:-1] for r in refs])
    ref_pred = stack_hist([r[-1] for r in refs])
    cur_feat = stack_hist([c.agg.inputs.sums["hist"] for c in cases])
    cur_pred = stack_hist([c.agg.inputs.sums["pred"][: c.agg.n_bins + 1] for c in cases])
    ref = np.concatenate([ref_pred[:, None], ref_feat], axis=1)
    cur = np.concatenate([cur_pred[:, None], cur_feat], axis=1)
    return active, ref, cur


def drift(cases: Sequence[Case]) -> Drift:
    """PSI and KS of every service's current window against its reference, stacked."""
    s = len(cases)
    if not s:
        z = np.zeros((0, 2))
        return Drift(np.zeros(0, bool), z, z, z, z.astype(bool), np.zeros(0), np.zeros(0))
    active, ref, cur = drift_counts(cases)
    cols = ref.shape[1]
    out = {k: np.full((s, cols), np.nan) for k in ("psi", "ks", "ks_p")}
    flag = np.zeros((s, cols), dtype=bool)
    for cfg, idx in groups(cases, "psi", "ks", where=active):
        pr = PSI(**cfg.kwargs("psi")).update(ref[idx], cur[idx]).result
        kr = KS(**cfg.kwargs("ks")).update(ref[idx], cur[idx]).result
        assert pr is not None and kr is not None
        out["psi"][idx], out["ks"][idx], out["ks_p"][idx] = pr.psi, kr.statistic, kr.p_value
        flag[idx] = pr.drifted | kr.drifted
    return Drift(active, out["psi"], out["ks"], out["ks_p"], flag,
                 ref[:, 1, :-1].sum(axis=1), cur[:, 1, :-1].sum(axis=1))


# --- data quality ------------------------------------------------------------------------
def quality_counts(cases: Sequence[Case], grace: int) -> QualityCounts:
    """The quality detector's counts over every service's window, stacked (features padded).

    Duplicates are those beyond the reference window's rate (a service with few, discrete
    features repeats rows all the time). Label coverage looks only at blocks older than the
    newest ``grace`` and wholly older than
    the service's usual label lag (their labels had time to arrive), and only for services
    that ever received a label.
    """
    b = [c.agg.inputs for c in cases]
    seq = stack_same([x.seq for x in b])
    rows = stack_same([x.rows for x in b])
    settled = np.array([(c.agg.inputs.seen - 1 - c.agg.label_lag) // c.agg.block_rows
                        for c in cases])[:, None]
    older = (seq >= 0) & (seq < settled) & (seq <= seq.max(axis=1, keepdims=True) - grace)
    labels = np.array([c.agg.labels_seen > 0 for c in cases], dtype=bool)
    due = np.where(labels, (rows * older).sum(axis=1), 0)
    lab = (stack_same([x.data["labelled"] for x in b]) * older).sum(axis=1)
    return QualityCounts(
        rows=rows.sum(axis=1), nulls=stack_same([x.sums["nulls"] for x in b]),
        out_of_range=stack_same([x.sums["oor"] for x in b]),
        duplicates=np.maximum(np.array([x.sums["dups"] for x in b]) - np.round(
            rows.sum(axis=1) * np.array([c.agg.reference.duplicate_rate if c.agg.reference
                                         else 0.0 for c in cases])), 0).astype(np.int64),
        labelled=np.where(due > 0, lab, 0), label_due=due,
        rejected=np.array([x.sums["rejected"] for x in b]),
    )


@dataclass(frozen=True)
class Quality:
    """Quality rates and flags, stacked; features padded to ``Fmax``."""

    null_rate: np.ndarray
    out_of_range_rate: np.ndarray
    nulls: np.ndarray
    out_of_range: np.ndarray
    duplicate_rate: np.ndarray
    duplicates: np.ndarray
    label_coverage: np.ndarray
    low_labels: np.ndarray
    rejected_rate: np.ndarray
    schema: np.ndarray
    rows: np.ndarray


def quality(cases: Sequence[Case], grace: int) -> Quality:
    """Data-quality detector over every service's window, stacked."""
    stacked = quality_counts(cases, grace)
    fmax = stacked.nulls.shape[1]
    s = len(cases)
    res: dict[str, np.ndarray] = {
        k: np.full((s, fmax), np.nan) for k in ("null_rate", "out_of_range_rate")}
    res |= {k: np.zeros((s, fmax), bool) for k in ("nulls", "out_of_range")}
    res |= {k: np.full(s, np.nan) for k in ("duplicate_rate", "label_coverage", "rejected_rate")}
    res |= {k: np.zeros(s, bool) for k in ("duplicates", "low_labels", "schema")}
    for cfg, idx in groups(cases, "quality"):
        part = QualityCounts(**{k: getattr(stacked, k)[idx] for k in (
            "rows", "nulls", "out_of_range", "duplicates", "labelled", "label_due", "rejected")})
        r = DataQuality(**cfg.kwargs("quality")).update(part).result
        assert r is not None
        for k in res:
            res[k][idx] = getattr(r, k)
    return Quality(**res, rows=stacked.rows)


# --- performance -------------------------------------------------------------------------
def performance(cases: Sequence[Case]) -> list[dict[str, float] | None]:
    """Run each champion's CUSUM over its new labelled answers; update states and latches.

    Returns, per case, the alarm raised in this tick (``None`` without one): CUSUM numbers with
    the change dated to an event index and time. States and latches are written back to the
    aggregates.
    """
    alarms: list[dict[str, float] | None] = [None] * len(cases)
    for cfg, idx in groups(cases, "performance"):
        kw = cfg.kwargs("performance")
        ids = members(idx, len(cases))
        det = _cusum_of([cases[i].agg for i in ids], kw)
        starts = np.asarray(det.to_dict()["state"]["seen"], dtype=np.int64)
        errs = stack([cases[i].feed.wrong for i in ids],
                     (max([len(cases[i].feed.wrong) for i in ids] or [0]),), fill=np.nan)
        first: dict[int, dict[str, float]] = {}
        for a in range(0, errs.shape[1], CUSUM_CHUNK):
            res = det.update(errs[:, a: a + CUSUM_CHUNK]).result
            assert res is not None
            for j in np.flatnonzero(res.alarm):
                first.setdefault(int(j), {
                    "statistic": float(res.statistic[j]), "baseline": float(res.baseline[j]),
                    "current": float(res.current[j]), "onset": float(res.onset[j]),
                    "alarm_at": float(res.alarm_at[j])})
        state = det.to_dict()["state"]
        for j, i in enumerate(ids):
            agg = cases[i].agg
            agg.cusum = {"params": kw, **{k: v[j] for k, v in state.items()}}
            agg.anchor(int(starts[j]), cases[i].feed)
            if j in first:
                alarms[i] = _dated(agg, first[j], int(starts[j]), cases[i].feed)
    return alarms


def _cusum_of(aggs: Sequence[ServiceAgg], kw: dict) -> ErrorRateCusum:
    """A CUSUM over these services, carrying each one's saved state (fresh if none or stale)."""
    det = ErrorRateCusum(len(aggs), **kw)
    blank = det.to_dict()["state"]
    keys = list(blank)
    rows = []
    for j, a in enumerate(aggs):
        st = a.cusum if a.cusum is not None and a.cusum.get("params") == kw else None
        rows.append({k: (st[k] if st else blank[k][j]) for k in keys})
    return ErrorRateCusum.from_dict({"params": det.to_dict()["params"],
                                     "state": {k: [r[k] for r in rows] for k in keys}})


def _dated(agg: ServiceAgg, alarm: dict[str, float], start: int, feed: Feed) -> dict[str, float]:
    onset_event, onset_at = agg.date(int(alarm["onset"]), start, feed)
    alarm_event, alarm_ts = agg.date(int(alarm["alarm_at"]), start, feed)
    return {**alarm, "onset_event": onset_event, "onset_at": onset_at,
            "alarm_event": alarm_event, "alarm_ts": alarm_ts}


def window_error(agg: ServiceAgg, version: int | None) -> tuple[int, float]:
    """``(scored, error rate)`` of a version's labelled window (NaN when empty)."""
    ring = agg.acc.get(version) if version is not None else None
    if ring is None:
        return 0, float("nan")
    n = int(ring.window("scored"))
    return n, (float(ring.window("wrong")) / n if n else float("nan"))


def latch(cases: Sequence[Case], alarms: Sequence[dict[str, float] | None]) -> np.ndarray:
    """Whether each service's performance alarm holds.

    An alarm latches; the latch is released once the champion's labelled window is back within
    ``min_effect`` of the pre-change error rate (or a new champion resets it).
    """
    held = np.zeros(len(cases), dtype=bool)
    for i, c in enumerate(cases):
        agg, alarm = c.agg, alarms[i]
        if alarm is not None and agg.latch is None:
            agg.latch = {k: alarm[k] for k in ("baseline", "current", "onset_event", "onset_at",
                                               "alarm_event", "alarm_ts", "statistic")}
        if agg.latch is None:
            continue
        n, rate = window_error(agg, agg.champion)
        enough = n >= c.cfg.performance_warmup
        recovered = rate <= agg.latch["baseline"] + c.cfg.performance_min_effect
        if alarm is None and enough and recovered:
            agg.latch = None
            continue
        held[i] = True
    return held


# --- latency and failures ----------------------------------------------------------------
@dataclass(frozen=True)
class Ops:
    """Each champion's request window against its ops baseline, stacked (NaN where inactive)."""

    active: np.ndarray
    """``(S,)`` bool: the service has a baseline and a current window."""
    latency: np.ndarray
    """``(S, 3)`` bool: p50 / p95 / p99 regressed."""
    latency_ratio: np.ndarray
    latency_delta_ms: np.ndarray
    ref_latency: np.ndarray
    """``(S, 3)`` ms."""
    cur_latency: np.ndarray
    error: np.ndarray
    """``(S,)`` bool: the failure rate regressed."""
    error_rate_reference: np.ndarray
    error_rate_current: np.ndarray
    error_p_value: np.ndarray
    n_ref: np.ndarray
    n_cur: np.ndarray

    def row(self, i: int) -> dict[str, Any] | None:
        """Service ``i``'s numbers, or None when it was not compared."""
        if not self.active[i]:
            return None
        return {k: getattr(self, k)[i] for k in self.__dataclass_fields__ if k != "active"}


def regression(cases: Sequence[Case]) -> Ops:
    """Latency and failure-rate regression of every champion against its ops baseline."""
    s = len(cases)
    active = np.array([c.agg.ops_ref is not None and c.agg.champion in c.agg.ops
                       and c.agg.ops[c.agg.champion].seen > 0 for c in cases], dtype=bool)
    out: dict[str, np.ndarray] = {k: np.full((s, 3), np.nan) for k in (
        "latency_ratio", "latency_delta_ms", "ref_latency", "cur_latency")}
    out |= {k: np.full(s, np.nan) for k in ("error_rate_reference", "error_rate_current",
                                             "error_p_value", "n_ref", "n_cur")}
    out |= {"latency": np.zeros((s, 3), bool), "error": np.zeros(s, bool)}
    for cfg, idx in groups(cases, "regression", where=active):
        aggs = [cases[i].agg for i in members(idx, s)]
        refs = [a.ops_ref for a in aggs]
        rings = [a.ops[a.champion] for a in aggs]  # type: ignore[index]
        ref = WindowStats.from_histogram(
            np.array([x.n for x in refs]), np.array([x.errors for x in refs]),  # type: ignore[union-attr]
            stack_same([x.latency for x in refs]), LATENCY_EDGES_MS)  # type: ignore[union-attr]
        cur = WindowStats.from_histogram(
            stack_same([b.rows for b in rings]).sum(axis=1),
            np.array([b.sums["err"] for b in rings]),
            stack_same([b.sums["lat"] for b in rings]), LATENCY_EDGES_MS)
        r = Regression(**cfg.kwargs("regression")).update(ref, cur).result
        assert r is not None
        for k in ("latency", "latency_ratio", "latency_delta_ms", "error",
                  "error_rate_reference", "error_rate_current", "error_p_value"):
            out[k][idx] = getattr(r, k)
        out["ref_latency"][idx], out["cur_latency"][idx] = ref.latency, cur.latency
        out["n_ref"][idx], out["n_cur"][idx] = ref.n, cur.n
    return Ops(active=active, **out)


