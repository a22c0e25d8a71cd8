"""LLM-call benchmark: calls and tokens per incident, and per 1,000 quiet ticks.

No provider is reachable here, so the LLM is a stand-in that plays the runbook through the real
LLM path (``make_brain`` → ``GuardedBrain``: usage, budget, repair) and reports tokens the way a
provider would (about 4 characters a token of what it was actually sent). The numbers therefore
count what the *architecture* spends — calls per incident, zero per quiet tick — not what a given
model's answers cost. The named alternative is an agent polled on every tick (one supervisor turn
per tick), measured in the same run with the same stand-in.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from evals.world import make_world
from fleet.datasets import rotating_hyperplane, stationary
from fleet.embedded_redis import EmbeddedRedis
from supervisors.brains import BrainConfig, litellm_brain
from supervisors.runbook.brain import RunbookChatModel
from supervisors.runbook.chat_policy import chat
from supervisors.runbook.policies import POLICIES


class StandInLLM(RunbookChatModel):
    """Plays the runbook but is counted as an LLM, with provider-like token usage."""

    is_runbook: bool = False

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> Any:
        out = super()._generate(messages, stop, run_manager, **kwargs)
        msg = out.generations[0].message
        prompt = sum(len(str(m.content)) for m in messages) // 4 + 4 * len(messages)
        completion = (len(str(msg.content)) + len(json.dumps(msg.tool_calls))) // 4 + 5
        msg.usage_metadata = {"input_tokens": prompt, "output_tokens": completion,
                              "total_tokens": prompt + completion}
        return out


def _stand_in(model: str, config: BrainConfig) -> StandInLLM:
    role = model.split("/", 1)[1]
    return StandInLLM(role=role, policy=chat if role == "chat" else POLICIES[role])


def _world(r: redis.Redis, url: str, prefix: str, home: Path, stream: Any) -> Any:
    roles = ("supervisor", "monitoring", "data_steward", "continuous_learning", "deployment")
    brain = BrainConfig(model="standin/supervisor",
                        role_models={r: f"standin/{r}" for r in roles})
    return make_world(r, url, prefix=prefix, artifacts=home / prefix, stream=stream, brain=brain)


def run(quiet_ticks: int = 1_000) -> list[dict[str, Any]]:
    """Measure calls per incident and per ``quiet_ticks`` quiet ticks, ours and polled."""
    real = litellm_brain.build_chat_model
    litellm_brain.build_chat_model = _stand_in  # the one seam where a provider model is built
    try:
        with EmbeddedRedis(appendonly=False) as server, tempfile.TemporaryDirectory() as tmp:
            r = redis.Redis.from_url(server.url, decode_responses=True)
            home = Path(tmp)
            drift = _world(r, server.url, "drift", home, rotating_hyperplane(
                12_000, drifts=[4_000], width=1, seed=3))
            drift.run(2_000, 12_000)
            usage = drift.system.usage
            per = [usage.snapshot(i) for i in usage.incidents() if i != "-"]
            drift.close()
            quiet = _world(r, server.url, "quiet", home, stationary(4_000, seed=1))
            quiet.run(2_000, 4_000)
            before = _total(quiet.system.usage)
            for _ in range(quiet_ticks):
                quiet.clock.advance(5.0)
                quiet.system.monitor.tick(quiet.clock.now())
                quiet.system.driver.step()
            ours_quiet = _total(quiet.system.usage) - before
            polled = _polled(quiet, quiet_ticks)
            quiet.close()
    finally:
        litellm_brain.build_chat_model = real
    calls = sum(u.llm_calls for u in per) / max(len(per), 1)
    tokens = sum(u.total_tokens for u in per) / max(len(per), 1)
    return [
        {"measure": f"LLM calls per incident (mean of {len(per)})", "flywheel": calls,
         "polled agent": float("nan"), "ratio": float("nan")},
        {"measure": "tokens per incident (stand-in estimate)", "flywheel": tokens,
         "polled agent": float("nan"), "ratio": float("nan")},
        {"measure": f"LLM calls per {quiet_ticks:,} quiet ticks", "flywheel": ours_quiet,
         "polled agent": polled, "ratio": polled / max(ours_quiet, 1)},
    ]


def _total(usage: Any) -> int:
    return sum(usage.snapshot(i).llm_calls for i in usage.incidents())


def _polled(world: Any, ticks: int) -> int:
    """The alternative: ask an LLM supervisor once per tick whether anything needs doing."""
    model = _stand_in("standin/supervisor", BrainConfig())
    calls = 0
    for _ in range(ticks):
        health = world.system.monitor_service.health(world.service)
        msgs: Sequence[BaseMessage] = [HumanMessage(
            content="INCIDENT " + json.dumps({"service": world.service, "kind": "poll",
                                              "health": health.get("health")}))]
        calls += isinstance(model.invoke(list(msgs)), AIMessage)
    return calls
