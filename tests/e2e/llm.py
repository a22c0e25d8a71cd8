"""Scripted LLMs for the end-to-end flows: policies written as code, wired in as provider models.

A :class:`ScriptedRole` is a policy (a function of the conversation, like an LLM) behind the suite's
one :class:`~tests.fakes.chat.ScriptedChatModel`. :class:`ScriptedLLMs` puts such models where
``ChatLiteLLM`` would be: ``BrainConfig.role_models`` names ``scripted/<role>`` and the one factory
(``litellm_brain.build_chat_model``) returns the scripted model, so each role's brain is the real
``GuardedBrain`` (repair, runbook fallback, usage and budget) over it, built by the real
``build_system``. Every reply reports tokens like a provider does (about 4 characters a token).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.messages.tool import tool_call

from supervisors.brains import BrainConfig, Usage, litellm_brain
from supervisors.runbook.policies import tagged, tool_results
from tests.fakes.chat import ScriptedChatModel

Policy = Callable[[list[BaseMessage]], AIMessage]
"""What a scripted LLM answers, given the conversation it was sent."""
REPAIR_PREFIX = "Your last reply could not be executed"
"""How ``GuardedBrain``'s repair request starts (see ``ToolCallChecker.repair_request``)."""

_ids = itertools.count(1)
_ids_lock = threading.Lock()


def reply(*calls: tuple[str, dict[str, Any]], content: str = "", call_id: str = "") -> AIMessage:
    """An AIMessage with tool calls, each with a fresh provider-style id, or ``call_id``."""
    with _ids_lock:
        ids = [call_id or f"call_{next(_ids):05d}" for _ in calls]
    return AIMessage(content=content, tool_calls=[
        tool_call(name=n, args=a, id=i) for (n, a), i in zip(calls, ids, strict=True)])


def say(text: str) -> AIMessage:
    """A final text answer (no tool calls)."""
    return AIMessage(content=text)


def text(m: BaseMessage) -> str:
    """A message's content as text."""
    return m.content if isinstance(m.content, str) else json.dumps(m.content)


def tokens(messages: Sequence[BaseMessage], answer: AIMessage) -> tuple[int, int]:
    """(prompt, completion) tokens a provider would report: ~4 characters a token."""
    prompt = sum(len(text(m)) for m in messages) // 4 + 4 * len(messages)
    completion = (len(text(answer)) + len(json.dumps(answer.tool_calls))) // 4 + 5
    return prompt, completion


# --- reading the conversation the way the scripted "LLMs" do -------------------------------------


def is_repair(messages: Sequence[BaseMessage]) -> bool:
    """Whether the last message is ``GuardedBrain``'s request to fix an unusable reply."""
    return bool(messages) and isinstance(messages[-1], HumanMessage) and text(
        messages[-1]).startswith(REPAIR_PREFIX)


def incident(messages: Sequence[BaseMessage]) -> dict[str, Any]:
    """The structured incident the supervisor was given."""
    return tagged(messages, "INCIDENT")[0][1]


def round_state(messages: Sequence[BaseMessage]) -> tuple[dict[str, Any] | None, list]:
    """The latest ``VERIFY`` payload (None in the first round) and the tool results since."""
    verifies = tagged(messages, "VERIFY")
    if not verifies:
        return None, tool_results(messages)
    idx, ver = verifies[-1]
    return ver, tool_results(messages, idx)


def inner(results: Sequence[tuple[str, dict, dict]], tool: str) -> dict[str, Any] | None:
    """The last result of ``tool`` as a specialist reported it (``results`` in its report)."""
    for _, _, res in reversed(results):
        for item in reversed(res.get("results", [])):
            if item.get("tool") == tool:
                return item.get("result") or {}
    return None


def task(messages: Sequence[BaseMessage]) -> str:
    """A specialist's assignment (the ``TASK:`` line)."""
    for m in messages:
        if isinstance(m, HumanMessage) and text(m).startswith("TASK:"):
            return text(m).partition("\nCONTEXT ")[0].removeprefix("TASK:").strip()
    return ""


