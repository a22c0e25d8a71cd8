"""The gateway's HTTP edge (FastAPI): predict, feedback and service info under ``/v1/models``.

Bad requests get a 4xx whose ``detail`` names the field; unknown services a 404 naming the known
ones. In a batch each row (or label) is judged on its own: the good ones are served, the bad
ones dead-lettered and listed in the response's ``errors``.

Handlers are ``async`` and call the core directly for small requests (scoring is CPU-bound,
a thread hop only adds latency) and through the thread pool for large batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleet.errors import FleetError, IntegrityError, InvalidInput, NotFound
from fleet.gateway.core import MAX_BATCH, Gateway, Prediction

THREADPOOL_ROWS = 64


class PredictBody(BaseModel):
    """One row (``features``) or a batch (``instances``) to score."""

    model_config = ConfigDict(extra="forbid")

    features: dict[str, Any] | None = None
    """One row: feature name -> value. A bad row is a 422 (and a dead letter)."""
    request_id: Any = None
    """Id of the single request; generated when absent. Routing is sticky on it."""
    instances: list[Any] | None = Field(None, max_length=MAX_BATCH)
    """Several rows, each judged on its own (items are not typed here on purpose: one bad row
    must not reject the batch)."""
    request_ids: list[Any] | None = Field(None, max_length=MAX_BATCH)
    """One id per instance; generated when absent."""

    @model_validator(mode="after")
    def _one_form(self) -> PredictBody:
        if (self.features is None) == (self.instances is None):
            raise ValueError("give exactly one of 'features' (one row) or 'instances' (a batch)")
        return self


class FeedbackBody(BaseModel):
    """One label (``request_id`` + ``label``) or a batch (``labels``), each judged on its own."""

    model_config = ConfigDict(extra="forbid")

    labels: list[Any] | None = Field(None, max_length=MAX_BATCH)
    """``[{"request_id": str, "label": number}, ...]``; a bad item is dead-lettered and listed
    in the answer's ``errors`` as ``{"index", "reason"}``."""
    request_id: Any = None
    label: Any = None


class PredictionOut(BaseModel):
    """The answer to one row: the prediction, or why there is none."""

    request_id: str | None
    """The row's id (generated when not given); null only when the given id was refused."""
    version: int | None
    """The version that answered; null for a rejected row."""
    prediction: float | None
    error: str | None = None
    """``rejected: <reason>`` for a refused row, ``model error: ...`` when scoring failed."""


class RowError(BaseModel):
    """A rejected row of a batch (also dead-lettered with the same reason)."""

    index: int
    """Position in ``instances``."""
    request_id: str | None
    reason: str
    """The field, the value received (summarised) and what is allowed."""


class BatchOut(BaseModel):
    """The answer to ``instances``: one prediction per row, in order, and the rejected rows."""

    predictions: list[PredictionOut]
    errors: list[RowError]
    """Empty when every row was served."""


class ItemError(BaseModel):
    """A rejected label (also dead-lettered with the same reason)."""

    index: int
    reason: str


class FeedbackOut(BaseModel):
    """What a feedback call stored and what it dead-lettered."""

    accepted: int
    rejected: int
    errors: list[ItemError]


def _item(p: Prediction) -> dict[str, Any]:
    return {"request_id": p.request_id, "version": p.version, "prediction": p.prediction,
            "error": p.error}


def _errors(res: list[Prediction]) -> list[dict[str, Any]]:
    """The rejected rows of a batch: index, request id and reason."""
    return [{"index": i, "request_id": p.request_id, "reason": (p.error or "").removeprefix(
        "rejected: ")} for i, p in enumerate(res) if p.rejected]


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

    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def _redis(_: Request, exc: redis.RedisError) -> JSONResponse:
        return JSONResponse({"detail": f"Redis is unreachable ({type(exc).__name__}); retry"},
                            status_code=503)

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

    @router.post("/v1/models/{svc}/predict", response_model=PredictionOut | BatchOut)
    async def predict(svc: str, body: PredictBody) -> JSONResponse:
        if body.features is not None:
            if body.request_ids is not None:
                raise InvalidInput("request_ids: goes with 'instances'; use 'request_id' with "
                                   "'features'")
            res = gateway.predict(svc, [body.features], [body.request_id], strict=True)
            p = res[0]
            if p.error:
                return JSONResponse(_item(p), status_code=503)
            return JSONResponse(
                {"request_id": p.request_id, "version": p.version, "prediction": p.prediction}
            )
        if body.request_id is not None:
            raise InvalidInput("request_id: goes with 'features'; use 'request_ids' with "
                               "'instances'")
        rows = body.instances or []
        if len(rows) > THREADPOOL_ROWS:
            res = await run_in_threadpool(gateway.predict, svc, rows, body.request_ids)
        else:
            res = gateway.predict(svc, rows, body.request_ids)
        return JSONResponse({"predictions": [_item(p) for p in res], "errors": _errors(res)})

    @router.post("/v1/models/{svc}/feedback", response_model=FeedbackOut)
    async def feedback(svc: str, body: FeedbackBody) -> dict[str, Any]:
        if body.labels is not None:
            res = gateway.feedback(svc, body.labels)
        elif body.request_id is not None:
            res = gateway.feedback(svc, [{"request_id": body.request_id, "label": body.label}],
                                   strict=True)
        else:
            raise InvalidInput("give 'labels': [{request_id, label}] or one 'request_id' + 'label'")
        return {"accepted": res.accepted, "rejected": res.rejected,
                "errors": [{"index": i, "reason": reason} for i, reason in res.errors]}

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
