"""The monitor's Redis edge: per-service state in ``keys.monitor(svc)``, tails, the tick summary.

Every read and write of a batch of services is one pipelined round trip. A service's hash holds
its stream cursors as plain fields (so a state that cannot be decoded still never makes the
monitor re-read the streams) and its aggregates as compressed JSON with a schema version.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from fleet.keys import Keys
from fleet.telemetry.events import LabelEvent, PredictionEvent

STATE_SCHEMA = 1
"""Layout of the ``keys.monitor(svc)`` hash."""

MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
"""``n -> f``: turns an aggregates dict of schema ``n`` into schema ``n + 1``. Monitor state is
derived data, so a schema with no path to the current one is dropped and rebuilt from the
stream tail (its cursors are kept: nothing is re-read)."""


@dataclass(frozen=True)
class Stored:
    """What the store holds for one service."""

    tel: str
    """Last telemetry stream id processed ('0' before any)."""
    lab: str
    """Last label stream id processed."""
    agg: dict[str, Any] | None
    """Aggregates (``ServiceAgg.to_dict``), or None when missing or unreadable."""


def encode(agg: Mapping[str, Any]) -> str:
    """Compact text of an aggregates dict: JSON, zlib, base64 (windows are mostly zeros).

    Example:
        >>> decode(encode({"a": [0] * 1000})) == {"a": [0] * 1000}, len(encode({"a": [0] * 1000}))
        (True, 44)
    """
    raw = json.dumps(agg, separators=(",", ":"), allow_nan=True).encode()
    return base64.b64encode(zlib.compress(raw, 6)).decode()


def decode(text: str) -> dict[str, Any]:
    """Inverse of :func:`encode`."""
    return json.loads(zlib.decompress(base64.b64decode(text)))


def migrate(agg: dict[str, Any], target: int) -> dict[str, Any] | None:
    """Apply :data:`MIGRATIONS` up to ``target``; None if some step is missing."""
    while agg.get("schema", 0) < target:
        step = MIGRATIONS.get(int(agg.get("schema", 0)))
        if step is None:
            return None
        agg = step(agg)
    return agg if agg.get("schema") == target else None


class MonitorStateStore:
    """Loads and saves monitor state, and reads new telemetry, for batches of services."""

    def __init__(self, r: redis.Redis, keys: Keys):
        self.r = r
        self.keys = keys

    def load(self, services: Sequence[str], agg_schema: int) -> dict[str, Stored | None]:
        """The stored state of each service (None for a service the monitor has never seen)."""
        with self.r.pipeline(transaction=False) as pipe:
            for s in services:
                pipe.hgetall(self.keys.monitor(s))
            rows = pipe.execute()
        out: dict[str, Stored | None] = {}
        for s, h in zip(services, rows, strict=True):
            out[s] = self._parse(h, agg_schema) if h else None
        return out

    @staticmethod
    def _parse(h: dict[str, str], agg_schema: int) -> Stored:
        agg = None
        if h.get("v") == str(STATE_SCHEMA) and h.get("agg"):
            try:
                agg = migrate(decode(h["agg"]), agg_schema)
            except (ValueError, zlib.error, json.JSONDecodeError):
                agg = None
        return Stored(h.get("tel") or "0", h.get("lab") or "0", agg)

    def save(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        """Write aggregates dicts (each with its ``tel`` / ``lab`` cursors) in one round trip."""
        with self.r.pipeline(transaction=False) as pipe:
            for s, agg in states.items():
                pipe.hset(self.keys.monitor(s), mapping={
                    "v": str(STATE_SCHEMA), "tel": agg["tel"], "lab": agg["lab"],
                    "champion": "" if agg.get("champion") is None else str(agg["champion"]),
                    "ticked_at": repr(float(agg.get("ticked_at", 0.0))), "agg": encode(agg)})
            pipe.execute()

    def tails(
        self, cursors: Mapping[str, tuple[str, str]], count: int
    ) -> dict[str, tuple[list[tuple[str, PredictionEvent]], list[tuple[str, LabelEvent]]]]:
        """New predictions and labels of each service strictly after its ``(tel, lab)`` cursors.

        Same reads as ``TelemetryReader.predictions_after`` / ``labels_after``, pipelined.
        """
        names = list(cursors)
        with self.r.pipeline(transaction=False) as pipe:
            for s in names:
                tel, lab = cursors[s]
                pipe.xrange(self.keys.telemetry(s), min=_after(tel), count=count)
                pipe.xrange(self.keys.labels(s), min=_after(lab), count=count)
            rows = pipe.execute()
        out = {}
        for k, s in enumerate(names):
            preds = [(sid, PredictionEvent.decode(f["d"])) for sid, f in rows[2 * k]]
            labels = [(sid, LabelEvent.decode(f["d"])) for sid, f in rows[2 * k + 1]]
            out[s] = (preds, labels)
        return out

    def between(self, service: str, after: str, upto: str, count: int
                ) -> list[tuple[str, PredictionEvent]]:
        """Predictions in ``(after, upto]``, oldest first, at most ``count`` (the oldest)."""
        if upto in ("", "0", "0-0"):
            return []
        rows = self.r.xrange(self.keys.telemetry(service), min=_after(after), max=upto,
                             count=count)
        return [(sid, PredictionEvent.decode(f["d"])) for sid, f in rows]

    def before(self, service: str, upto: str, count: int) -> list[tuple[str, PredictionEvent]]:
        """The last ``count`` predictions up to and including ``upto``, oldest first."""
        if upto in ("", "0", "0-0"):
            return []
        rows = self.r.xrevrange(self.keys.telemetry(service), max=upto, count=count)
        return [(sid, PredictionEvent.decode(f["d"])) for sid, f in reversed(rows)]

    # --- fleet-wide --------------------------------------------------------------------
    def rejected(self, count: int = 100_000) -> Counter[str]:
        """Dead-lettered events per service since the last call (advances a stored cursor)."""
        cursor = self.r.hget(self.keys.monitor_fleet, "dlq") or "0"
        rows = self.r.xrange(self.keys.dlq, min=_after(cursor), count=count)
        if rows:
            self.r.hset(self.keys.monitor_fleet, "dlq", rows[-1][0])
        return Counter(f.get("service", "") for _, f in rows)

    def record_tick(self, summary: Mapping[str, Any]) -> None:
        """Store the last tick's summary (what ``flywheel status`` shows)."""
        self.r.hset(self.keys.monitor_fleet, "last_tick", json.dumps(summary, default=str))

    def last_tick(self) -> dict[str, Any] | None:
        """The last tick's summary, if the monitor ever ran on this Redis."""
        raw = self.r.hget(self.keys.monitor_fleet, "last_tick")
        return json.loads(raw) if raw else None

    def memory(self, services: Sequence[str]) -> int:
        """Bytes Redis reports (``MEMORY USAGE``) for these services' monitor hashes."""
        with self.r.pipeline(transaction=False) as pipe:
            for s in services:
                pipe.memory_usage(self.keys.monitor(s), samples=0)
            return sum(int(v or 0) for v in pipe.execute())


def _after(sid: str) -> str:
    return "-" if sid in ("", "0", "0-0") else f"({sid}"
