"""A LangChain ``BaseChatModel`` whose "thinking" is a pure function of the conversation.

It lets the same graph, tools, interrupts and checkpoints run with no LLM at all: each role's
policy reads the structured incident and the tool results already in the messages and returns the
next ``AIMessage`` (tool calls, or a final report). It makes no network calls and counts as zero
LLM calls and zero tokens.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict

Policy = Callable[[Sequence[BaseMessage]], AIMessage]


class RunbookChatModel(BaseChatModel):
    """Deterministic brain for one role."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    role: str
    policy: Policy
    is_runbook: bool = True
    """Marks this model for usage counters: its calls are not LLM calls."""

    @property
    def _llm_type(self) -> str:
        return "flywheel-runbook"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> RunbookChatModel:
        """Tools are named by the policy itself; binding changes nothing."""
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        msg = self.policy(messages)
        # Deterministic ids keep checkpoints identical across reruns of the same conversation.
        digest = hashlib.sha256(
            "\x1e".join(str(m.content) for m in messages).encode()).hexdigest()[:12]
        calls = [dict(c, id=c.get("id") or f"rb-{self.role}-{digest}-{i}")
                 for i, c in enumerate(msg.tool_calls)]
        msg = AIMessage(content=msg.content, tool_calls=calls,
                        response_metadata={"model_name": "runbook"},
                        usage_metadata={"input_tokens": 0, "output_tokens": 0, "total_tokens": 0})
        return ChatResult(generations=[ChatGeneration(message=msg)])


def runbook_brain(role: str) -> RunbookChatModel:
    """The runbook brain of ``role`` (supervisor, a specialist, or chat)."""
    from supervisors.runbook import chat_policy, policies

    policy = chat_policy.chat if role == "chat" else policies.POLICIES[role]
    return RunbookChatModel(role=role, policy=policy)
