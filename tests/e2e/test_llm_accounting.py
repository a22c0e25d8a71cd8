"""LLM accounting: quiet monitor ticks cost no LLM call, even with an LLM configured for every role.

The per-incident numbers of the scripted runs are recorded by those tests (``record_usage``) into
``out/llm_usage.json``; this module adds the control: a stationary stream, many ticks, no incident,
so no agent runs and no model is asked anything.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, BaseMessage

from fleet.datasets import stationary
from supervisors.brains import ROLES


def _never(messages: list[BaseMessage]) -> AIMessage:
    raise AssertionError("an LLM was asked something while no incident was open")


def test_ticks_without_incidents_make_no_llm_calls(world_factory, scripted_llms, usage_log,
                                                   record_property):
    """Monitoring runs without the agents: only an incident starts a graph, so a quiet fleet
    spends nothing on LLMs however often it ticks."""
    for role in ROLES:
        scripted_llms.add(role, _never)
    world = world_factory(stream=stationary(8_000, seed=1), brain=scripted_llms.config())
    ticks: list[Any] = []
    tick = world.system.monitor.tick
    world.system.monitor.tick = lambda *a, **kw: ticks.append(tick(*a, **kw)) or ticks[-1]

    world.run(2_000, 8_000)

    assert len(ticks) >= 12 and sum(t.events for t in ticks) > 0, "the monitor did not work"
    assert world.system.incidents.recent(20) == []
    assert world.system.usage.incidents() == []
    assert scripted_llms.calls() == 0
    entry = {"ticks": len(ticks), "incidents": 0, "llm_calls": 0, "tokens": 0}
    usage_log.runs["ticks_without_incidents"] = entry
    record_property("llm_usage", entry)
