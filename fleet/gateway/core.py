"""The gateway core: validate, route, score, record telemetry. HTTP lives in ``gateway/app.py``.

Service config (pointers, schema, loaded models, injected faults) is cached per service and
re-checked at most every ``refresh_interval`` seconds by reading one field, the service's
``generation``; when it moved, models are (re)loaded. A pointer change is therefore live within
``refresh_interval`` everywhere, with no Redis round trip on the hot path in between.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fleet.clock import Clock, SystemClock
from fleet.errors import InvalidInput
from fleet.gateway.routing import bucket, route
from fleet.registry import Registry, ServiceRecord
from fleet.replay.fault_store import ServingFault, serving_faults
from fleet.telemetry.buffer import TelemetryBuffer
from fleet.telemetry.events import PredictionEvent
from fleet.telemetry.writer import IngestResult, TelemetryWriter

MAX_BATCH = 10_000
NOMINAL_LATENCY_MS = 1.0
"""Latency recorded per request when ``measure_latency`` is off (simulated time)."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """The answer to one request."""

    request_id: str
    version: int
    prediction: float | None
    error: str | None = None


@dataclass
class _Loaded:
    record: ServiceRecord
    models: dict[int, Any]
    faults: dict[str, ServingFault]
    checked_at: float
    lock: threading.Lock = field(default_factory=threading.Lock)


class Gateway:
    """Serves every registered service from one process."""

    def __init__(
        self,
        registry: Registry,
        buffer: TelemetryBuffer,
        *,
        clock: Clock | None = None,
        refresh_interval: float = 1.0,
        sleep_on_latency_fault: bool = True,
        measure_latency: bool = True,
    ):
        self.registry = registry
        self.buffer = buffer
        self.writer: TelemetryWriter = buffer.writer
        self.clock = clock or SystemClock()
        self.refresh_interval = refresh_interval
        self.sleep_on_latency_fault = sleep_on_latency_fault
        # Simulated time (evals) records a fixed nominal latency plus injected faults, so runs
        # are deterministic and CPU noise on a shared machine cannot fail a canary.
        self.measure_latency = measure_latency
        self._cache: dict[str, _Loaded] = {}
        self._models: dict[tuple[str, int, str], Any] = {}

    # --- config -------------------------------------------------------------------
    def service(self, name: str) -> ServiceRecord:
        """The service record as the gateway currently serves it (refreshing if due)."""
        return self._state(name).record

    def _state(self, name: str) -> _Loaded:
        st = self._cache.get(name)
        now = time.monotonic()
        if st is not None and now - st.checked_at < self.refresh_interval:
            return st
        if st is not None and self.registry.generation(name) == st.record.generation:
            st.faults = serving_faults(self.registry.r, self.registry.keys, name)
            st.checked_at = now
            return st
        return self.reload(name)

    def reload(self, name: str) -> _Loaded:
        """Re-read a service's pointers and load the models they name."""
        rec = self.registry.service(name)
        models: dict[int, Any] = {}
        for n in (rec.champion, rec.challenger):
            if n is None:
                continue
            v = self.registry.version(name, n)
            key = (name, n, v.sha256)
            if key not in self._models:
                self._models[key] = self.registry.load_model(name, n)
            models[n] = self._models[key]
        live = {(name, n, self.registry.version(name, n).sha256) for n in models}
        for k in [k for k in self._models if k[0] == name and k not in live]:
            del self._models[k]
        st = _Loaded(rec, models, serving_faults(self.registry.r, self.registry.keys, name),
                     time.monotonic())
        self._cache[name] = st
        return st

    # --- serving ------------------------------------------------------------------
    def predict(
        self,
        service: str,
        rows: Sequence[dict[str, Any]],
        request_ids: Sequence[str | None] | None = None,
    ) -> list[Prediction]:
        """Validate, route and score ``rows``; record telemetry; return one answer per row.

        Raises:
            UnknownService: the service is not registered.
            InvalidInput: a row breaks the schema (the message names row and field), or the
                service has no champion yet.
        """
        st = self._state(service)  # may load models: not part of the request's latency
        t0 = time.perf_counter()
        rec = st.record
        if rec.champion is None:
            raise InvalidInput(f"service {service!r} has no champion yet; promote a version first")
        if not rows:
            raise InvalidInput("instances: expected at least one row")
        if len(rows) > MAX_BATCH:
            raise InvalidInput(f"instances: at most {MAX_BATCH} rows per request, got {len(rows)}")
        if request_ids is not None and len(request_ids) != len(rows):
            raise InvalidInput(
                f"request_ids: expected {len(rows)} ids (one per instance), got {len(request_ids)}"
            )
        single = len(rows) == 1
        X = np.array(
            [rec.schema_.row(r, where="features" if single else f"instances[{i}]")
             for i, r in enumerate(rows)],
            dtype=np.float64,
        )
        rids = [rid or uuid.uuid4().hex for rid in (request_ids or [None] * len(rows))]
        answer = np.empty(len(rows), dtype=np.int64)
        shadow: int | None = None
        for i, rid in enumerate(rids):
            answer[i], shadow = route(
                rid, champion=rec.champion, challenger=rec.challenger, mode=rec.mode,
                split=rec.split,
            )
        out: list[Prediction | None] = [None] * len(rows)
        prep = (time.perf_counter() - t0) * 1000.0  # validation + routing, shared by versions
        for version in np.unique(answer).tolist():
            idx = np.flatnonzero(answer == version)
            self._score(service, st, version, X, idx, rids, out, prep, shadow=False)
        if shadow is not None:
            self._score(service, st, shadow, X, np.arange(len(rows)), rids, None, prep,
                        shadow=True)
        return out  # type: ignore[return-value]

    def _score(
        self,
        service: str,
        st: _Loaded,
        version: int,
        X: np.ndarray,
        idx: np.ndarray,
        rids: list[str],
        out: list[Prediction | None] | None,
        prep_ms: float,
        *,
        shadow: bool,
    ) -> None:
        t0 = time.perf_counter()
        fault = st.faults.get(str(version)) or (
            st.faults.get("challenger") if version == st.record.challenger else None
        )
        preds: list[float | None]
        err: str | None = None
        try:
            preds = [float(p) for p in st.models[version].predict(X[idx])]
        except Exception as exc:  # a broken model must not take the gateway down
            preds, err = [None] * len(idx), f"model error: {type(exc).__name__}: {exc}"[:300]
        extra = 0.0
        if fault is not None and fault.latency_ms > 0:
            extra = fault.latency_ms
            if self.sleep_on_latency_fault:
                time.sleep(extra / 1000.0)
        if self.measure_latency:
            latency = prep_ms + (time.perf_counter() - t0) * 1000.0
            latency += 0.0 if self.sleep_on_latency_fault else extra
        else:
            latency = NOMINAL_LATENCY_MS + extra
        now = self.clock.now()
        key = self.writer.keys.telemetry(service)
        for j, i in enumerate(idx.tolist()):
            e = err
            # Deterministic per request id so a replay injects the same errors.
            if (e is None and fault is not None and fault.error_rate > 0
                    and bucket(f"err:{rids[i]}") < fault.error_rate):
                e = "injected error"
            p = None if e else preds[j]
            self.buffer.add(
                key,
                PredictionEvent(now, rids[i], version, tuple(X[i].tolist()), p, latency, e,
                                shadow).encode(),
            )
            if out is not None:
                out[i] = Prediction(rids[i], version, p, e)

    def feedback(self, service: str, labels: Sequence[Any]) -> IngestResult:
        """Record ground-truth labels ``[{"request_id", "label"}]``; bad ones are dead-lettered."""
        if service not in self._cache:
            self.registry.service(service)  # raises UnknownService with the known names
        return self.writer.ingest_labels(service, labels)

    def flush(self) -> int:
        """Write buffered telemetry now (evals call this at the end of each simulated batch)."""
        return self.buffer.flush()
