"""Assembles the incident system: team of agents + incident graph + checkpointer + runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleet.clock import Clock
from graphs.incident import IncidentGraphDeps, build_incident_graph
from graphs.runner import IncidentRunner
from supervisors.team import BrainFactory, StepCaps, make_supervisor
from tools.deps import ToolDeps


@dataclass(frozen=True)
class GraphOptions:
    """Tunables of the incident graph."""

    max_rounds: int = 3
    canary_deadline_s: float = 3_600.0
    wait_s: float = 60.0
    caps: StepCaps = field(default_factory=StepCaps)


def build_incident_runner(
    deps: ToolDeps,
    *,
    brains: BrainFactory,
    checkpointer: Any,
    clock: Clock,
    options: GraphOptions | None = None,
    notify: Any = None,
) -> IncidentRunner:
    """Compile the supervisor team and the incident graph, and return a runner over them."""
    opts = options or GraphOptions()
    supervisor = make_supervisor(deps, brains, opts.caps)
    graph = build_incident_graph(
        IncidentGraphDeps(
            incidents=deps.incidents, registry=deps.registry, analyst=deps.monitor,
            reader=deps.ops.reader, clock=clock,
            max_rounds=opts.max_rounds, canary_deadline_s=opts.canary_deadline_s,
            wait_s=opts.wait_s, notify=notify, limits=deps.ops.limits,
        ),
        supervisor,
        checkpointer=checkpointer,
    )
    return IncidentRunner(graph, incidents=deps.incidents, approvals=deps.approvals)
