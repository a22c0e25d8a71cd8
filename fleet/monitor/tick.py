"""The monitor tick: read every service's new telemetry, update aggregates, detect, raise signals.

Load → compute → save → emit, per batch of services: one pipelined read of the registry, the
monitor state and the stream tails; pure aggregate updates; one detector call per kind for the
whole batch; signals folded into incidents; state saved. Signals go to the incident store before
the state is saved, so a crash in between re-reads (and re-counts) one tick of events at worst;
it never loses an alarm, and the incident store de-duplicates the repeat.

One monitor process owns a service at a time (shard leases, DESIGN §9): aggregates are cached in
memory between ticks and written back, not merged.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from fleet.clock import Clock
from fleet.detectors import DetectorConfig
from fleet.incidents import Incident, IncidentStore, Signal
from fleet.monitor import detect, signals
from fleet.monitor.aggregates import AGG_SCHEMA, ServiceAgg
from fleet.monitor.batch import EventBatch
from fleet.monitor.config import MonitorConfig, detector_config
from fleet.monitor.state_store import MonitorStateStore, Stored
from fleet.registry import Mode, Registry, ServiceRecord
from fleet.telemetry import TelemetryReader

MONITORED = frozenset({
    "performance_drop", "covariate_drift", "prediction_drift", "data_quality",
    "latency_regression", "error_rate_regression", "canary_fail", "canary_inconclusive",
})
"""Incident kinds the tick raises and clears (a canary pass is a verdict, not an incident)."""


@dataclass(frozen=True)
class TickReport:
    """What one tick saw and did."""

    at: float
    """Clock time of the tick."""
    services: int
    """Services scanned."""
    events: int
    """Prediction events read (new since the last tick)."""
    labels: int
    """Label events read."""
    signals: tuple[Signal, ...] = ()
    """Every signal raised, opened or not."""
    opened: tuple[str, ...] = ()
    """Incidents opened by this tick."""
    updated: tuple[str, ...] = ()
    """Open incidents that absorbed a signal."""
    suppressed: int = 0
    """Signals swallowed by a fingerprint's cooldown."""
    cleared: tuple[str, ...] = ()
    """Open incidents whose detector was quiet this tick."""
    canary: dict[str, str] = field(default_factory=dict)
    """Service -> canary verdict (``pass`` / ``fail`` / ``inconclusive``) of running canaries."""
    errors: dict[str, str] = field(default_factory=dict)
    """Service -> a problem the tick worked around (e.g. an invalid threshold in its policy)."""
    seconds: float = 0.0
    """Wall time of the whole tick."""
    detect_seconds: float = 0.0
    """Wall time of the detector maths (stacking included)."""

    def summary(self) -> dict[str, object]:
        """Compact JSON-able form (stored as the fleet's last tick)."""
        return {"at": self.at, "services": self.services, "events": self.events,
                "labels": self.labels, "signals": len(self.signals), "opened": list(self.opened),
                "suppressed": self.suppressed, "seconds": round(self.seconds, 4),
                "detect_seconds": round(self.detect_seconds, 4)}


@dataclass
class _Acc:
    """Running totals of one tick."""

    events: int = 0
    labels: int = 0
    signals: list[Signal] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    suppressed: int = 0
    cleared: list[str] = field(default_factory=list)
    canary: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    detect_s: float = 0.0


