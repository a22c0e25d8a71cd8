"""LLM faults in full incident flows: timeouts, 429s, 5xx and malformed tool calls.

DESIGN §7: "LLM faults (timeouts, 429, malformed or hallucinated tool calls): retry, repair, then
runbook brain." Every role's provider model is the suite's ``ScriptedChatModel`` wired in at the
one factory (``litellm_brain.build_chat_model``), so each brain is the real ``GuardedBrain`` built
by the real ``build_system``. When healthy the scripted model answers like a competent LLM (the
runbook's policy for its role); on the calls a fixed fault plan names it fails instead.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import litellm
import pytest
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.tool import invalid_tool_call, tool_call

from supervisors.brains import ROLES, BrainConfig, FallbackReason, litellm_brain
from supervisors.runbook.policies import POLICIES
from tests.drills import worker
from tests.drills.harness import (
    Case,
    answer_pending,
    check_invariants,
    seed_and_open,
    serve_canaries,
)
from tests.fakes.chat import ScriptedChatModel

_REQUEST = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")

PLAN: dict[str, list[str]] = {
    # decision 1: a timeout, then the retry answers; 2: 429 on all three attempts → runbook;
    # 3: an unknown tool, repaired; 4: the call written as JSON text, recovered; 5: bad JSON
    # arguments twice → runbook.
    "supervisor": ["timeout", "ok", "429", "429", "429", "unknown_tool", "ok", "json_text",
                   "bad_json", "bad_json"],
    # 1: timeouts on all three attempts → runbook; 2: arguments failing the schema, repaired;
    # 3: an unknown tool twice → runbook.
    "deployment": ["timeout", "timeout", "timeout", "bad_schema", "ok", "unknown_tool",
                   "unknown_tool"],
    "data_steward": ["500", "ok"],
    "continuous_learning": ["bad_schema", "bad_schema"],
    "monitoring": ["429", "ok"],
}
EXPECTED_FALLBACKS = Counter({
    ("supervisor", FallbackReason.RATE_LIMITED): 1,
    ("supervisor", FallbackReason.INVALID_TOOL_CALL): 1,
    ("deployment", FallbackReason.TIMEOUT): 1,
    ("deployment", FallbackReason.UNKNOWN_TOOL): 1,
    ("continuous_learning", FallbackReason.INVALID_TOOL_CALL): 1,
})
RETRIES = 1 + 2 + 2 + 1 + 1
"""Attempts repeated after a transient fault: supervisor 1 + 2, deployment 2, steward 1,
monitoring 1."""


class FaultyLLMs:
    """One scripted provider model per role: the role's runbook policy, failing on plan."""

    def __init__(self, plan: dict[str, list[str]]):
        self.plan = plan
        self.faults: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self.models = {role: ScriptedChatModel(self._script(role), name=role) for role in ROLES}

    def config(self, monkeypatch: pytest.MonkeyPatch) -> BrainConfig:
        """Put the models where ``ChatLiteLLM`` would be; the brain config that selects them."""
        monkeypatch.setattr(litellm_brain, "build_chat_model",
                            lambda model, cfg: self.models[model.removeprefix("scripted/")])
        return BrainConfig(model="scripted/supervisor",
                           role_models={r: f"scripted/{r}" for r in ROLES},
                           retry_backoff=0.0, max_retries=2)

    def _script(self, role: str) -> Callable[[list[BaseMessage]], AIMessage]:
        plan = iter(self.plan.get(role, []))

        def answer(messages: list[BaseMessage]) -> AIMessage:
            fault = next(plan, "ok")
            good = self._competent(role, messages)
            if fault != "ok":
                self.faults[fault] += 1
            return _faulty(fault, good, role)

        return answer

    def _competent(self, role: str, messages: list[BaseMessage]) -> AIMessage:
        reply = POLICIES[role](messages)
        calls = [tool_call(name=c["name"], args=c["args"], id=f"call_{next(self._ids)}")
                 for c in reply.tool_calls]
        return AIMessage(content=reply.content, tool_calls=calls,
                         usage_metadata={"input_tokens": 100, "output_tokens": 20,
                                         "total_tokens": 120})


