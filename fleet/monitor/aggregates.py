"""Per-service aggregates, kept incrementally from the telemetry tail: windows, references, joins.

Pure: no Redis and no clock. Each tick hands a service's new prediction events to
:meth:`ServiceAgg.ingest` and its new labels to :meth:`ServiceAgg.join`; nothing is rescanned.
What a service keeps (``F`` features, ``B`` bins, windows of ``window_rows`` events in blocks):

* ``inputs``: answered events of every version: per-feature histograms on the reference bins,
  the champion's prediction histogram, nulls, out-of-range values, duplicates, labels arrived;
* ``ops[v]``: requests of live version ``v``: latency histogram and failures;
* ``acc[v]``: labelled requests of ``v``: wrong answers (and absolute error for regression);
* the frozen drift reference and ops baseline, the canary's arms since ``challenger_since``, the
  champion's CUSUM state and the latched performance alarm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fleet.monitor.batch import LATENCY_SLOTS, EventBatch, latency_slots, row_hashes, value_slots
from fleet.monitor.blocks import Blocks, Field
from fleet.monitor.canary import CanaryArms
from fleet.monitor.config import MonitorConfig
from fleet.monitor.join import JoinRing, rid_keys
from fleet.monitor.reference import Collector, OpsBaseline, Reference
from fleet.telemetry.events import LabelEvent

AGG_SCHEMA = 1
"""Version of :meth:`ServiceAgg.to_dict`'s layout; the state store drops other versions."""
REGRESSION_ERROR_QUANTILE = 0.75
"""For regression services a labelled answer counts as wrong when its absolute error is above
this quantile of the reference window's absolute errors, so the CUSUM sees a 0/1 stream."""


@dataclass(frozen=True)
class Feed:
    """The champion's newly labelled answers, in label order: what its CUSUM reads."""

    wrong: np.ndarray
    """``(T,)`` 0/1."""
    index: np.ndarray
    """``(T,)`` event index of each answer's prediction."""
    ts: np.ndarray
    """``(T,)`` event time of each answer's prediction."""


