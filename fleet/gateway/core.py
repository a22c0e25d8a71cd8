"""The gateway core: validate, route, score, record telemetry. HTTP lives in ``gateway/app.py``.

Service config (pointers, schema, loaded models, injected faults) is cached per service and
re-checked at most every ``refresh_interval`` seconds by reading one field, the service's
``generation``; when it moved, models are (re)loaded. A pointer change is therefore live within
``refresh_interval`` everywhere, with no Redis round trip on the hot path in between.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis

from fleet.clock import Clock, SystemClock
from fleet.errors import InvalidInput
from fleet.gateway.routing import bucket, route
from fleet.registry import Registry, ServiceRecord
from fleet.replay.fault_store import ServingFault, serving_faults
from fleet.telemetry.buffer import TelemetryBuffer
from fleet.telemetry.events import PredictionEvent
from fleet.telemetry.limits import Limits, model_classes, request_id
from fleet.telemetry.writer import IngestResult, TelemetryWriter

MAX_BATCH = 10_000
NOMINAL_LATENCY_MS = 1.0
"""Latency recorded per request when ``measure_latency`` is off (simulated time)."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """The answer to one request (or why its row was rejected)."""

    request_id: str | None
    """None only for a rejected row whose own id was the problem."""
    version: int | None
    """None for a rejected row (never scored)."""
    prediction: float | None
    error: str | None = None
    rejected: bool = False
    """The row broke the schema or the limits: not scored, dead-lettered, ``error`` says why."""


@dataclass
class _Loaded:
    record: ServiceRecord
    models: dict[int, Any]
    faults: dict[str, ServingFault]
    checked_at: float
    classes: frozenset[float] | None = None
    """Classes the served classifiers know (for checking labels), None if not a classifier."""
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
        self.dead_letters_dropped = 0
        """Rejected rows not dead-lettered because Redis was unreachable (still answered)."""
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
                     time.monotonic(),
                     model_classes(models.values()) if rec.task == "classification" else None)
        self._cache[name] = st
        return st

    # --- serving ------------------------------------------------------------------
    def predict(
        self,
        service: str,
        rows: Sequence[Any],
        request_ids: Sequence[Any] | None = None,
        *,
        strict: bool = False,
    ) -> list[Prediction]:
        """Validate, route and score ``rows``; record telemetry; return one answer per row.

        Each row is judged on its own: a row that breaks the schema or whose request id is not
        valid is dead-lettered with the reason and answered ``rejected``; the other rows are
        scored and recorded as usual.

        Args:
            service: a registered service with a champion.
            rows: feature dicts (untrusted: each is checked against the schema).
            request_ids: one id per row (None entries, or None, are generated).
            strict: one request of one row (``features``): a bad row raises instead.

        Raises:
            UnknownService: the service is not registered.
            InvalidInput: the request as a whole is malformed (no rows, too many, ids not one
                per row), the service has no champion yet, or ``strict`` and the row is bad.
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
        out: list[Prediction | None] = [None] * len(rows)
        good, rids, pos = self._judge(service, rec, rows, request_ids, out, strict=strict)
        if not good:
            return out  # type: ignore[return-value]
        X = np.array(good, dtype=np.float64)
        answer = np.empty(len(good), dtype=np.int64)
        shadow: int | None = None
        for i, rid in enumerate(rids):
            answer[i], shadow = route(
                rid, champion=rec.champion, challenger=rec.challenger, mode=rec.mode,
                split=rec.split,
            )
        prep = (time.perf_counter() - t0) * 1000.0  # validation + routing, shared by versions
        for version in np.unique(answer).tolist():
            idx = np.flatnonzero(answer == version)
            self._score(service, st, version, X, idx, rids, (out, pos), prep, shadow=False)
        if shadow is not None:
            self._score(service, st, shadow, X, np.arange(len(good)), rids, None, prep,
                        shadow=True)
        return out  # type: ignore[return-value]

    def _judge(
        self, service: str, rec: ServiceRecord, rows: Sequence[Any],
        request_ids: Sequence[Any] | None, out: list[Prediction | None], *, strict: bool,
    ) -> tuple[list[list[float]], list[str], list[int]]:
        """Check each row and id; answer and dead-letter the bad ones in ``out``.

        Returns the good rows as floats, their request ids and their positions in ``rows``.
        """
        good: list[list[float]] = []
        rids: list[str] = []
        pos: list[int] = []
        rejects: list[tuple[int, Any, str]] = []
        for i, row in enumerate(rows):
            given = request_ids[i] if request_ids is not None else None
            rid: str | None = None
            try:
                if given is not None:
                    rid = request_id(given, "request_id" if strict else f"request_ids[{i}]")
                good.append(rec.schema_.row(row, where="features" if strict else
                                            f"instances[{i}]"))
            except InvalidInput as exc:
                rejects.append((i, {"request_id": given, "features": row}, str(exc)))
                out[i] = Prediction(rid, None, None, f"rejected: {exc}", rejected=True)
                continue
            rids.append(rid or uuid.uuid4().hex)
            pos.append(i)
        if rejects:
            self._dead_letter(service, rejects, strict=strict)
            if strict:
                raise InvalidInput(rejects[0][2])
        return good, rids, pos

    def _dead_letter(self, service: str, rejects: list[tuple[int, Any, str]], *,
                     strict: bool) -> None:
        """Dead-letter rejected rows in one round trip; a Redis outage must not fail serving."""
        try:
            with self.writer.r.pipeline(transaction=False) as pipe:
                for i, raw, reason in rejects:
                    self.writer.dead_letter(
                        service, "request", raw, reason if strict else f"[{i}] {reason}",
                        index=None if strict else i, pipe=pipe,
                    )
                pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError):
            self.dead_letters_dropped += len(rejects)

    def _score(
        self,
        service: str,
        st: _Loaded,
        version: int,
        X: np.ndarray,
        idx: np.ndarray,
        rids: list[str],
        out: tuple[list[Prediction | None], list[int]] | None,
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
            if not all(math.isfinite(p) for p in preds):
                # NaN or inf cannot be answered as JSON nor stored; the model is at fault.
                preds = [p if math.isfinite(p) else None for p in preds]
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
            if e is None and p is None:
                e = "model error: non-finite prediction"
            self.buffer.add(
                key,
                PredictionEvent(now, rids[i], version, tuple(X[i].tolist()), p, latency, e,
                                shadow).encode(),
            )
            if out is not None:
                out[0][out[1][i]] = Prediction(rids[i], version, p, e)

    def limits(self, service: str) -> Limits:
        """What feedback and events of ``service`` may contain now (classes of its models)."""
        st = self._state(service)
        spec = st.record.schema_.label
        declared = frozenset(spec.classes) if spec is not None and spec.classes else None
        return Limits(
            now=self.clock.now(), classes=declared or st.classes,
            label_min=spec.min if spec is not None else None,
            label_max=spec.max if spec is not None else None,
        )

    def feedback(self, service: str, labels: Sequence[Any], *, strict: bool = False
                 ) -> IngestResult:
        """Record ground-truth labels ``[{"request_id", "label"}]``; bad ones are dead-lettered.

        Args:
            service: a registered service.
            labels: untrusted items, each judged on its own against :meth:`limits`.
            strict: one label sent on its own: a bad one raises (after dead-lettering).

        Raises:
            UnknownService: the service is not registered.
            InvalidInput: ``strict`` and the label is bad.
        """
        res = self.writer.ingest_labels(service, labels, self.limits(service))
        if strict and res.rejected:
            raise InvalidInput(res.errors[0][1])
        return res

    def flush(self) -> int:
        """Write buffered telemetry now (evals call this at the end of each simulated batch)."""
        return self.buffer.flush()