class Monitor:
    """Watches every registered service on each :meth:`tick`.

    Args:
        registry: services and their pointers, schemas and policies (thresholds).
        reader: telemetry (its client and keys are used for pipelined tail reads).
        incidents: where signals become incidents.
        clock: the time stamped on signals (simulated in evals).
        config: windows, batching and deadlines.
        store: monitor state edge (default: on the reader's Redis and keys).
    """

    def __init__(self, registry: Registry, reader: TelemetryReader, incidents: IncidentStore,
                 clock: Clock, *, config: MonitorConfig | None = None,
                 store: MonitorStateStore | None = None):
        self.registry = registry
        self.reader = reader
        self.incidents = incidents
        self.clock = clock
        self.config = config or MonitorConfig()
        self.store = store or MonitorStateStore(reader.r, reader.keys)
        self._aggs: dict[str, ServiceAgg] = {}

    def tick(self, now: float | None = None, *, services: list[str] | None = None) -> TickReport:
        """Scan services once (all registered ones by default, or a shard's ``services``)."""
        t0 = time.perf_counter()
        now = self.clock.now() if now is None else now
        names = self.registry.services() if services is None else list(services)
        # A service this process no longer watches (its shard moved to another worker) must be
        # reloaded from Redis if it comes back, never resumed from a stale in-memory copy.
        for gone in set(self._aggs) - set(names):
            del self._aggs[gone]
        open_kinds: dict[str, set[str]] = defaultdict(set)
        for inc in self.incidents.open_incidents():
            open_kinds[inc.service].add(inc.kind)
        rejected = self.store.rejected()
        acc = _Acc()
        step = self.config.batch_services
        for k in range(0, len(names), step):
            self._batch(names[k: k + step], now, rejected, open_kinds, acc)
        report = TickReport(
            at=now, services=len(names), events=acc.events, labels=acc.labels,
            signals=tuple(acc.signals), opened=tuple(acc.opened), updated=tuple(acc.updated),
            suppressed=acc.suppressed, cleared=tuple(acc.cleared), canary=acc.canary,
            errors=acc.errors, seconds=time.perf_counter() - t0, detect_seconds=acc.detect_s)
        self.store.record_tick(report.summary())
        return report

    # --- one batch -----------------------------------------------------------------------
    def _batch(self, names: list[str], now: float, rejected: dict[str, int],
               open_kinds: dict[str, set[str]], acc: _Acc) -> None:
        records = self._records(names)
        fresh = [n for n in records if n not in self._aggs]
        stored = self.store.load(fresh, AGG_SCHEMA)
        cfgs = {n: self._config(rec, acc) for n, rec in records.items()}
        aggs = {n: self._agg(rec, cfgs[n], stored.get(n)) for n, rec in records.items()}
        tails = self.store.tails({n: (a.tel, a.lab) for n, a in aggs.items()},
                                 self.config.max_events)
        cases: list[detect.Case] = []
        reads: list[int] = []
        if not records:
            return
        for n, rec in records.items():
            preds, labels = tails[n]
            acc.events += len(preds)
            acc.labels += len(labels)
            reads.append(len(preds) + len(labels) + rejected.get(n, 0))
            cases.append(self._update(rec, aggs[n], cfgs[n], preds, labels, rejected.get(n, 0)))
        t = time.perf_counter()
        found = self._detect(cases, now, {n: r.schema_.names for n, r in records.items()})
        acc.detect_s += time.perf_counter() - t
        dirty = {}
        for case, sigs, read in zip(cases, found, reads, strict=True):
            self._emit(case, sigs, open_kinds.get(case.service, set()), acc)
            fired = sorted({s.kind for s in sigs})
            # An idle, unchanged service is not rewritten: at 10,000 services that is most.
            if read or fired != case.agg.fired or case.service in fresh:
                case.agg.ticked_at = now
                dirty[case.service] = case.agg.to_dict()
            case.agg.fired = fired
        self.store.save(dirty)

    def _records(self, names: list[str]) -> dict[str, ServiceRecord]:
        keys = self.registry.keys
        with self.registry.r.pipeline(transaction=False) as pipe:
            for n in names:
                pipe.hgetall(keys.service(n))
            rows = pipe.execute()
        return {n: ServiceRecord.from_hash(h) for n, h in zip(names, rows, strict=True) if h}

    @staticmethod
    def _config(rec: ServiceRecord, acc: _Acc) -> DetectorConfig:
        try:
            return detector_config(rec.policy)
        except ValueError as exc:  # a bad policy must not blind the monitor: use the defaults
            acc.errors[rec.name] = f"policy thresholds ignored: {exc}"
            return DetectorConfig()

    def _agg(self, rec: ServiceRecord, cfg: DetectorConfig, stored: Stored | None) -> ServiceAgg:
        """The service's aggregates: cached, else loaded, else fresh (keeping stored cursors)."""
        agg = self._aggs.get(rec.name)
        if agg is None and stored is not None and stored.agg is not None:
            try:
                agg = ServiceAgg.from_dict(stored.agg, self.config)
            except (KeyError, TypeError, ValueError):  # derived data: start afresh, keep cursors
                agg = None
        n_features = len(rec.schema_.features)
        if agg is None or agg.n_features != n_features or agg.task != rec.task:
            fresh = ServiceAgg(n_features, task=rec.task, n_bins=cfg.histogram_n_bins,
                               config=self.config)
            src = agg or stored
            if src is not None:  # a new layout never re-reads what was already processed
                fresh.tel, fresh.lab = src.tel, src.lab
                fresh.ref_from = fresh.tel
            agg = fresh
        elif agg.n_bins != cfg.histogram_n_bins:
            agg.reset_reference(cfg.histogram_n_bins)
        self._aggs[rec.name] = agg
        return agg

    def _update(self, rec: ServiceRecord, agg: ServiceAgg, cfg: DetectorConfig,
                preds: list, labels: list, rejected: int) -> detect.Case:
        agg.sync(rec.champion, rec.challenger, canary=rec.mode is Mode.CANARY,
                 since=rec.challenger_since, accepted_at=rec.accepted_at)
        f = agg.n_features
        if agg.needs_refill:
            since_ref = self.store.between(rec.name, agg.ref_from, agg.tel,
                                           self.config.reference_rows * 4)
            recent = self.store.before(rec.name, agg.tel, self.config.join_rows)
            agg.refill(EventBatch.from_events(since_ref, f), EventBatch.from_events(recent, f))
        low = np.array([np.nan if s.min is None else s.min for s in rec.schema_.features])
        high = np.array([np.nan if s.max is None else s.max for s in rec.schema_.features])
        agg.ingest(EventBatch.from_events(preds, f), low, high)
        if rejected:
            agg.inputs.bump_newest("rejected", rejected)
        return detect.Case(rec.name, cfg, agg, agg.join(labels))

    def _detect(self, cases: list[detect.Case], now: float, feature_names: dict[str, list[str]]
                ) -> list[list[Signal]]:
        """Every detector once over the batch; the signals of each case."""
        grace = self.config.label_grace_blocks
        drift, quality = detect.drift(cases), detect.quality(cases, grace)
        held = detect.latch(cases, detect.performance(cases))
        ops = detect.regression(cases)
        canaries = detect.canary(cases)
        out: list[list[Signal]] = []
        for i, c in enumerate(cases):
            names = feature_names[c.service]
            sigs = [
                signals.performance_drop(c, bool(held[i]), now),
                signals.drift(c, drift, i, names, now),
                signals.data_quality(c, quality, i, names, now),
                *signals.ops_regression(c, ops.row(i), now),
                signals.canary(c, canaries.get(i), now, self.config.canary_deadline_s),
            ]
            c.agg.verdict = str(canaries[i]["verdict"]) if i in canaries else ""
            out.append([s for s in sigs if s is not None])
        return out

    def _emit(self, case: detect.Case, sigs: list[Signal], open_kinds: set[str],
              acc: _Acc) -> None:
        svc = case.service
        if case.agg.verdict:
            acc.canary[svc] = case.agg.verdict
        for s in sigs:
            acc.signals.append(s)
            inc = self.incidents.observe(s)
            if inc is None:
                acc.suppressed += 1
            elif _is_new(inc):
                acc.opened.append(inc.id)
            else:
                acc.updated.append(inc.id)
        for kind in sorted((open_kinds & MONITORED) - {s.kind for s in sigs}):
            inc = self.incidents.clear(svc, kind)
            if inc is not None:
                acc.cleared.append(inc.id)


def _is_new(inc: Incident) -> bool:
    return inc.signal_count == 1
