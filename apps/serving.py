"""Builds a running gateway: the core over a fleet, and a uvicorn server around its HTTP app."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import Depends, FastAPI
from threadpoolctl import threadpool_limits

from apps.api.auth import caller_dependency
from apps.runtime import Fleet, open_fleet
from apps.settings import Settings
from fleet.embedded_redis import free_port
from fleet.errors import RedisUnavailable
from fleet.gateway import Gateway
from fleet.gateway.app import create_gateway_app
from fleet.telemetry import TelemetryBuffer


def single_threaded_models() -> None:
    """Serve with one OpenMP/BLAS thread per process.

    Per-request batches are small: a thread team's start-up costs more than it saves, and it
    stalls badly when the cores are busy.
    """
    threadpool_limits(limits=1)


def build_gateway(fleet: Fleet, *, refresh_interval: float = 1.0,
                  background: bool = True) -> Gateway:
    """A gateway over ``fleet`` writing telemetry through a batching buffer."""
    buffer = TelemetryBuffer(fleet.writer, background=background)
    return Gateway(fleet.registry, buffer, clock=fleet.clock, refresh_interval=refresh_interval,
                   sleep_on_latency_fault=background)


@contextmanager
def http_server(app: object, *, host: str = "127.0.0.1", port: int | None = None
                ) -> Iterator[str]:
    """Run ``app`` under uvicorn in a background thread; yield its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           access_log=False))  # type: ignore[arg-type]
    t = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    t.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not t.is_alive():
            raise RuntimeError(f"HTTP server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        t.join(timeout=5)


def gateway_app(gateway: Gateway, settings: Settings) -> FastAPI:
    """The gateway's HTTP app with the API's bearer-token check on predict, feedback and info.

    Tokens come from ``FLYWHEEL_API_TOKENS`` (as for ``flywheel serve``); with
    ``FLYWHEEL_API_AUTH=false`` everyone may call.

    Raises:
        InvalidInput: auth is on and no token is configured, or the tokens are malformed.
    """
    caller = caller_dependency(settings.api_identities(), auth=settings.api_auth)
    return create_gateway_app(gateway, dependencies=[Depends(caller)])


def serve_gateway_forever(settings: Settings, *, host: str, port: int) -> None:
    """Serve the gateway until interrupted.

    Raises:
        RedisUnavailable: ``REDIS_URL`` is not set.
        InvalidInput: auth is on and ``FLYWHEEL_API_TOKENS`` is unset or malformed.
    """
    if settings.redis_url is None:
        raise RedisUnavailable(
            "serve-gateway needs the fleet's Redis: set REDIS_URL (e.g. from `flywheel redis`)"
        )
    settings.api_identities()  # a malformed token list fails before anything starts
    single_threaded_models()
    with open_fleet(settings) as fleet:
        gw = build_gateway(fleet)
        try:
            uvicorn.run(gateway_app(gw, settings), host=host, port=port, log_level="info")
        finally:
            gw.buffer.close()
