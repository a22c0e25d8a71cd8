"""Fleet errors become 4xx/503 JSON responses here, at the edge; the fleet never sees HTTP.

Every error body is ``{"detail": ...}``. The route decorators document the same status codes
(:func:`documented`), so the OpenAPI spec lists every answer a route can give.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from apps.api.models import ErrorOut
from fleet.errors import (
    ActionInProgress,
    ActionOutcomeUnknown,
    AlreadyExists,
    ApprovalRequired,
    FleetError,
    IllegalTransition,
    IntegrityError,
    InvalidInput,
    NotFound,
    PolicyViolation,
    RedisUnavailable,
    WriteConflict,
)

log = logging.getLogger(__name__)

# Most specific first: AlreadyDecided is an AlreadyExists, LimitExceeded a PolicyViolation.
_STATUS: tuple[tuple[type[FleetError], int], ...] = (
    (NotFound, 404),
    (InvalidInput, 422),
    (PolicyViolation, 403),
    (AlreadyExists, 409),
    (IllegalTransition, 409),
    (ApprovalRequired, 409),
    (ActionInProgress, 409),
    (ActionOutcomeUnknown, 409),
    (IntegrityError, 503),
    (RedisUnavailable, 503),
    (WriteConflict, 503),
)

_WHAT = {
    400: "The body is not parseable JSON.",
    401: "Missing or unknown bearer token.",
    403: "Refused by policy (not an approver, another action's digest, expired).",
    404: "No such service, incident or approval.",
    409: "Conflicts with what already happened (e.g. the approval was decided first).",
    422: "The request is malformed or fails validation; the detail names the field.",
    503: "Redis is unreachable, or the feature is not configured in this process.",
}


def status_for(exc: FleetError) -> int:
    """The HTTP status of a fleet error (400 for kinds no caller can act on specifically)."""
    return next((code for kind, code in _STATUS if isinstance(exc, kind)), 400)


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses, all with an :class:`ErrorOut`."""
    return {code: {"model": ErrorOut, "description": _WHAT[code]} for code in codes}


def install(app: FastAPI) -> None:
    """Register the translations of fleet, Redis and unexpected errors on ``app``."""

    @app.exception_handler(FleetError)
    async def _fleet(_: Request, exc: FleetError) -> JSONResponse:
        detail = str(exc)
        if isinstance(exc, ApprovalRequired):
            rid = exc.request.id
            detail += f"; approval {rid!r} is pending: GET /v1/approvals/{rid}"
        return JSONResponse({"detail": detail}, status_code=status_for(exc))

    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def _redis(_: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("Redis unreachable: %s", exc)
        return JSONResponse(
            {"detail": f"Redis is unreachable ({type(exc).__name__}); retry, and check REDIS_URL "
                       "and `GET /healthz`"},
            status_code=503,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not a bad request: log it with the traceback, and keep the body JSON like every
        # other error. Starlette re-raises it afterwards, so test clients still see it.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the server log"}, status_code=500)
