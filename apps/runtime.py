"""Composition root: builds the Redis client (or an embedded server) and the fleet objects."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import redis

from apps.settings import Settings
from fleet.audit import Audit
from fleet.clock import Clock, SystemClock
from fleet.embedded_redis import EmbeddedRedis
from fleet.keys import Keys
from fleet.migrations import migrate
from fleet.registry import ArtifactStore, Registry
from fleet.store import connect, is_cluster
from fleet.telemetry import TelemetryReader, TelemetryWriter


@dataclass
class Fleet:
    """The fleet objects one process works with, all sharing one Redis client and clock."""

    r: redis.Redis
    url: str
    keys: Keys
    clock: Clock
    audit: Audit
    registry: Registry
    writer: TelemetryWriter
    reader: TelemetryReader
    embedded: EmbeddedRedis | None = None


def build_fleet(
    r: redis.Redis, url: str, *, prefix: str, artifacts: Path, clock: Clock | None = None,
    audit_context: Mapping[str, str] | None = None,
) -> Fleet:
    """Wire the fleet objects over an existing client (``audit_context``: see :class:`Audit`)."""
    clock = clock or SystemClock()
    keys = Keys(prefix)
    audit = Audit(r, keys, clock, context=audit_context)
    return Fleet(
        r=r, url=url, keys=keys, clock=clock, audit=audit,
        registry=Registry(r, keys, ArtifactStore(artifacts), clock=clock, audit=audit),
        writer=TelemetryWriter(r, keys, clock=clock),
        reader=TelemetryReader(r, keys),
    )


@contextlib.contextmanager
def open_fleet(
    settings: Settings, *, clock: Clock | None = None, home: Path | None = None,
    audit_context: Mapping[str, str] | None = None,
) -> Iterator[Fleet]:
    """Connect to ``REDIS_URL`` or start a private redis-server, and yield the wired fleet."""
    home = home or settings.home
    server: EmbeddedRedis | None = None
    if settings.redis_url is not None:
        url = settings.redis_url.get_secret_value()
    else:
        server = EmbeddedRedis().start()
        url = server.url
    try:
        r = connect(url)
        fleet = build_fleet(r, url, prefix=settings.prefix, artifacts=home / "artifacts",
                            clock=clock, audit_context=audit_context)
        migrate(r, fleet.keys, now=fleet.clock.now())  # once per prefix: old key names move
        if is_cluster(r):  # audit entries a crash left in the services' outboxes move now
            fleet.audit.outbox.drain_all(fleet.registry.services())
        fleet.embedded = server
        yield fleet
        r.close()
    finally:
        if server is not None:
            server.stop()
