"""A small fleet on real Redis for the HTTP API tests: one served service, stores, tokens."""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis
from fastapi import FastAPI
from sklearn.dummy import DummyClassifier

from apps.api import Metrics, create_api
from apps.api.chat import Chat
from fleet.actions import ActionContext, ActionSpec
from fleet.approvals import ApprovalRequest, ApprovalStore
from fleet.audit import Audit
from fleet.clock import ManualClock
from fleet.gateway import Gateway
from fleet.gateway.app import create_gateway_app
from fleet.incidents import Incident, IncidentStore, Signal
from fleet.keys import Keys
from fleet.registry import ArtifactStore, Registry
from fleet.schema import FeatureSchema, FeatureSpec, Policy
from fleet.telemetry import TelemetryBuffer, TelemetryWriter
from supervisors.brains import UsageTracker

TOKENS = {"tok-alice": "alice", "tok-bob": "bob", "tok-carol": "carol"}
"""Bearer token -> identity; alice and bob are approvers of SERVICE, carol is not."""
SERVICE = "elec"
SCHEMA = FeatureSchema(features=(FeatureSpec(name="a"), FeatureSpec(name="b", nullable=False)))
POLICY = Policy(approvers=("alice", "bob"), approval_ttl_s=900.0)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class World:
    """The fleet parts the API is built from, sharing one Redis prefix and a manual clock."""

    r: redis.Redis
    keys: Keys
    clock: ManualClock
    registry: Registry
    incidents: IncidentStore
    approvals: ApprovalStore
    writer: TelemetryWriter
    audit: Audit
    usage: UsageTracker
    metrics: Metrics = field(default_factory=Metrics)
    _buffers: list[TelemetryBuffer] = field(default_factory=list)

    def api(self, *, auth: bool = True, chat: Chat | None = None, gateway: bool = False,
            tokens: dict[str, str] | None = TOKENS) -> FastAPI:
        return create_api(
            registry=self.registry, incidents=self.incidents, approvals=self.approvals,
            writer=self.writer, gateway=self.gateway() if gateway else None, usage=self.usage,
            chat=chat, tokens=tokens, auth=auth, metrics=self.metrics,
        )

    def gateway(self) -> Gateway:
        buf = TelemetryBuffer(self.writer, background=False)
        self._buffers.append(buf)
        return Gateway(self.registry, buf, clock=self.clock, refresh_interval=0.0)

    def request_promotion(self, *, incident: str = "inc-1", version: int = 2,
                          approvers: tuple[str, ...] | None = None) -> ApprovalRequest:
        policy = POLICY if approvers is None else POLICY.model_copy(update={"approvers": approvers})
        return self.approvals.request(
            ActionSpec(name="promote", service=SERVICE, args={"version": version}),
            ActionContext(incident=incident, actor="agent:deployment", reason="canary passed",
                          thread_id=incident),
            policy, risk="high", evidence={"holdout_accuracy": 0.91},
        )

    def signal(self, kind: str = "performance_drop", *, service: str = SERVICE,
               severity: str = "warning") -> Incident:
        """A detector signal; returns the incident it opened (or updated)."""
        incident = self.incidents.observe(Signal(
            service=service, kind=kind, severity=severity, detector="cusum",  # type: ignore[arg-type]
            evidence={"statistic": 9.1, "threshold": 8.0}, onset=1200, version=1,
            at=self.clock.now(),
        ))
        assert incident is not None, f"the {kind} signal was suppressed by a cooldown"
        return incident

    def close(self) -> None:
        for buf in self._buffers:
            buf.close()


def _const(value: int) -> DummyClassifier:
    return DummyClassifier(strategy="constant", constant=value).fit(np.zeros((2, 2)), [0, 1])


def build_world(r: redis.Redis, keys: Keys, clock: ManualClock, artifacts: Path) -> Iterator[World]:
    """``SERVICE`` registered with version 1 as champion and version 2 as a candidate."""
    audit = Audit(r, keys, clock)
    registry = Registry(r, keys, ArtifactStore(artifacts), clock=clock, audit=audit)
    registry.register_service(SERVICE, task="classification", schema=SCHEMA, policy=POLICY,
                              owner="grid-team")
    registry.add_version(SERVICE, _const(0), created_by="t", metrics={"holdout_accuracy": 0.8})
    registry.add_version(SERVICE, _const(1), created_by="t", metrics={"holdout_accuracy": 0.9},
                         parent=1)
    registry.promote(SERVICE, 1, actor="t", reason="first")
    ids = itertools.count(1)
    world = World(
        r=r, keys=keys, clock=clock, registry=registry,
        incidents=IncidentStore(r, keys, clock, audit),
        approvals=ApprovalStore(r, keys, clock, audit, new_id=lambda: f"apr-{next(ids)}"),
        writer=TelemetryWriter(r, keys, clock=clock), audit=audit,
        usage=UsageTracker(token_budget=10_000),
    )
    yield world
    world.close()


def spec_only_api() -> FastAPI:
    """The API over a Redis client that never connects: good for its OpenAPI document only."""
    unused = redis.Redis(host="spec-only.invalid", decode_responses=True)
    keys = Keys("spec")
    registry = Registry(unused, keys, ArtifactStore(tempfile.gettempdir()))  # nothing is saved
    writer = TelemetryWriter(unused, keys)
    return create_api(
        registry=registry, incidents=IncidentStore(unused, keys),
        approvals=ApprovalStore(unused, keys), writer=writer,
        gateway=Gateway(registry, TelemetryBuffer(writer, background=False)),
        chat=lambda t, m, u: iter(()), tokens=TOKENS,
    )


def spec_only_gateway_app() -> FastAPI:
    """The gateway app of ``flywheel serve-gateway`` over a Redis client that never connects."""
    unused = redis.Redis(host="spec-only.invalid", decode_responses=True)
    keys = Keys("spec")
    registry = Registry(unused, keys, ArtifactStore(tempfile.gettempdir()))
    buffer = TelemetryBuffer(TelemetryWriter(unused, keys), background=False)
    return create_gateway_app(Gateway(registry, buffer))