def own_results(messages: Sequence[BaseMessage]) -> list[tuple[str, dict]]:
    """``(tool, parsed result)`` of the tools this specialist already ran, in order."""
    names = {c["id"]: c["name"] for m in messages if isinstance(m, AIMessage)
             for c in m.tool_calls}
    out = []
    for m in messages:
        if isinstance(m, ToolMessage):
            try:
                res = json.loads(text(m))
            except json.JSONDecodeError:
                res = {"status": "error", "error": text(m)}
            out.append((names.get(m.tool_call_id, m.name or ""), res))
    return out


# --- wiring ------------------------------------------------------------------------------------


class ScriptedRole:
    """One role's scripted LLM: the policy, the model standing in for ChatLiteLLM, its replies."""

    def __init__(self, role: str, policy: Policy):
        self.role = role
        self.policy = policy
        self.replies: list[AIMessage] = []
        self.model = ScriptedChatModel(self._answer, name=f"scripted {role}")

    def _answer(self, messages: list[BaseMessage]) -> AIMessage:
        answer = self.policy(messages)
        p, c = tokens(messages, answer)
        answer = answer.model_copy(update={"usage_metadata": {
            "input_tokens": p, "output_tokens": c, "total_tokens": p + c}})
        self.replies.append(answer)
        return answer

    @property
    def tool_calls(self) -> list[tuple[str, dict[str, Any]]]:
        """Every tool call this model answered with, in order (unusable ones included)."""
        return [(c["name"], c["args"]) for m in self.replies for c in m.tool_calls]

    def spent(self) -> tuple[int, int, int]:
        """(calls, prompt tokens, completion tokens) this model reported."""
        u = [m.usage_metadata or {} for m in self.replies]
        return (len(self.replies), sum(x.get("input_tokens", 0) for x in u),
                sum(x.get("output_tokens", 0) for x in u))


@dataclass
class ScriptedLLMs:
    """Scripted models per role, swapped in at the one provider-model factory."""

    monkeypatch: pytest.MonkeyPatch
    roles: dict[str, ScriptedRole] = field(default_factory=dict)

    def add(self, role: str, policy: Policy) -> ScriptedRole:
        """Give ``role`` a scripted LLM answering with ``policy``."""
        self.roles[role] = ScriptedRole(role, policy)

        def build(model: str, config: BrainConfig) -> ScriptedChatModel:
            return self.roles[model.removeprefix("scripted/")].model

        self.monkeypatch.setattr(litellm_brain, "build_chat_model", build)
        return self.roles[role]

    def config(self, **kw: Any) -> BrainConfig:
        """A brain config routing the scripted roles to their models (others: runbook brain)."""
        return BrainConfig(role_models={r: f"scripted/{r}" for r in self.roles},
                           retry_backoff=0.0, **kw)

    def calls(self) -> int:
        """Calls made to all scripted models."""
        return sum(len(r.model.calls) for r in self.roles.values())


@dataclass
class UsageLog:
    """LLM calls and tokens per incident of the scripted runs, written to ``out/llm_usage.json``."""

    path: Path
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, run: str, usage: Sequence[Usage], **extra: Any) -> dict[str, Any]:
        """Keep one run's per-incident usage; returns what was recorded."""
        entry = {"incidents": {u.incident_id: {
            "llm_calls": u.llm_calls, "retries": u.retries, "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens,
            "fallbacks": [f"{f.role}:{f.reason.value}" for f in u.fallbacks]} for u in usage},
            **extra}
        self.runs[run] = entry
        return entry

    def write(self) -> None:
        """Merge this session's runs into the file (runs of other sessions are kept)."""
        if not self.runs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        old: dict[str, Any] = {}
        if self.path.exists():
            try:
                old = json.loads(self.path.read_text())
            except json.JSONDecodeError:
                old = {}
        old.update(self.runs)
        self.path.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
