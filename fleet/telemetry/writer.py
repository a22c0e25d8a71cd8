"""Writes telemetry into capped per-service streams in bulk, and dead-letters what is invalid.

Throughput comes from batching: one Lua call appends a whole batch of encoded events to a stream
(``XADD ... MAXLEN ~ N`` per event, server-side), so the client encodes one command per batch
instead of one per event. ``MAXLEN ~`` keeps memory bounded at roughly ``maxlen`` entries.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from fleet.clock import Clock, SystemClock
from fleet.errors import InvalidInput
from fleet.keys import Keys
from fleet.telemetry.events import LabelEvent, PredictionEvent, validate_label, validate_prediction
from fleet.telemetry.limits import Limits

_XADD_MANY = """
local n = 0
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'd', ARGV[i])
  n = n + 1
end
return n
"""

DEFAULT_MAXLEN = 200_000
DLQ_MAXLEN = 100_000
RAW_LIMIT = 2_000
"""Characters of a rejected event kept in the dead-letter stream."""


@dataclass
class IngestResult:
    """What one ingest call accepted and rejected."""

    accepted: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    """First few rejection reasons, ``[index] message``, for the caller's response."""
    errors: list[tuple[int, str]] = field(default_factory=list)
    """Every rejected item: its index in the batch and the reason."""


class TelemetryWriter:
    """Appends prediction and label events; rejects invalid ones to the dead-letter stream."""

    def __init__(
        self,
        r: redis.Redis,
        keys: Keys,
        *,
        clock: Clock | None = None,
        maxlen: int = DEFAULT_MAXLEN,
        chunk: int = 1_000,
    ):
        self.r = r
        self.keys = keys
        self.clock = clock or SystemClock()
        self.maxlen = maxlen
        self.chunk = chunk
        self._xadd_many = r.register_script(_XADD_MANY)

    def append_encoded(
        self, stream_key: str, payloads: Sequence[str], pipe: Any | None = None
    ) -> None:
        """Append already-encoded events to one stream (in chunks of ``chunk``)."""
        for i in range(0, len(payloads), self.chunk):
            self._xadd_many(
                keys=[stream_key], args=[self.maxlen, *payloads[i : i + self.chunk]], client=pipe
            )

    def write_predictions(self, service: str, events: Iterable[PredictionEvent]) -> int:
        """Append trusted prediction events (built by our gateway); return how many."""
        payloads = [e.encode() for e in events]
        self.append_encoded(self.keys.telemetry(service), payloads)
        return len(payloads)

    def write_labels(self, service: str, labels: Iterable[LabelEvent]) -> int:
        """Append trusted label events; return how many."""
        payloads = [e.encode() for e in labels]
        self.append_encoded(self.keys.labels(service), payloads)
        return len(payloads)

    def ingest_predictions(
        self, service: str, raw_events: Sequence[Any], n_features: int,
        limits: Limits | None = None,
    ) -> IngestResult:
        """Validate untrusted prediction events; append the good, dead-letter the bad.

        ``limits`` carries the service's versions and classes; without it only the time window,
        ids and numbers are checked.
        """
        lim = limits or Limits(now=self.clock.now())
        return self._ingest(service, "prediction", self.keys.telemetry(service), raw_events,
                            lambda raw: validate_prediction(raw, n_features, lim).encode())

    def ingest_labels(
        self, service: str, raw_labels: Sequence[Any], limits: Limits | None = None
    ) -> IngestResult:
        """Validate untrusted labels; append the good, dead-letter the bad."""
        lim = limits or Limits(now=self.clock.now())
        return self._ingest(service, "label", self.keys.labels(service), raw_labels,
                            lambda raw: validate_label(raw, lim).encode())

    def _ingest(
        self, service: str, kind: str, stream_key: str, raws: Sequence[Any],
        encode: Callable[[Any], str],
    ) -> IngestResult:
        good: list[str] = []
        res = IngestResult()
        for i, raw in enumerate(raws):
            try:
                good.append(encode(raw))
            except (InvalidInput, ValueError, TypeError, OverflowError) as exc:
                self._reject(res, service, kind, i, raw, str(exc))
        self.append_encoded(stream_key, good)
        res.accepted = len(good)
        return res

    def dead_letter(
        self, service: str, kind: str, raw: Any, reason: str, *, index: int | None = None,
        pipe: Any | None = None,
    ) -> None:
        """Put one rejected event in the dead-letter stream with the reason.

        The entry's fields: ``ts`` (clock time of the rejection), ``service``, ``kind``
        (``prediction``, ``label`` or ``request``: a row sent to predict), ``index`` (position in
        its batch, empty for a single one), ``field`` (the first bad field), ``reason`` (what was
        received and what is allowed, prefixed ``[index]`` in a batch) and ``raw`` (the event as
        JSON, cut at :data:`RAW_LIMIT` characters).
        """
        try:
            # allow_nan: a rejected NaN is kept as the text NaN for the reader, not re-raised.
            text = json.dumps(raw, default=repr)[:RAW_LIMIT]
        except (TypeError, ValueError, RecursionError):
            text = repr(raw)[:RAW_LIMIT]
        msg = reason.split("] ", 1)[1] if reason.startswith("[") and "] " in reason else reason
        (pipe if pipe is not None else self.r).xadd(
            self.keys.dlq,
            {"ts": repr(self.clock.now()), "service": service, "kind": kind,
             "index": "" if index is None else str(index), "field": _field(msg),
             "reason": reason[:500], "raw": text},
            maxlen=DLQ_MAXLEN,
            approximate=True,
        )

    def _reject(
        self, res: IngestResult, service: str, kind: str, index: int, raw: Any, reason: str
    ) -> None:
        res.rejected += 1
        res.errors.append((index, reason))
        if len(res.reasons) < 10:
            res.reasons.append(f"[{index}] {reason}")
        self.dead_letter(service, kind, raw, f"[{index}] {reason}", index=index)

    def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        """The most recent dead-letter entries, newest last."""
        rows = self.r.xrevrange(self.keys.dlq, count=count)
        return [dict(f, id=i) for i, f in reversed(rows)]


def _field(message: str) -> str:
    """The field a validation message names first (``"x.y: expected ..."`` -> ``x.y``).

    >>> _field("latency_ms: expected 0 to 3600000 ms, got 1e+300"), _field("no field here")
    ('latency_ms', '')
    """
    head, sep, _ = message.partition(": ")
    return head if sep and " " not in head and len(head) <= 200 else ""