def _faulty(fault: str, good: AIMessage, role: str) -> AIMessage:
    """The reply (or the exception) of one faulty call; ``good`` is what a healthy call says."""
    if fault == "ok":
        return good
    if fault == "timeout":
        raise litellm.Timeout("Request timed out after 30s", model="gpt-4o-mini",
                              llm_provider="openai")
    if fault in ("429", "500"):
        cls = litellm.RateLimitError if fault == "429" else litellm.InternalServerError
        raise cls("provider says no", llm_provider="openai", model="gpt-4o-mini",
                  response=httpx.Response(int(fault), request=_REQUEST))
    name = good.tool_calls[0]["name"] if good.tool_calls else "finish"
    if fault == "unknown_tool":
        return AIMessage("", tool_calls=[tool_call(name="approve_all_pending", args={},
                                                   id="call_bad")])
    if fault == "bad_json":
        return AIMessage("", invalid_tool_calls=[invalid_tool_call(
            name=name, args='{"task": "roll back', id="call_bad", error=None)])
    if fault == "bad_schema":
        known = {"deployment": "rollback", "continuous_learning": "train_candidate"}
        return AIMessage("", tool_calls=[tool_call(
            name=good.tool_calls[0]["name"] if good.tool_calls else known.get(role, name),
            args={"service": ["not", "a", "name"]}, id="call_bad")])
    if fault == "json_text":
        if not good.tool_calls:
            return good
        c = good.tool_calls[0]
        return AIMessage(json.dumps({"name": c["name"], "arguments": c["args"]}),
                         usage_metadata=good.usage_metadata)
    raise AssertionError(f"unknown fault {fault!r}")


def test_llm_faults_are_retried_repaired_or_answered_by_the_runbook_and_every_incident_ends(
        r, keys, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every fault kind in the plan lands in a real incident flow (all five roles, approvals and
    a canary wait included); the incidents must end as the runbook alone would end them, and the
    usage tracker must say which calls fell back and why."""
    llms = FaultyLLMs(PLAN)
    system = worker.attach(redis_url, keys.prefix, tmp_path / "artifacts",
                           brain=llms.config(monkeypatch))
    fleet = system.fleet
    cases = [Case("pr", "retrain_promote"), Case("dc", "drop_canary"),
             Case("wd", "watch_drift")]
    ids = seed_and_open(fleet, system.incidents, cases)
    served: set[tuple[str, int]] = set()

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rep = system.driver.step()
        assert not rep.errors, rep.errors
        answer_pending(system.approvals, {"pr": "approve"})
        serve_canaries(fleet, ["pr"], served)
        if all(system.runner.status(i).state == "done" for i in ids):
            break
        time.sleep(0.05)

    inv = check_invariants(fleet, system.approvals, system.incidents, system.runner, ids)
    assert inv.statuses == {"resolved": 3}, [system.incidents.get(i).resolution for i in ids]
    assert (fleet.registry.service("pr").champion, fleet.registry.service("dc").challenger) == (
        2, None)
    assert llms.faults == Counter({"timeout": 4, "429": 4, "500": 1, "unknown_tool": 3,
                                   "bad_json": 2, "bad_schema": 3, "json_text": 1})
    usage = [system.usage.snapshot(i) for i in ids]
    fallbacks = Counter((f.role, f.reason) for u in usage for f in u.fallbacks)
    assert fallbacks == EXPECTED_FALLBACKS
    details = {f.reason: f.detail for u in usage for f in u.fallbacks}
    assert "Timeout" in details[FallbackReason.TIMEOUT]
    assert "RateLimitError" in details[FallbackReason.RATE_LIMITED]
    assert "approve_all_pending" in details[FallbackReason.UNKNOWN_TOOL]
    assert sum(u.retries for u in usage) == RETRIES
    assert all(u.llm_calls > 0 for u in usage)
    print(f"\nllm fault drill: {sum(llms.faults.values())} faults {dict(llms.faults)}; "
          f"{sum(u.llm_calls for u in usage)} LLM calls, {RETRIES} retries, "
          f"{sum(fallbacks.values())} runbook fallbacks {dict(fallbacks)}")
