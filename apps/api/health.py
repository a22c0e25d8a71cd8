"""``/healthz`` and ``/metrics``: open to anyone, so probes and Prometheus need no token."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import redis
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from apps.api.metrics import Metrics
from apps.api.models import HealthOut


def flywheel_version() -> str:
    """The installed package's version (``0+unknown`` when run from an uninstalled tree)."""
    try:
        return version("flywheel")
    except PackageNotFoundError:
        return "0+unknown"


def health_router(r: redis.Redis, metrics: Metrics) -> APIRouter:
    """Health and metrics routes over the fleet's Redis client."""
    router = APIRouter(tags=["operations"])
    release = flywheel_version()

    @router.get("/healthz", response_model=HealthOut,
                responses={503: {"model": HealthOut, "description": "Redis is unreachable."}})
    def healthz() -> HealthOut | JSONResponse:
        """Whether the API is up and reaches Redis (503 when it does not)."""
        try:
            r.ping()
        except redis.RedisError as exc:
            down = HealthOut(status="unavailable", version=release,
                             redis=f"{type(exc).__name__}: {exc}"[:300])
            return JSONResponse(down.model_dump(), status_code=503)
        return HealthOut(status="ok", version=release, redis="ok")

    @router.get("/metrics", response_class=Response,
                responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                                 "description": "Prometheus text exposition."}})
    def metrics_text() -> Response:
        """Prometheus metrics: telemetry, incidents, approvals, actions, detector time, LLM use."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
