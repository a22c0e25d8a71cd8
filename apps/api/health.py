"""``/healthz`` and ``/metrics``: open to anyone, so probes and Prometheus need no token."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

import redis
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from apps.api.metrics import Metrics
from apps.api.models import HealthOut
from fleet.keys import Keys
from fleet.trainer.pool import TrainerHealth

LIVE_S = 60.0
"""A loop worker whose heartbeat is older than this no longer counts (twice the default TTL)."""


def flywheel_version() -> str:
    """The installed package's version (``0+unknown`` when run from an uninstalled tree)."""
    try:
        return version("flywheel")
    except PackageNotFoundError:
        return "0+unknown"


def health_router(
    r: redis.Redis,
    metrics: Metrics,
    *,
    keys: Keys | None = None,
    trainer: Callable[[], TrainerHealth] | None = None,
) -> APIRouter:
    """Health and metrics routes over the fleet's Redis client.

    Args:
        r: the fleet's Redis.
        metrics: what ``/metrics`` renders.
        keys: the fleet's keys, to read the loop workers' trainer health (None: not read).
        trainer: this process's trainer health, if it has one.
    """
    router = APIRouter(tags=["operations"])
    release = flywheel_version()

    @router.get("/healthz", response_model=HealthOut,
                responses={503: {"model": HealthOut,
                                 "description": "Redis is unreachable, or this process's "
                                                "trainer is broken."}})
    def healthz() -> HealthOut | JSONResponse:
        """Whether the API is up, reaches Redis, and whether the trainers can run jobs.

        503 when Redis is down or this process's own trainer is broken (a restart fixes
        that); a loop worker's broken trainer makes the status ``degraded`` with 200, since
        restarting the API would not repair it.
        """
        try:
            r.ping()
            loops = _loop_trainers(r, keys) if keys is not None else {}
        except redis.RedisError as exc:
            down = HealthOut(status="unavailable", version=release,
                             redis=f"{type(exc).__name__}: {exc}"[:300])
            return JSONResponse(down.model_dump(), status_code=503)
        own = trainer() if trainer is not None else None
        broken = (own is not None and own.state == "broken") or any(
            v.startswith("broken") for v in loops.values())
        out = HealthOut(status="degraded" if broken else "ok", version=release, redis="ok",
                        trainer=own.summary if own is not None else None, trainers=loops)
        if own is not None and own.state == "broken":
            return JSONResponse(out.model_dump(), status_code=503)
        return out

    @router.get("/metrics", response_class=Response,
                responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                                 "description": "Prometheus text exposition."}})
    def metrics_text() -> Response:
        """Prometheus metrics: telemetry, incidents, approvals, actions, detector time, LLM use."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router


def _loop_trainers(r: redis.Redis, keys: Keys) -> dict[str, str]:
    """Worker -> trainer summary, for the loop workers with a recent heartbeat."""
    live = set(r.zrangebyscore(keys.loop_workers, time.time() - LIVE_S, "+inf"))
    out: dict[str, str] = {}
    for worker, raw in sorted(r.hgetall(keys.loop_trainers).items()):
        if worker in live:
            try:
                out[worker] = str(json.loads(raw).get("summary", "unknown"))
            except (ValueError, AttributeError):
                out[worker] = "unknown (unreadable report)"
    return out
