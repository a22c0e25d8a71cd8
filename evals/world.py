"""A whole flywheel in simulated time: fleet, gateway, replayer, monitor, agents, a simulated human.

Used by the end-to-end tests, the eval scenarios and the demo. Each replayed batch advances the
manual clock; every ``tick_every`` rows the monitor ticks and the driver advances incidents; the
simulated human answers approval requests as the scenario says.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from apps.runtime import Fleet, build_fleet
from apps.serving import single_threaded_models
from apps.system import System, build_system
from fleet.approvals import ApprovalRequest
from fleet.clock import ManualClock
from fleet.datasets import DriftStream
from fleet.gateway import Gateway
from fleet.gateway.target import DirectTarget
from fleet.incidents.acknowledge import acknowledge
from fleet.incidents.lifecycle import Status
from fleet.replay.fault_store import RedisFaultSink
from fleet.replay.faults import FaultSchedule
from fleet.replay.replayer import BatchReport, Replayer, ReplayStats
from fleet.schema import FeatureSchema, Policy
from fleet.telemetry import TelemetryBuffer
from fleet.trainer import Trainer
from graphs.assembly import GraphOptions
from supervisors.brains import BrainConfig

Human = Callable[[ApprovalRequest], tuple[bool, str] | None]
"""Answers an approval request: ``(approve, reason)``, or None to leave it pending."""


def approve_all(req: ApprovalRequest) -> tuple[bool, str]:
    """A human who approves everything."""
    return True, "looks good"


def reject_all(req: ApprovalRequest) -> tuple[bool, str]:
    """A human who rejects everything, with a reason."""
    return False, "not during the trading freeze"


def never_answers(req: ApprovalRequest) -> None:
    """A human who never answers (requests expire)."""
    return None


@dataclass
class World:
    """A running simulated production."""

    system: System
    gateway: Gateway
    clock: ManualClock
    service: str
    stream: DriftStream
    human: Human = approve_all
    human_name: str = "oncall"
    tick_every: int = 500
    events: list[dict[str, Any]] = field(default_factory=list)
    target: Any = None
    """Where replayed traffic goes (default: the gateway in process; the demo uses HTTP)."""
    ack_escalations_after_s: float | None = None
    """The person closes an escalated incident this long after it escalated, handing the
    service back to the agents (None: escalations stay open, as nobody reads them)."""
    _escalated: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def fleet(self) -> Fleet:
        """The fleet the world runs on."""
        return self.system.fleet

    def run(self, start: int, stop: int, *, faults: FaultSchedule | None = None,
            batch: int = 100, rows_per_s: float = 20.0, seed: int = 0,
            on_batch: Callable[[BatchReport], None] | None = None) -> ReplayStats:
        """Replay rows ``[start, stop)``; tick, advance incidents and answer approvals."""
        target = self.target or DirectTarget(self.gateway)
        replayer = Replayer(target, clock=self.clock, rate=rows_per_s,
                            batch_size=batch, seed=seed, faults=faults,
                            fault_sink=RedisFaultSink(self.fleet.r, self.fleet.keys))
        since = {"rows": 0}

        def each(rep: BatchReport) -> None:
            since["rows"] += len(rep.batch.rows)
            if since["rows"] >= self.tick_every:
                since["rows"] = 0
                self.step()
            if on_batch is not None:
                on_batch(rep)

        stats = replayer.run(self.service, self.stream, start, stop, on_batch=each)
        self.step()
        return stats

    def step(self) -> None:
        """One monitor tick, one driver pass, and the human's answers (then another pass)."""
        self.gateway.flush()
        tick = self.system.monitor.tick(self.clock.now())
        for s in getattr(tick, "signals", []) or []:
            self.events.append({"t": self.clock.now(), "event": "signal", "kind": s.kind})
        rep = self.system.driver.step()
        if self._answer():
            rep = self.system.driver.step()
        for inc, out in rep.outcomes.items():
            self.events.append({"t": self.clock.now(), "event": out.state, "incident": inc})
        self._acknowledge()

    def _acknowledge(self) -> None:
        """Close escalations that have waited ``ack_escalations_after_s`` (an on-call ack)."""
        if self.ack_escalations_after_s is None:
            return
        now = self.clock.now()
        for inc in self.system.incidents.open_incidents(self.service):
            if inc.status != Status.ESCALATED:
                continue
            since = self._escalated.setdefault(inc.id, now)
            if now - since >= self.ack_escalations_after_s:
                # Without accepting the error level: the agents may act again. Accepting it
                # (measured over 3 draws of each SEA stream) saved retrains on SEA abrupt
                # (17 -> 13) but hid later, smaller drifts (fewer promotions than drifts).
                acknowledge(self.system.incidents, self.fleet.registry, inc.id,
                            user=self.human_name)

    def _answer(self) -> bool:
        answered = False
        for req in self.system.approvals.pending():
            verdict = self.human(req)
            if verdict is None:
                continue
            ok, reason = verdict
            self.system.approvals.decide(req.id, approve=ok, by=self.human_name, reason=reason,
                                         digest=req.action_digest)
            answered = True
        return answered

    def close(self) -> None:
        """Stop the trainer's worker process."""
        self.system.close()


