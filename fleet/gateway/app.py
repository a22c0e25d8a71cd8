"""The gateway's HTTP edge (FastAPI): predict, feedback and service info under ``/v1/models``.

Bad requests get a 4xx whose ``detail`` names the field; unknown services a 404 naming the known
ones. Handlers are ``async`` and call the core directly for small requests (scoring is CPU-bound,
a thread hop only adds latency) and through the thread pool for large batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleet.errors import FleetError, IntegrityError, InvalidInput, NotFound
from fleet.gateway.core import Gateway, Prediction

THREADPOOL_ROWS = 64


class PredictBody(BaseModel):
    """One row (``features``) or a batch (``instances``) to score."""

    model_config = ConfigDict(extra="forbid")

    features: dict[str, Any] | None = None
    """One row: feature name -> value."""
    request_id: str | None = Field(None, min_length=1, max_length=128)
    """Id of the single request; generated when absent. Routing is sticky on it."""
    instances: list[dict[str, Any]] | None = None
    """Several rows."""
    request_ids: list[str] | None = None
    """One id per instance; generated when absent."""

    @model_validator(mode="after")
    def _one_form(self) -> PredictBody:
        if (self.features is None) == (self.instances is None):
            raise ValueError("give exactly one of 'features' (one row) or 'instances' (a batch)")
        return self


class LabelIn(BaseModel):
    """Ground truth for one earlier request."""

    request_id: str
    label: float


class FeedbackBody(BaseModel):
    """One label or a batch of labels."""

    model_config = ConfigDict(extra="forbid")

    labels: list[dict[str, Any]] | None = None
    request_id: str | None = None
    label: Any = None


def _item(p: Prediction) -> dict[str, Any]:
    return {"request_id": p.request_id, "version": p.version, "prediction": p.prediction,
            "error": p.error}


def create_gateway_app(gateway: Gateway, *, dependencies: Sequence[Any] = ()) -> FastAPI:
    """Build the FastAPI app serving ``gateway``.

    Args:
        gateway: the core to serve.
        dependencies: FastAPI dependencies of the model routes (``/healthz`` stays open), e.g.
            the bearer-token check ``flywheel serve-gateway`` adds.
    """
    app = FastAPI(title="flywheel gateway", version="1")

    @app.exception_handler(FleetError)
    async def _fleet_error(_: Request, exc: FleetError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFound) else 422 if isinstance(exc, InvalidInput) else (
            503 if isinstance(exc, IntegrityError) else 400)
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(gateway_router(gateway), dependencies=list(dependencies))
    return app


def gateway_router(gateway: Gateway) -> APIRouter:
    """The ``/v1/models/{svc}`` routes (predict, feedback, info) over ``gateway``.

    The including app must translate :class:`FleetError` into responses, as
    :func:`create_gateway_app` does (the HTTP API includes these routes behind its auth).
    """
    router = APIRouter()

    @router.post("/v1/models/{svc}/predict")
    async def predict(svc: str, body: PredictBody) -> JSONResponse:
        if body.features is not None:
            res = gateway.predict(svc, [body.features], [body.request_id])
            p = res[0]
            if p.error:
                return JSONResponse(_item(p), status_code=503)
            return JSONResponse(
                {"request_id": p.request_id, "version": p.version, "prediction": p.prediction}
            )
        rows = body.instances or []
        if len(rows) > THREADPOOL_ROWS:
            res = await run_in_threadpool(gateway.predict, svc, rows, body.request_ids)
        else:
            res = gateway.predict(svc, rows, body.request_ids)
        return JSONResponse({"predictions": [_item(p) for p in res]})

    @router.post("/v1/models/{svc}/feedback")
    async def feedback(svc: str, body: FeedbackBody) -> dict[str, Any]:
        if body.labels is not None:
            labels: list[Any] = body.labels
        elif body.request_id is not None:
            labels = [{"request_id": body.request_id, "label": body.label}]
        else:
            raise InvalidInput("give 'labels': [{request_id, label}] or one 'request_id' + 'label'")
        res = gateway.feedback(svc, labels)
        return {"accepted": res.accepted, "rejected": res.rejected, "errors": res.reasons}

    @router.get("/v1/models/{svc}")
    async def info(svc: str) -> dict[str, Any]:
        rec = gateway.registry.service(svc)
        return {
            "name": rec.name,
            "task": rec.task,
            "features": [f.model_dump() for f in rec.schema_.features],
            "champion": rec.champion,
            "challenger": rec.challenger,
            "mode": rec.mode.value,
            "split": rec.split,
            "generation": rec.generation,
            "versions": [
                {"number": v.number, "status": v.status.value, "metrics": v.metrics,
                 "parent": v.parent, "created_by": v.created_by}
                for v in gateway.registry.versions(svc)
            ],
        }

    return router
