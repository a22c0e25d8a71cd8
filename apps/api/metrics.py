"""Prometheus metrics of a flywheel process, on a registry of its own (never the global one).

Gauges are read from Redis at scrape time, so ``/metrics`` shows the whole fleet whichever process
serves it. Actions are counted from the audit trail incrementally (each scrape reads only entries
appended since the last). Detector time is observed in-process by whoever runs the monitor.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Protocol

import redis
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fleet.approvals import ApprovalStore
from fleet.incidents import KINDS, IncidentStore
from fleet.keys import Keys
from fleet.registry import Registry

DETECTOR_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
AUDIT_PAGE = 5_000


class Metrics:
    """The metrics one process exposes; other code observes into it, ``/metrics`` renders it.

    Args:
        registry: where the metrics live; default a fresh :class:`CollectorRegistry`.
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.detector_seconds = Histogram(
            "flywheel_detector_seconds",
            "Wall time of one monitor tick's detector maths, all services and detectors.",
            buckets=DETECTOR_BUCKETS, registry=self.registry,
        )
        self._fleet: Collector | None = None

    def observe_detection(self, seconds: float) -> None:
        """Record one tick's detector time (``TickReport.detect_seconds``)."""
        self.detector_seconds.observe(seconds)

    def watch(self, collector: Collector) -> None:
        """Read the fleet through ``collector`` at each scrape (replacing an earlier one)."""
        if self._fleet is not None:
            self.registry.unregister(self._fleet)
        self.registry.register(collector)
        self._fleet = collector

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class UsageSnapshot(Protocol):
    """What a usage tracker reports for one incident."""

    @property
    def llm_calls(self) -> int:
        """Requests sent to the provider."""

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""


class UsageSource(Protocol):
    """LLM spending per incident (``supervisors.brains.UsageTracker``)."""

    def incidents(self) -> list[str]:
        """Incidents with recorded usage."""

    def snapshot(self, incident_id: str) -> UsageSnapshot:
        """What one incident spent."""


class FleetCollector(Collector):
    """Reads telemetry, incidents, approvals, actions and LLM usage at scrape time.

    Args:
        r: a decoding Redis client.
        keys: the key layout.
        registry: the services whose streams are measured.
        incidents: open incidents, counted by kind.
        approvals: pending requests, counted.
        usage: LLM calls and tokens; None when this process runs no agents.
    """

    def __init__(self, r: redis.Redis, keys: Keys, *, registry: Registry,
                 incidents: IncidentStore, approvals: ApprovalStore,
                 usage: UsageSource | None = None):
        self.r = r
        self.keys = keys
        self.services = registry
        self.incidents = incidents
        self.approvals = approvals
        self.usage = usage
        self._lock = threading.Lock()
        self._audit_cursor = "-"
        self._actions: Counter[tuple[str, str]] = Counter()

    def describe(self) -> list[Metric]:
        """No description up front: registering must not touch Redis."""
        return []

    def collect(self) -> Iterable[Metric]:
        """One scrape."""
        yield from self._telemetry()
        kinds = Counter(i.kind for i in self.incidents.open_incidents())
        g = GaugeMetricFamily("flywheel_open_incidents", "Open incidents, by kind.",
                              labels=["kind"])
        for kind in KINDS:
            g.add_metric([kind], kinds.get(kind, 0))
        yield g
        yield GaugeMetricFamily("flywheel_pending_approvals",
                                "Approval requests waiting for a decision.",
                                value=len(self.approvals.pending()))
        yield self._action_counts()
        if self.usage is not None:
            yield from self._llm(self.usage)

    def _telemetry(self) -> Iterable[Metric]:
        names = self.services.services()
        with self.r.pipeline(transaction=False) as pipe:
            for n in names:
                pipe.xlen(self.keys.telemetry(n))
                pipe.xlen(self.keys.labels(n))
            pipe.xlen(self.keys.dlq)
            lengths = pipe.execute()
        g = GaugeMetricFamily(
            "flywheel_telemetry_events",
            "Events held in a service's telemetry stream (capped: a stream keeps the newest).",
            labels=["service", "stream"],
        )
        for i, n in enumerate(names):
            g.add_metric([n, "predictions"], lengths[2 * i])
            g.add_metric([n, "labels"], lengths[2 * i + 1])
        yield g
        yield GaugeMetricFamily("flywheel_dead_letters",
                                "Rejected telemetry events held in the dead-letter stream.",
                                value=lengths[-1])

    def _action_counts(self) -> Metric:
        with self._lock:
            while True:
                rows = self.r.xrange(self.keys.audit, min=self._audit_cursor, count=AUDIT_PAGE)
                for _, f in rows:
                    action = f.get("action", "")
                    if action.startswith("ops."):
                        outcome = json.loads(f.get("details") or "{}").get("outcome", "")
                        self._actions[(action.removeprefix("ops."), str(outcome))] += 1
                if rows:
                    self._audit_cursor = f"({rows[-1][0]}"
                if len(rows) < AUDIT_PAGE:
                    break
            counts = dict(self._actions)
        c = CounterMetricFamily(
            "flywheel_actions",
            "Guarded actions recorded in the audit trail (ops.*), by action and outcome.",
            labels=["action", "outcome"],
        )
        for (action, outcome), n in sorted(counts.items()):
            c.add_metric([action, outcome], n)
        return c

    @staticmethod
    def _llm(usage: UsageSource) -> Iterable[Metric]:
        spent = [usage.snapshot(i) for i in usage.incidents()]
        calls, tokens = sum(u.llm_calls for u in spent), sum(u.total_tokens for u in spent)
        # Gauges, not counters: a tracker forgets an incident's spending when it closes.
        yield GaugeMetricFamily("flywheel_llm_calls",
                                "LLM requests of the incidents this process is tracking.",
                                value=calls)
        yield GaugeMetricFamily("flywheel_llm_tokens",
                                "LLM tokens (prompt + completion) of the incidents this process "
                                "is tracking.", value=tokens)
