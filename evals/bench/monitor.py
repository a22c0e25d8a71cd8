"""Monitor benchmark: one tick's detector work over 10 → 10,000 services, next to scipy's KS loop.

Run: ``python -m evals.bench.monitor [--max-services 10000] [--repeats 3]`` (about a minute at
10,000 services, most of it building the synthetic aggregates; one core).

Each service has 10 features, a frozen reference of 1,000 events and a current window of 1,000
events (a tenth of the services drifted), latency and failure windows, and 100 newly labelled
answers for its CUSUM (a tick's worth at 10 labels per second and service, ticks of 10 s).
"ours" is the monitor's detection step exactly as a tick runs it
(``fleet.monitor.detect``: stacking every service's aggregates, then PSI + KS on features and
predictions, data quality, CUSUM with its alarm latch, latency / error-rate regression, canary),
one call per detector kind per batch of ``MonitorConfig.batch_services`` (500) services, as the
tick batches them. The named alternative is a per-service Python loop calling
``scipy.stats.ks_2samp`` on the raw 1,000-vs-1,000 values of each feature (KS only: it does less
than ours), in the same process. For large fleets the loop is timed on a sample of services and
extrapolated linearly, as the table says. Redis memory is ``MEMORY USAGE`` of the services'
``keys.monitor`` hashes as the tick saves them, and the ``INFO used_memory`` delta.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis
from rich.console import Console
from scipy.stats import ks_2samp

from evals.bench.table import show
from fleet.detectors import DetectorConfig
from fleet.embedded_redis import EmbeddedRedis
from fleet.keys import Keys
from fleet.monitor import MonitorConfig, MonitorStateStore, ServiceAgg, detect
from fleet.monitor.aggregates import Feed
from fleet.monitor.batch import EventBatch

F, WINDOW, LABELLED = 10, 1_000, 100
SIZES = (10, 100, 1_000, 10_000)
LOOP_SAMPLE = 200
"""Services the scipy loop is timed on when the fleet is larger (then scaled up)."""
POOL = 200
"""Distinct services built from raw data; service ``s`` has the data of ``s % POOL``."""


def _raw(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference and current raw windows ``(WINDOW, F)`` of one service (1 in 10 drifted)."""
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(WINDOW, F))
    cur = rng.normal(size=(WINDOW, F))
    if seed % 10 == 0:
        cur[:, 0] += 0.5
    return ref, cur


def _batch(X: np.ndarray, rng: np.random.Generator) -> EventBatch:
    n = len(X)
    return EventBatch(
        ids=tuple(f"{i + 1}-0" for i in range(n)), request_ids=tuple(map(str, range(n))), X=X,
        prediction=(X[:, 1] > 0).astype(np.float64), latency=rng.lognormal(1.6, 0.25, n),
        failed=rng.random(n) < 0.01, version=np.ones(n, np.int64), shadow=np.zeros(n, bool),
        ts=np.arange(n, dtype=np.float64))


def build(n: int, cfg: MonitorConfig) -> list[detect.Case]:
    """``n`` services' aggregates, warm (reference frozen, windows full), with a labelled feed.

    :data:`POOL` distinct services are built from raw data; the others are copies of them
    (through the state's own ``to_dict`` / ``from_dict``), so building 10,000 stays quick.
    """
    low, high = np.full(F, -6.0), np.full(F, 6.0)
    dcfg = DetectorConfig()
    cases = []
    for s in range(n):
        rng = np.random.default_rng(s + 1_000_000)
        if s < POOL:
            ref, cur = _raw(s)
            agg = ServiceAgg(F, task="classification", n_bins=dcfg.histogram_n_bins, config=cfg)
            agg.sync(1, None, canary=False, since=0.0)
            agg.ingest(_batch(np.vstack([ref, cur]), rng), low, high)
        else:
            agg = ServiceAgg.from_dict(cases[s % POOL].agg.to_dict(), cfg)
        wrong = (rng.random(LABELLED) < 0.1).astype(np.float64)
        feed = Feed(wrong, np.arange(LABELLED), np.arange(LABELLED, dtype=np.float64))
        cases.append(detect.Case(f"svc{s:05d}", dcfg, agg, feed))
    return cases


def detect_once(cases: list[detect.Case], batch: int) -> None:
    """The detection step of a tick (what ``Monitor._detect`` runs before building signals)."""
    for k in range(0, len(cases), batch):
        part = cases[k: k + batch]
        detect.drift(part)
        detect.quality(part, 1)
        detect.latch(part, detect.performance(part))
        detect.regression(part)
        detect.canary(part)


def time_ours(cases: list[detect.Case], repeats: int, batch: int) -> tuple[float, float]:
    """Best of ``repeats``: ``(drift step alone, every detector)`` in seconds."""
    drift = full = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for k in range(0, len(cases), batch):
            detect.drift(cases[k: k + batch])
        drift = min(drift, time.perf_counter() - t)
        t = time.perf_counter()
        detect_once(cases, batch)
        full = min(full, time.perf_counter() - t)
    return drift, full


def time_loop(n: int) -> tuple[float, str]:
    """The scipy loop over ``n`` services (or a sample, scaled): ``(seconds, how measured)``."""
    m = min(n, LOOP_SAMPLE)
    raws = [_raw(s % POOL) for s in range(m)]
    t = time.perf_counter()
    for ref, cur in raws:
        for f in range(F):
            ks_2samp(ref[:, f], cur[:, f])
    took = time.perf_counter() - t
    return took * n / m, ("all" if m == n else f"{m} → ×{n // m}")


def memory(r: redis.Redis, cases: list[detect.Case], n: int) -> tuple[int, int]:
    """``(MEMORY USAGE sum, used_memory delta)`` after saving ``n`` services' monitor state."""
    keys = Keys(f"bench{n}")
    store = MonitorStateStore(r, keys)
    before = int(r.info("memory")["used_memory"])
    for k in range(0, len(cases), 500):
        store.save({c.service: c.agg.to_dict() for c in cases[k: k + 500]})
    after = int(r.info("memory")["used_memory"])
    used = store.memory([c.service for c in cases])
    r.flushdb()
    return used, after - before


def run(sizes: tuple[int, ...] = SIZES, repeats: int = 3) -> list[dict[str, Any]]:
    cfg = MonitorConfig()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(data_dir=Path(tmp),
                                                             appendonly=False) as server:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        for n in sizes:
            t = time.perf_counter()
            cases = build(n, cfg)
            built = time.perf_counter() - t
            detect_once(cases, cfg.batch_services)  # warm-up: imports, allocator
            drift, full = time_ours(cases, repeats, cfg.batch_services)
            loop, how = time_loop(n)
            used, delta = memory(r, cases, n)
            rows.append({
                "services": n, "drift: PSI+KS (s)": drift, "all detectors (s)": full,
                "µs / service": full / n * 1e6, "ks_2samp loop (s)": loop,
                "loop timed on": how, "× drift": loop / drift, "× all": loop / full,
                "Redis B / service": used // n, "used_memory Δ MB": delta / 2**20,
                "build (s)": built,
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-services", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = tuple(s for s in SIZES if s <= args.max_services)
    show("monitor tick, detector work: services × 10 features, windows of 1,000 events, "
         f"{LABELLED} new labels / service; speed-up = scipy ks_2samp loop ÷ ours",
         run(sizes, args.repeats), Console(width=200))


if __name__ == "__main__":
    main()
