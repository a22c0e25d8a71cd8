"""Soak benchmark: Redis memory over 200 incidents through the real graph, with/without retention.

Incidents are scripted signals handled by the runbook brain over the real Redis checkpointer, on
one service of a world built as the evals build it (two trained versions). Odd incidents are
``covariate_drift`` (supervisor, monitoring agent, drift report, finish); even ones are
``latency_regression``, whose rollback this service's policy puts behind an approval (the person
approves it; the rollback leaves an idempotency record). Before each, an operator promotion makes
the other version champion so there is a previous one to roll back to. Simulated time
moves 15 minutes per incident (past the 10-minute cooldown). Every 10 incidents the retention pass
runs, as ``flywheel run`` would on its cadence, with SHORTENED windows (see ``SOAK_RETENTION``);
the alternative is the same run with no retention at all. Each run gets a fresh redis-server.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from evals.world import make_world
from fleet.datasets import stationary
from fleet.embedded_redis import EmbeddedRedis
from fleet.incidents import Signal
from fleet.retention import Pruner, Retention
from fleet.schema import Policy
from graphs.checkpoint_prune import SaverThreads

INCIDENTS = 200
MARKS = (50, 100, 150, 200)
SPACING_S = 900.0
"""Simulated seconds between incidents (past the default 600 s cooldown)."""
PRUNE_EVERY = 10
SOAK_RETENTION = {"checkpoint_grace_s": 3_600.0, "incident_keep_s": 6 * 3_600.0,
                  "approval_keep_s": 6 * 3_600.0, "action_keep_s": 6 * 3_600.0,
                  "audit_keep_s": 6 * 3_600.0}
SHORT = "short"
"""Shortened windows (defaults: 1 day, 30, 30, 30 and 90 days) so 200 incidents reach a steady
state: about 24 incidents (6 h / 15 min) keep their records, 4 their checkpoints."""


def _family(key: str, prefix: str) -> str:
    rest = key[len(prefix) + 1:]
    head = rest.split(":", 1)[0]
    if head.startswith("{"):
        return "service"
    return {"incidents": "incident", "approvals": "approval"}.get(head, head)


def _measure(r: redis.Redis, prefix: str, n: int, mode: str) -> dict[str, Any]:
    fams = Counter(_family(k, prefix) for k in r.scan_iter(match=f"{prefix}:*", count=1000))
    return {"retention": mode, "incidents": n,
            "used_memory KB": round(int(r.info("memory")["used_memory"]) / 1024),
            "keys": sum(fams.values()), "checkpoint": fams.get("cp", 0),
            "incident": fams.get("incident", 0), "approval": fams.get("approval", 0),
            "act": fams.get("act", 0), "audit entries": int(r.xlen(f"{prefix}:audit") or 0),
            "other": sum(v for f, v in fams.items()
                         if f not in ("cp", "incident", "approval", "act"))}


POLICY = Policy(needs_approval=frozenset({"promote", "retire", "rollback"}),
                max_rollbacks_per_hour=10)


def _drive(world: Any, incident_id: str) -> None:
    """Advance the incident until it closes (driver passes 30 s apart; the person approves)."""
    sys_ = world.system
    for _ in range(20):
        sys_.driver.step()
        for req in sys_.approvals.pending():
            sys_.approvals.decide(req.id, approve=True, by="oncall", reason="soak approves",
                                  digest=req.action_digest)
        if world.system.incidents.get(incident_id).status.terminal:
            return
        world.clock.advance(30.0)
    raise RuntimeError(f"soak incident {incident_id} did not close: "
                       f"{world.system.incidents.get(incident_id).status}")


def _signal(world: Any, n: int) -> Signal:
    """Incident ``n``'s signal; an even one first gets a previous champion to roll back to."""
    svc, now = world.service, world.clock.now()
    if n % 2:
        return Signal(service=svc, kind="covariate_drift", severity="warning", detector="soak",
                      evidence={"psi": 0.3, "features": ["x0"]}, at=now)
    reg = world.system.fleet.registry
    other = 2 if reg.service(svc).champion == 1 else 1
    reg.promote(svc, other, actor="soak", reason="operator switch (soak)")
    return Signal(service=svc, kind="latency_regression", severity="warning", detector="soak",
                  evidence={"p99_ms": 900.0}, version=other, at=now)


def _soak(with_retention: bool, home: Path) -> list[dict[str, Any]]:
    mode = SHORT if with_retention else "none"
    prefix = "soak"
    with EmbeddedRedis(appendonly=False) as server:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        world = make_world(r, server.url, prefix=prefix, artifacts=home / prefix / mode.split()[0],
                           stream=stationary(2_000, seed=1), train_rows=1_000, policy=POLICY)
        sys_ = world.system
        sys_.trainer.train_from_dataset(world.service, world.stream, 1_000, 2_000, seed=1,
                                        created_by="soak")  # v2: a version to switch to
        pruner = Pruner(r, sys_.fleet.keys, Retention(**SOAK_RETENTION,
                                                      audit_archive_dir=home / "audit"),
                        checkpoints=SaverThreads(sys_.runner.graph.checkpointer),
                        clock=world.clock) if with_retention else None
        rows = []
        try:
            for n in range(1, INCIDENTS + 1):
                inc = sys_.incidents.observe(_signal(world, n))
                if inc is None:
                    raise RuntimeError("soak signal was swallowed by the cooldown")
                _drive(world, inc.id)
                world.clock.advance(SPACING_S)
                if pruner is not None and n % PRUNE_EVERY == 0:
                    pruner.run()
                if n in MARKS:
                    rows.append(_measure(r, prefix, n, mode))
        finally:
            world.close()
            r.close()
    return rows


def run() -> list[dict[str, Any]]:
    """Both runs' tables, then the memory(200)/memory(100) ratio of each."""
    with tempfile.TemporaryDirectory() as tmp:
        rows = _soak(False, Path(tmp)) + _soak(True, Path(tmp))
    for mode in ("none", SHORT):
        mem = {row["incidents"]: row["used_memory KB"] for row in rows if row["retention"] == mode}
        ratio = {k: "" for k in rows[0]}
        ratio.update({"retention": mode, "incidents": "mem 200/100",
                      "used_memory KB": round(mem[200] / mem[100], 3)})
        rows.append(ratio)
    return rows
