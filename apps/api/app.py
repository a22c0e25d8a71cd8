"""Assembles the HTTP API from the fleet's parts: routes, bearer auth, error translation, metrics.

Parts come in explicitly (not a whole ``System``) so tests and small deployments can build the
API without the monitor or the agents; :func:`create_api_from_system` wires a full system.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI

from apps.api import errors
from apps.api.approvals import approvals_router
from apps.api.auth import caller_dependency
from apps.api.chat import Chat, chat_router
from apps.api.health import flywheel_version, health_router
from apps.api.incidents import incidents_router
from apps.api.metrics import FleetCollector, Metrics, UsageSource
from apps.api.services import services_router
from apps.api.telemetry import telemetry_router
from fleet.approvals import ApprovalStore
from fleet.gateway import Gateway
from fleet.gateway.app import gateway_router
from fleet.incidents import IncidentStore
from fleet.registry import Registry
from fleet.telemetry import TelemetryWriter
from fleet.trainer.pool import TrainerHealth

if TYPE_CHECKING:  # importing the system pulls in the agents; only the annotation needs it
    from apps.settings import Settings
    from apps.system import System


def create_api(
    *,
    registry: Registry,
    incidents: IncidentStore,
    approvals: ApprovalStore,
    writer: TelemetryWriter,
    gateway: Gateway | None = None,
    usage: UsageSource | None = None,
    chat: Chat | None = None,
    tokens: Mapping[str, str] | None,
    auth: bool = True,
    metrics: Metrics | None = None,
    trainer: Callable[[], TrainerHealth] | None = None,
) -> FastAPI:
    """Build the HTTP API.

    Args:
        registry: services and versions (read), and the schemas ingest checks against.
        incidents: incidents (read).
        approvals: approval requests (read, decide).
        writer: where ingested telemetry goes (bad events to its dead-letter stream).
        gateway: serve ``/v1/models/{svc}/predict|feedback`` and info too, behind the same auth.
        usage: LLM calls and tokens for ``/metrics``; None when no agents run here.
        chat: ``chat(thread_id, message, user)`` yielding the reply; None answers 503.
        tokens: bearer token -> identity (the identity approval policies list).
        auth: False lets every caller in as ``anonymous``.
        metrics: where other code observes (detector time); default a fresh one.
        trainer: this process's trainer health for ``/healthz``; None when none runs here.

    Raises:
        InvalidInput: ``auth`` is on and ``tokens`` is empty.
    """
    caller = caller_dependency(tokens, auth=auth)
    metrics = metrics or Metrics()
    metrics.watch(FleetCollector(registry.r, registry.keys, registry=registry,
                                 incidents=incidents, approvals=approvals, usage=usage))
    app = FastAPI(
        title="flywheel", version=flywheel_version(),
        description="Services, incidents, approvals, chat and telemetry of a flywheel fleet. "
                    "Every /v1 route needs `Authorization: Bearer <token>` unless auth is off.",
    )
    errors.install(app)
    app.state.metrics = metrics
    app.include_router(health_router(registry.r, metrics, keys=registry.keys, trainer=trainer))
    guarded = [Depends(caller)]
    app.include_router(services_router(registry), dependencies=guarded)
    app.include_router(incidents_router(incidents), dependencies=guarded)
    app.include_router(approvals_router(approvals, caller), dependencies=guarded)
    app.include_router(chat_router(chat, caller), dependencies=guarded)
    app.include_router(telemetry_router(registry, writer), dependencies=guarded)
    if gateway is not None:
        app.include_router(gateway_router(gateway), dependencies=guarded, tags=["models"],
                           responses=errors.documented(400, 401, 404, 422, 503))
    return app


def create_api_from_system(
    system: System,
    settings: Settings,
    gateway: Gateway | None = None,
    chat: Chat | None = None,
    *,
    metrics: Metrics | None = None,
) -> FastAPI:
    """Build the HTTP API over a wired system, with auth from ``settings``.

    Raises:
        InvalidInput: ``FLYWHEEL_API_TOKENS`` is malformed, or empty while auth is on.
    """
    fleet = system.fleet
    return create_api(
        registry=fleet.registry, incidents=system.incidents, approvals=system.approvals,
        writer=fleet.writer, gateway=gateway, usage=system.usage, chat=chat,
        tokens=settings.api_identities(), auth=settings.api_auth, metrics=metrics,
        trainer=system.trainer.health,
    )
