"""Composition root of the whole system: fleet, monitor, operations, agents, driver.

Everything that runs flywheel (the loop, chat, the HTTP API, Slack, the demo, evals) builds one
``System`` here from settings and a Redis connection, so they all wire the same parts the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from apps.runtime import Fleet, open_fleet
from apps.settings import Settings
from apps.training import build_trainer
from fleet.actions import ActionLedger, Limits
from fleet.approvals import ApprovalStore
from fleet.clock import Clock
from fleet.incidents import IncidentStore
from fleet.monitor import Monitor, MonitorConfig
from fleet.monitor.service import MonitorService
from fleet.operations import Operations
from fleet.operations.approved import ApprovedRequests
from fleet.store import raw_twin
from fleet.trainer import Trainer
from graphs.assembly import GraphOptions, build_incident_runner
from graphs.checkpointer import RedisSaver
from graphs.driver import Driver, Notify
from graphs.runner import IncidentRunner
from supervisors.brains import BrainConfig, UsageTracker, make_brain
from supervisors.runbook import runbook_brain
from supervisors.team import BrainFactory
from tools.deps import ToolDeps


@dataclass
class System:
    """Every long-lived part of a flywheel process."""

    fleet: Fleet
    trainer: Trainer
    ops: Operations
    approvals: ApprovalStore
    incidents: IncidentStore
    monitor: Monitor
    monitor_service: MonitorService
    deps: ToolDeps
    usage: UsageTracker
    brains: BrainFactory
    runner: IncidentRunner
    driver: Driver
    approved: ApprovedRequests | None = None
    """Runs approved chat-made requests once (the loop sweeps it every pass)."""
    notifier: Any = None
    """Keeps Slack in step (``apps.slack.notifier``), when this process owns Slack."""

    def close(self) -> None:
        """Stop the notifier and worker processes."""
        if self.notifier is not None:
            self.notifier.stop()
        self.trainer.close()


def brain_config(settings: Settings) -> BrainConfig:
    """The agents' model settings (``FLYWHEEL_MODEL`` unset = runbook brain only)."""
    return BrainConfig(model=settings.model, timeout=settings.llm_timeout_s,
                       max_retries=settings.llm_max_retries,
                       token_budget=settings.llm_token_budget)


def brain_factory(config: BrainConfig, usage: UsageTracker) -> BrainFactory:
    """``(role, tools) -> brain``: litellm with runbook fallback, or the runbook brain alone."""

    def make(role: str, tools: Any) -> Any:
        return make_brain(role, tools, config=config, fallback=runbook_brain(role), usage=usage)

    return make


def build_system(
    fleet: Fleet,
    *,
    brain: BrainConfig | None = None,
    options: GraphOptions | None = None,
    trainer: Trainer | None = None,
    monitor_options: dict[str, Any] | None = None,
    notify: Notify | None = None,
) -> System:
    """Wire a system over an open fleet (``notify``: told when an incident closes or fails)."""
    r, keys, clock, audit = fleet.r, fleet.keys, fleet.clock, fleet.audit
    trainer = trainer or Trainer(fleet.registry)
    approvals = ApprovalStore(r, keys, clock, audit)
    ops = Operations(fleet.registry, approvals, ActionLedger(r, keys, clock, audit=audit),
                     Limits(r, keys, clock), trainer, fleet.reader, audit=audit)
    incidents = IncidentStore(r, keys, clock, audit)
    config = MonitorConfig(**(monitor_options or {}))
    monitor = Monitor(fleet.registry, fleet.reader, incidents, clock, config=config)
    service = MonitorService(fleet.registry, fleet.reader, incidents, monitor.store, ops,
                             clock, config=config)
    deps = ToolDeps(registry=fleet.registry, monitor=service, ops=ops, approvals=approvals,
                    incidents=incidents, audit=audit)
    brain = brain or BrainConfig()
    usage = UsageTracker(token_budget=brain.token_budget)
    brains = brain_factory(brain, usage)
    saver = RedisSaver(raw_client(r), prefix=keys.checkpoint_prefix())
    runner = build_incident_runner(deps, brains=brains, checkpointer=saver, clock=clock,
                                   options=options, notify=notify)
    driver = Driver(runner, incidents=incidents, approvals=approvals, clock=clock, notify=notify)
    return System(fleet, trainer, ops, approvals, incidents, monitor, service, deps, usage,
                  brains, runner, driver, ApprovedRequests(ops))


def raw_client(r: redis.Redis) -> redis.Redis:
    """A non-decoding client on the same server or cluster (the checkpointer stores bytes)."""
    return raw_twin(r)  # type: ignore[no-any-return]


@contextlib.contextmanager
def open_system(settings: Settings, *, clock: Clock | None = None, home: Path | None = None,
                audit_context: Mapping[str, str] | None = None,
                notify: bool = False) -> Iterator[System]:
    """Open the fleet (embedded Redis if no ``REDIS_URL``) and build the system over it.

    ``audit_context``: fields every audit entry of this process carries (the CLI's ``os_user``).
    ``notify``: this process owns Slack (``flywheel run``, ``flywheel serve``): when Slack is
    configured, a notifier thread posts approval prompts and incident threads (failed and
    escalated incidents included: the driver's and the graph's ``notify`` hook stays unset).
    """
    with open_fleet(settings, clock=clock, home=home, audit_context=audit_context) as fleet:
        system = build_system(fleet, brain=brain_config(settings),
                              trainer=build_trainer(settings, fleet.registry))
        if notify:
            system.notifier = _slack_notifier(settings, system)
        try:
            yield system
        finally:
            system.close()


def _slack_notifier(settings: Settings, system: System) -> Any:
    """Start the Slack notifier when Slack is configured; None otherwise."""
    if settings.slack_bot_token is None:
        return None
    try:
        from apps.slack.notifier import notifier_from_settings
    except ImportError:
        return None  # a build without Slack; serve says so when it mounts the app
    notifier = notifier_from_settings(settings, system)
    if notifier is not None:
        notifier.start()
    return notifier