def make_world(
    r: redis.Redis,
    url: str,
    *,
    prefix: str,
    artifacts: Path,
    stream: DriftStream,
    service: str = "svc",
    train_rows: int = 2_000,
    policy: Policy | None = None,
    human: Human = approve_all,
    brain: BrainConfig | None = None,
    options: GraphOptions | None = None,
    executor: Executor | None = None,
    seed: int = 0,
    model: dict[str, Any] | None = None,
) -> World:
    """Register ``service`` trained on the first ``train_rows`` of ``stream`` and wire it all.

    ``model`` is v1's family and estimator parameters (default: the task's default family);
    retrains keep the champion's.
    """
    single_threaded_models()
    clock = ManualClock(1_700_000_000.0)
    fleet = build_fleet(r, url, prefix=prefix, artifacts=artifacts, clock=clock)
    trainer = Trainer(fleet.registry, executor=executor) if executor is not None else None
    system = build_system(fleet, brain=brain, options=options or GraphOptions(
        canary_deadline_s=3_600.0, wait_s=30.0), trainer=trainer)
    schema = FeatureSchema.numeric(list(stream.feature_names))
    fleet.registry.register_service(service, task="classification", schema=schema,
                                    policy=policy or Policy(), actor="eval")
    res = system.trainer.train_from_dataset(service, stream, 0, train_rows, params=model,
                                            seed=seed, created_by="eval")
    fleet.registry.promote(service, res.version.number, actor="eval", reason="initial model")
    gateway = Gateway(fleet.registry, TelemetryBuffer(fleet.writer, background=False),
                      clock=clock, refresh_interval=0.0, sleep_on_latency_fault=False,
                      measure_latency=False)
    return World(system=system, gateway=gateway, clock=clock, service=service, stream=stream,
                 human=human)


def attach_world(
    r: redis.Redis,
    url: str,
    *,
    prefix: str,
    artifacts: Path,
    stream: DriftStream,
    now: float,
    service: str = "svc",
    human: Human = approve_all,
    brain: BrainConfig | None = None,
    options: GraphOptions | None = None,
    executor: Executor | None = None,
) -> World:
    """Rebuild a world over what another process left in Redis, as a restart after a crash would.

    Nothing is registered, trained or promoted: services, versions, telemetry, incidents,
    approvals and the graphs' checkpoints are read back from Redis (and models from
    ``artifacts``), and the driver resumes every open incident from its checkpoint. ``now`` is
    the simulated time to go on from (the clock of the process that ran before).
    """
    single_threaded_models()
    clock = ManualClock(now)
    fleet = build_fleet(r, url, prefix=prefix, artifacts=artifacts, clock=clock)
    trainer = Trainer(fleet.registry, executor=executor) if executor is not None else None
    system = build_system(fleet, brain=brain, options=options or GraphOptions(
        canary_deadline_s=3_600.0, wait_s=30.0), trainer=trainer)  # as make_world's
    fleet.registry.service(service)  # fails loudly if there is nothing to attach to
    gateway = Gateway(fleet.registry, TelemetryBuffer(fleet.writer, background=False),
                      clock=clock, refresh_interval=0.0, sleep_on_latency_fault=False,
                      measure_latency=False)
    return World(system=system, gateway=gateway, clock=clock, service=service, stream=stream,
                 human=human)
