"""One background-loop worker process for the loop tests (``python -m tests.apps.loop_worker``).

It attaches to the test's Redis, key prefix and artifacts directory, builds the same system as
``flywheel run`` (runbook brain, real time) and runs :class:`apps.loop.Loop` until SIGTERM, with
short lease TTLs from the command line. Two test probes, both written to Redis under the prefix:

- every incident-thread run is logged to ``P:test:runs`` as ``begin``/``end`` JSON records with
  the worker id, so the test can prove which worker ran what, and that runs never overlap;
- ``--stall-service SVC`` makes the first rollback of SVC (fleet-wide, claimed with SETNX on
  ``P:test:stall``) block for ``--stall-seconds`` (default: an hour) before it executes, so the
  test can kill or stop a worker mid-incident.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from apps.logs import configure
from apps.loop import Loop, LoopConfig
from apps.runtime import build_fleet
from apps.system import System, build_system
from fleet.clock import SystemClock
from fleet.store import connect


def runs_key(prefix: str) -> str:
    """Redis list of the run records."""
    return f"{prefix}:test:runs"


def stall_key(prefix: str) -> str:
    """Redis key naming the worker stalled inside a rollback."""
    return f"{prefix}:test:stall"


def _record_runs(system: System, worker: str) -> None:
    r, key = system.fleet.r, runs_key(system.fleet.keys.prefix)
    runner = system.runner

    def wrap(op: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(incident_id: str, *args: Any) -> Any:
            r.rpush(key, json.dumps({"incident": incident_id, "worker": worker, "op": op,
                                     "event": "begin", "t": time.time()}))
            out = fn(incident_id, *args)
            r.rpush(key, json.dumps({"incident": incident_id, "worker": worker, "op": op,
                                     "event": "end", "t": time.time(), "state": out.state}))
            return out
        return run

    runner.start = wrap("start", runner.start)  # type: ignore[method-assign]
    runner.resume_decision = wrap("resume_decision", runner.resume_decision)  # type: ignore[method-assign]
    runner.resume_tick = wrap("resume_tick", runner.resume_tick)  # type: ignore[method-assign]


def _stall_rollback(system: System, worker: str, service: str, seconds: float) -> None:
    r, key, ops = system.fleet.r, stall_key(system.fleet.keys.prefix), system.ops
    rollback = ops.rollback

    def stalled(svc: str, *args: Any, **kw: Any) -> Any:
        if svc == service and r.set(key, worker, nx=True):
            time.sleep(seconds)  # the test kills or stops us here
        return rollback(svc, *args, **kw)

    ops.rollback = stalled  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    """Parse the options, build the system and run the loop until SIGTERM."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--artifacts", type=Path, required=True)
    p.add_argument("--worker", required=True)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--shard-ttl", type=float, default=2.0)
    p.add_argument("--incident-ttl", type=float, default=2.0)
    p.add_argument("--heartbeat-ttl", type=float, default=2.0)
    p.add_argument("--stall-service", default=None)
    p.add_argument("--stall-seconds", type=float, default=3_600.0)
    a = p.parse_args(argv)
    configure("INFO", "json")
    fleet = build_fleet(connect(a.redis_url), a.redis_url, prefix=a.prefix,
                        artifacts=a.artifacts, clock=SystemClock())
    system = build_system(fleet)
    _record_runs(system, a.worker)
    if a.stall_service:
        _stall_rollback(system, a.worker, a.stall_service, a.stall_seconds)
    cfg = LoopConfig(shards=a.shards, tick_interval_s=a.interval, shard_ttl_s=a.shard_ttl,
                     incident_ttl_s=a.incident_ttl, heartbeat_ttl_s=a.heartbeat_ttl)
    try:
        Loop(system, cfg, owner=a.worker).run_forever()
    finally:
        system.close()


if __name__ == "__main__":
    main()