class ServiceAgg:
    """Everything the monitor keeps about one service between ticks.

    Args:
        n_features: features in the service's schema.
        task: ``classification`` (wrong = prediction differs from the label) or ``regression``.
        n_bins: value bins per feature (``DetectorConfig.histogram_n_bins``).
        config: window and reference sizes.
    """

    def __init__(self, n_features: int, *, task: str, n_bins: int, config: MonitorConfig):
        self.n_features, self.task, self.n_bins = n_features, task, n_bins
        self.block_rows, self.n_blocks = config.block_rows, config.n_blocks
        self.reference_rows, self.join_rows = config.reference_rows, config.join_rows
        self.max_anchors = config.anchors
        self.tel, self.lab = "0", "0"
        self.champion: int | None = None
        self.challenger: int | None = None
        self.inputs = Blocks(self._input_fields(), block_rows=self.block_rows,
                             n_blocks=self.n_blocks)
        self.ops: dict[int, Blocks] = {}
        self.acc: dict[int, Blocks] = {}
        self.reference: Reference | None = None
        self.ref_from = "0"
        self.ops_ref: OpsBaseline | None = None
        self.canary: CanaryArms | None = None
        self.cusum: dict[str, Any] | None = None
        self.latch: dict[str, float] | None = None
        self.accepted_at = 0.0
        """The registry's ``accepted_at`` last acted on."""
        self.anchors: list[list[float]] = []
        self.labels_seen = self.unjoined = 0
        self.label_lag = 0.0
        self.err_tol: float | None = None
        self.abs_ref: list[float] = []
        self.fired: list[str] = []
        self.verdict = ""
        self.ticked_at = 0.0
        # In memory only; rebuilt from the stream tail after a restart (see needs_refill).
        self.collector: Collector | None = Collector(self.reference_rows)
        self.ring = JoinRing(self.join_rows)
        self.ring_ready = True
        self._dup_rows: dict[int, np.ndarray] = {}

    def _input_fields(self) -> dict[str, Field]:
        f, b = self.n_features, self.n_bins
        return {
            "hist": Field((f, b + 1), hist=True),
            # Slot b + 1 takes answers of versions other than the champion (not counted).
            "pred": Field((b + 2,), hist=True),
            "nulls": Field((f,)), "oor": Field((f,)), "dups": Field(), "labelled": Field(),
            "rejected": Field(),
        }

    def _ring(self, kind: str) -> Blocks:
        fields = ({"lat": Field((LATENCY_SLOTS,), hist=True), "err": Field()} if kind == "ops"
                  else {"wrong": Field(), "scored": Field(), "abs": Field(dtype="float64")})
        return Blocks(fields, block_rows=self.block_rows, n_blocks=self.n_blocks)

    @property
    def live(self) -> set[int]:
        """Versions serving now (champion, and a challenger in shadow or canary)."""
        return {v for v in (self.champion, self.challenger) if v is not None}

    # --- pointers ------------------------------------------------------------------------
    def sync(self, champion: int | None, challenger: int | None, *, canary: bool,
             since: float, accepted_at: float = 0.0) -> None:
        """Follow the registry's pointers before new events are ingested.

        A new champion gets a fresh drift reference, CUSUM and alarm latch. Its ops baseline is
        the window the old champion served, unless that window had regressed (``regressed``),
        in which case the older healthy baseline stays: a rollback is never held to the bad
        version it replaces. An error level a person accepted (``accepted_at`` moved on) gets a
        fresh CUSUM and alarm latch too: the baseline is re-learnt from the champion's errors
        from here on.
        """
        if accepted_at > self.accepted_at:
            self.accepted_at = accepted_at
            self._restart_performance()
        regressed = bool({"latency_regression", "error_rate_regression"} & set(self.fired))
        if champion != self.champion and champion is not None:
            old = self.ops.get(self.champion) if self.champion is not None else None
            if old is not None and old.total > 0 and not regressed:
                self.ops_ref = OpsBaseline(int(self.champion), old.total,  # type: ignore[arg-type]
                                           int(old.window("err")), old.window("lat"))
            self.champion = champion
            self.reset_reference()
            self._restart_performance()
            self.err_tol, self.abs_ref = None, []
        self.challenger = challenger
        for rings in (self.ops, self.acc):
            for v in set(rings) - self.live:
                del rings[v]
        if not canary or challenger is None or champion is None:
            self.canary = None
        elif self.canary is None or (self.canary.challenger, self.canary.since,
                                     self.canary.champion) != (challenger, since, champion):
            self.canary = CanaryArms.start(champion, challenger, since)

    def _restart_performance(self) -> None:
        """Forget the performance CUSUM, its latched alarm and its dating anchors."""
        self.cusum, self.latch, self.anchors = None, None, []

    def reset_reference(self, n_bins: int | None = None) -> None:
        """Collect a new drift reference from the next champion events (bins may change)."""
        if n_bins is not None and n_bins != self.n_bins:
            self.n_bins = n_bins
            fields = self._input_fields()
            self.inputs.fields["hist"], self.inputs.fields["pred"] = fields["hist"], fields["pred"]
            for k in ("hist", "pred"):
                self.inputs.data[k] = np.zeros((self.n_blocks, *fields[k].shape), np.int64)
                self.inputs.sums[k] = np.zeros(fields[k].shape, np.int64)
        self.reference = None
        self.collector = Collector(self.reference_rows)
        self.ref_from = self.tel
        self.inputs.clear("hist")
        self.inputs.clear("pred")

    # --- predictions ---------------------------------------------------------------------
    def ingest(self, batch: EventBatch, low: np.ndarray, high: np.ndarray) -> None:
        """Fold new prediction events (stream order) into the windows.

        Args:
            batch: events after :attr:`tel`.
            low: ``(F,)`` schema minimum per feature (NaN: none).
            high: ``(F,)`` schema maximum (NaN: none).
        """
        if not len(batch):
            return
        self.tel = batch.ids[-1]
        a = batch.take(~batch.shadow)
        n = len(a)
        if n == 0:
            return
        idx = self.inputs.seen + np.arange(n)
        self.ring.add(rid_keys(a.request_ids), a.version, a.prediction, idx, a.ts)
        self._add_ops(a)
        self._add_canary(a)
        x = a.X
        with np.errstate(invalid="ignore"):
            oor = (x < low) | (x > high)
        base = {"nulls": np.isnan(x), "oor": oor, "dups": self._duplicates(x, idx)}
        cut = self._collect(a)
        self.inputs.add(cut, **{k: v[:cut] for k, v in base.items()})
        if cut < n and self.reference is not None:
            rest = slice(cut, n)
            edges = self.reference.edges
            pred = value_slots(a.prediction[rest, None], edges[-1:])[:, 0]
            pred[a.version[rest] != self.champion] = self.n_bins + 1
            self.inputs.add(n - cut, hist=value_slots(a.X[rest], edges[:-1]), pred=pred,
                            **{k: v[rest] for k, v in base.items()})

    def _add_ops(self, a: EventBatch) -> None:
        for v in self.live:
            sel = a.version == v
            if sel.any():
                ring = self.ops.get(v) or self.ops.setdefault(v, self._ring("ops"))
                ring.add(int(sel.sum()), lat=latency_slots(a.latency[sel]), err=a.failed[sel])

    def _add_canary(self, a: EventBatch) -> None:
        c = self.canary
        if c is None:
            return
        for arm, v in enumerate((c.champion, c.challenger)):
            sel = (a.version == v) & (a.ts >= c.since)
            c.requests[arm] += int(sel.sum())
            c.failed[arm] += int(a.failed[sel].sum())
            hist = np.bincount(latency_slots(a.latency[sel]), minlength=LATENCY_SLOTS)
            c.latency[arm] = (np.asarray(c.latency[arm]) + hist).tolist()

    def _duplicates(self, X: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """1 for a row repeating an earlier row of its block (block memory is not persisted)."""
        h = row_hashes(X)
        seqs = idx // self.block_rows
        out = np.zeros(len(h), dtype=np.int64)
        for s in np.unique(seqs).tolist():
            sel = seqs == s
            old = self._dup_rows.get(s, np.zeros(0, np.uint64))
            both = np.concatenate([old, h[sel]])
            _, first, inv = np.unique(both, return_index=True, return_inverse=True)
            pos = np.arange(len(old), len(both))
            out[sel] = first[inv[pos]] < pos
            self._dup_rows[s] = both
        for s in [s for s in self._dup_rows if s <= int(seqs[-1]) - self.n_blocks]:
            del self._dup_rows[s]
        return out

    def _collect(self, a: EventBatch) -> int:
        """Feed the reference collector; return how many leading events precede the freeze."""
        if self.reference is not None:
            return 0
        if self.collector is None or self.champion is None:
            return len(a)
        champ = np.flatnonzero(a.version == self.champion)
        took = self.collector.add(a.X[champ], a.prediction[champ])
        if not self.collector.full:
            return len(a)
        X, p = self.collector.arrays()
        self.reference = Reference.freeze(self.champion, X, p, self.n_bins, self.block_rows)
        self.collector = None
        ring = self.ops.get(self.champion)
        if self.ops_ref is None and ring is not None:
            self.ops_ref = OpsBaseline(self.champion, ring.total, int(ring.window("err")),
                                       ring.window("lat"))
        return int(champ[took - 1]) + 1 if took else 0

    @property
    def needs_refill(self) -> bool:
        """A restart lost the half-collected reference or the label-join ring."""
        return (self.reference is None and self.collector is None) or not self.ring_ready

    def refill(self, since_ref: EventBatch, recent: EventBatch) -> None:
        """Rebuild in-memory parts from the stream after a restart.

        Args:
            since_ref: events after :attr:`ref_from` up to :attr:`tel` (for the reference).
            recent: the last events up to :attr:`tel`, oldest first (for the join ring).
        """
        if self.reference is None and self.collector is None:
            self.collector = Collector(self.reference_rows)
            a = since_ref.take(~since_ref.shadow & (since_ref.version == (self.champion or -1)))
            self.collector.add(a.X, a.prediction)
        if not self.ring_ready:
            a = recent.take(~recent.shadow)
            idx = self.inputs.seen - len(a) + np.arange(len(a))
            self.ring.add(rid_keys(a.request_ids), a.version, a.prediction, idx, a.ts)
            self.ring_ready = True

    # --- labels --------------------------------------------------------------------------
    def join(self, labels: list[tuple[str, LabelEvent]]) -> Feed:
        """Join new labels (stream order) to recent answers; return the champion's feed."""
        empty = Feed(np.zeros(0), np.zeros(0, np.int64), np.zeros(0))
        if not labels:
            return empty
        self.lab = labels[-1][0]
        self.labels_seen += len(labels)
        y = np.array([ev.label for _, ev in labels], dtype=np.float64)
        j = self.ring.match(rid_keys([ev.request_id for _, ev in labels]))
        self.unjoined += int((~j.found).sum())
        if len(j.index):
            # How far behind the newest answer the newest label is, smoothed over ticks: label
            # coverage judges only blocks older than that. Labels that stop leave it as it was.
            lag = float(self.inputs.seen - 1 - j.index.max())
            self.label_lag = lag if self.labels_seen == len(labels) else (
                0.8 * self.label_lag + 0.2 * lag)
        wrong, abs_err = self._score(j.prediction, y[j.found], j.version)
        for v in self.live:
            sel = j.version == v
            if sel.any():
                ring = self.acc.get(v) or self.acc.setdefault(v, self._ring("acc"))
                ring.add(int(sel.sum()), wrong=np.nan_to_num(wrong[sel]).astype(np.int64),
                         scored=~np.isnan(wrong[sel]), abs=np.nan_to_num(abs_err[sel]))
        self.inputs.bump_many("labelled", j.index)
        c = self.canary
        if c is not None:
            for arm, v in enumerate((c.champion, c.challenger)):
                sel = (j.version == v) & (j.ts >= c.since) & ~np.isnan(wrong)
                c.n[arm] += int(sel.sum())
                c.wrong[arm] += int(wrong[sel].sum())
        feed = (j.version == self.champion) & ~np.isnan(wrong)
        return Feed(wrong[feed], j.index[feed], j.ts[feed])

    def _score(self, pred: np.ndarray, y: np.ndarray, version: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """``(wrong, abs_error)`` per joined label; wrong is NaN where it is not defined yet."""
        failed = np.isnan(pred)
        if self.task != "regression":
            return np.where(failed, 1.0, (pred != y).astype(np.float64)), np.full(len(y), np.nan)
        abs_err = np.abs(pred - y)
        if self.err_tol is None:
            champ = abs_err[(version == self.champion) & ~failed]
            self.abs_ref.extend(champ[: self.reference_rows - len(self.abs_ref)].tolist())
            if len(self.abs_ref) >= self.reference_rows:
                self.err_tol = float(np.quantile(self.abs_ref, REGRESSION_ERROR_QUANTILE))
                self.abs_ref = []
            return np.where(failed, 1.0, np.nan), abs_err
        return np.where(failed, 1.0, (abs_err > self.err_tol).astype(np.float64)), abs_err

    def anchor(self, cusum_index: int, feed: Feed) -> None:
        """Remember where the CUSUM's count stood at the first answer of a feed."""
        if len(feed.wrong):
            self.anchors = [*self.anchors, [cusum_index, int(feed.index[0]), float(feed.ts[0])]]
            self.anchors = self.anchors[-self.max_anchors:]

    def date(self, cusum_index: int, start: int, feed: Feed) -> tuple[int, float]:
        """Event index and time of the CUSUM's ``cusum_index``-th labelled answer.

        Exact within this tick's ``feed`` (whose first answer is number ``start``); earlier ones
        are interpolated between the anchors of past ticks and this one (call :meth:`anchor`
        first).
        """
        k = cusum_index - start
        if 0 <= k < len(feed.wrong):
            return int(feed.index[k]), float(feed.ts[k])
        pts = self.anchors or [[start, 0, 0.0]]
        c = np.array([a[0] for a in pts], dtype=np.float64)
        ev = float(np.interp(cusum_index, c, [a[1] for a in pts]))
        ts = float(np.interp(cusum_index, c, [a[2] for a in pts]))
        return round(ev), ts

    # --- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state (in-memory join ring, collector and duplicate sets excluded)."""
        return {
            "schema": AGG_SCHEMA, "n_features": self.n_features, "task": self.task,
            "n_bins": self.n_bins, "block_rows": self.block_rows, "n_blocks": self.n_blocks,
            "tel": self.tel, "lab": self.lab, "champion": self.champion,
            "challenger": self.challenger, "inputs": self.inputs.to_dict(),
            "ops": {str(v): b.to_dict() for v, b in self.ops.items()},
            "acc": {str(v): b.to_dict() for v, b in self.acc.items()},
            "reference": self.reference.to_dict() if self.reference else None,
            "ref_from": self.ref_from,
            "ops_ref": self.ops_ref.to_dict() if self.ops_ref else None,
            "canary": asdict(self.canary) if self.canary else None,
            "cusum": self.cusum, "latch": self.latch, "anchors": self.anchors,
            "accepted_at": self.accepted_at,
            "labels_seen": self.labels_seen, "unjoined": self.unjoined,
            "label_lag": self.label_lag,
            "err_tol": self.err_tol, "abs_ref": self.abs_ref, "fired": self.fired,
            "verdict": self.verdict, "ticked_at": self.ticked_at,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], config: MonitorConfig) -> ServiceAgg:
        """Rebuild a state saved by :meth:`to_dict` (its own window layout is kept).

        Raises:
            ValueError: the state was written by another :data:`AGG_SCHEMA`.
        """
        if d.get("schema") != AGG_SCHEMA:
            raise ValueError(f"monitor state schema {d.get('schema')!r}, expected {AGG_SCHEMA}")
        layout = MonitorConfig(
            reference_rows=config.reference_rows, window_rows=d["block_rows"] * d["n_blocks"],
            n_blocks=d["n_blocks"], join_rows=config.join_rows, anchors=config.anchors)
        agg = cls(d["n_features"], task=d["task"], n_bins=d["n_bins"], config=layout)
        for k in ("tel", "lab", "champion", "challenger", "ref_from", "cusum", "latch",
                  "anchors", "labels_seen", "unjoined", "label_lag", "err_tol", "abs_ref", "fired",
                  "verdict", "ticked_at"):
            setattr(agg, k, d[k])
        agg.accepted_at = float(d.get("accepted_at", 0.0))  # states saved before it existed
        agg.inputs.load(d["inputs"])
        agg.ops = {int(v): agg._ring("ops").load(b) for v, b in d["ops"].items()}
        agg.acc = {int(v): agg._ring("acc").load(b) for v, b in d["acc"].items()}
        agg.reference = Reference.from_dict(d["reference"]) if d["reference"] else None
        agg.ops_ref = OpsBaseline.from_dict(d["ops_ref"]) if d["ops_ref"] else None
        agg.canary = CanaryArms(**d["canary"]) if d["canary"] else None
        agg.collector = None
        agg.ring_ready = False
        return agg
