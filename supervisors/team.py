"""The agent team: four specialists, each exposed to the Supervisor as a tool, and the Supervisor.

Specialists are stateless per call: each call gets ``TASK`` + ``CONTEXT`` and returns a compact
report with the structured results of the tools it ran. Brains come from a factory (litellm with
fallback, or the runbook brain), so the same team runs with or without an LLM.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool, tool

from supervisors.agent_loop import AgentSpec, build_agent
from supervisors.prompting import render
from supervisors.runbook.policies import tool_results
from tools import deploy, learning, monitoring, steward
from tools.deps import ToolDeps
from tools.results import ok

BrainFactory = Callable[[str, Sequence[BaseTool]], Runnable]
"""``(role, tools) -> chat model with the tools bound``."""

SPECIALISTS: dict[str, tuple[str, Any, frozenset[str]]] = {
    "monitoring": ("Read a service's health, metric windows, drift report, version comparison, "
                   "canary analysis or incident history.",
                   monitoring.make_monitoring_tools, monitoring.READ_ONLY),
    "data_steward": ("Validate the recent labelled window, quarantine a bad window, or build a "
                     "training set that leaves quarantined data out.",
                     steward.make_steward_tools, steward.READ_ONLY),
    "continuous_learning": ("Train a candidate on the recent validated window and evaluate it "
                            "against the champion.",
                            learning.make_learning_tools, learning.READ_ONLY),
    "deployment": ("Shadow, canary, promote (needs approval), roll back or retire a version.",
                   deploy.make_deploy_tools, frozenset()),
}


@dataclass(frozen=True)
class StepCaps:
    """Brain calls allowed per agent invocation."""

    supervisor: int = 12
    specialist: int = 6


def _service(config: RunnableConfig) -> str:
    return str((config.get("configurable") or {}).get("service") or "")


def _prompt(deps: ToolDeps, role: str) -> Callable[[RunnableConfig], str]:
    def render_for(config: RunnableConfig) -> str:
        svc = _service(config)
        pol = deps.registry.service(svc).policy if svc else None
        pct = pol.max_canary_pct if pol else 10.0
        gain = pol.min_improvement if pol else 0.01
        variables: dict[str, Any] = {
            "supervisor": {"service": svc or "(none)", "max_canary_pct": pct,
                           "min_improvement": gain},
            "continuous_learning": {"min_improvement": gain},
            "deployment": {"max_canary_pct": pct},
        }.get(role, {})
        return render(role, **variables)

    return render_for


def specialist_tool(role: str, description: str, agent: Any) -> BaseTool:
    """Expose a compiled specialist loop as a tool ``role(task, service=None)``."""

    def run(task: str, config: RunnableConfig, service: str | None = None) -> str:
        conf = config.get("configurable") or {}
        context = {"service": service or conf.get("service", ""),
                   "incident": conf.get("thread_id", "")}
        msg = HumanMessage(content=f"TASK: {task}\nCONTEXT {json.dumps(context)}")
        out = agent.invoke({"messages": [msg], "steps": 0}, config)
        results = [{"tool": n, "args": a, "result": r} for n, a, r in tool_results(out["messages"])]
        return json.dumps({"specialist": role, "report": str(out.get("summary", ""))[:1500],
                           "results": results[-6:]}, default=str)

    run.__doc__ = f"""{description}

        Args:
            task: what to do, in plain words, naming versions like v3 where relevant.
            service: the service (default: the incident's service).
        """
    return tool(role, parse_docstring=True)(run)


def make_specialists(deps: ToolDeps, brains: BrainFactory, caps: StepCaps) -> dict[str, Any]:
    """Compile the four specialist loops."""
    out = {}
    for role, (_, make_tools, read_only) in SPECIALISTS.items():
        tools = make_tools(deps)
        spec = AgentSpec(role=role, prompt=_prompt(deps, role), tools=tools,
                         max_steps=caps.specialist, read_only=read_only)
        out[role] = build_agent(spec, brains(role, tools))
    return out


def make_supervisor(deps: ToolDeps, brains: BrainFactory, caps: StepCaps | None = None) -> Any:
    """Compile the Supervisor loop with the specialists, ``escalate`` and ``finish`` as tools."""
    caps = caps or StepCaps()
    agents = make_specialists(deps, brains, caps)
    tools: list[BaseTool] = [
        specialist_tool(role, SPECIALISTS[role][0], agent) for role, agent in agents.items()
    ]

    @tool(parse_docstring=True)
    def escalate(reason: str) -> str:
        """Hand the incident to a person and stop: use when evidence is unclear or a step failed.

        Args:
            reason: what a person needs to know, with the numbers.
        """
        return ok(escalated=True, reason=reason)

    @tool(parse_docstring=True)
    def finish(summary: str) -> str:
        """End this round: say what was found and done.

        Args:
            summary: one or two lines with the numbers.
        """
        return ok(finished=True, summary=summary)

    tools += [escalate, finish]
    spec = AgentSpec(role="supervisor", prompt=_prompt(deps, "supervisor"), tools=tools,
                     max_steps=caps.supervisor)
    return build_agent(spec, brains("supervisor", tools))
