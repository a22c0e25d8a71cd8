"""Telemetry ingest benchmark: our batched Lua append vs one XADD per event and a plain pipeline.

Run: ``python -m evals.bench.telemetry`` (starts its own redis-server).
"""

from __future__ import annotations

import time
from typing import Any

import redis

from evals.bench.table import show
from fleet.embedded_redis import EmbeddedRedis
from fleet.keys import Keys
from fleet.telemetry import PredictionEvent, TelemetryWriter


def _events(n: int) -> list[PredictionEvent]:
    return [
        PredictionEvent(1.7e9 + i, f"req-{i}", 3, (0.1 * i, 0.5, None, 1.0, 2.0, 3.0),
                        float(i % 2), 0.42)
        for i in range(n)
    ]


def run(n: int = 200_000) -> list[dict[str, Any]]:
    """Measure events/s for each method on ``n`` events; return the table rows."""
    events = _events(n)
    rows: list[dict[str, Any]] = []
    with EmbeddedRedis(appendonly=False) as server:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        keys = Keys("bench")
        writer = TelemetryWriter(r, keys, maxlen=n * 2)

        t0 = time.perf_counter()
        writer.write_predictions("a", events)
        ours = n / (time.perf_counter() - t0)
        assert r.xlen(keys.telemetry("a")) == n

        t0 = time.perf_counter()
        with r.pipeline(transaction=False) as pipe:
            for i, e in enumerate(events):
                pipe.xadd(keys.telemetry("b"), {"d": e.encode()}, maxlen=n * 2, approximate=True)
                if i % 1000 == 999:
                    pipe.execute()
            pipe.execute()
        piped = n / (time.perf_counter() - t0)

        m = min(n, 20_000)  # one round trip per event is slow; a sample is enough
        t0 = time.perf_counter()
        for e in events[:m]:
            r.xadd(keys.telemetry("c"), {"d": e.encode()}, maxlen=n * 2, approximate=True)
        single = m / (time.perf_counter() - t0)
        mem = r.memory_usage(keys.telemetry("a")) or 0
        r.close()
    rows.append({"method": "flywheel TelemetryWriter (Lua batch)", "events/s": ours,
                 "x vs per-event XADD": ours / single})
    rows.append({"method": "redis-py pipeline of XADD (1k/batch)", "events/s": piped,
                 "x vs per-event XADD": piped / single})
    rows.append({"method": "one XADD per event (no pipelining)", "events/s": single,
                 "x vs per-event XADD": 1.0})
    rows.append({"method": f"Redis memory per event (bytes, n={n:,})", "events/s": mem / n,
                 "x vs per-event XADD": float("nan")})
    return rows


def main() -> None:
    """Print the table."""
    show("Telemetry ingest into Redis (one client core, events include encoding)", run())


if __name__ == "__main__":
    main()
