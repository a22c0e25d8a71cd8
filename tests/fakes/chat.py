"""ScriptedChatModel: the one fake chat model of the suite; replies come from a script."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.tool import tool_call
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field, PrivateAttr

Reply = AIMessage | BaseException
"""A scripted turn: the reply to give, or an exception to raise (e.g. ``litellm.Timeout``)."""
ScriptFn = Callable[[list[BaseMessage]], AIMessage]
"""A script written as code: sees every input, returns the reply (or raises)."""


class ScriptExhaustedError(AssertionError):
    """The model was asked more often than its script has replies."""


@dataclass(frozen=True)
class ScriptedCall:
    """What one call to the model received."""

    messages: list[BaseMessage]
    """The conversation as sent."""
    tools: list[str]
    """Names of the tools bound for this call (empty if none)."""


class ScriptedChatModel(BaseChatModel):
    """A chat model whose replies are a list, or a function of the conversation.

    - ``ScriptedChatModel([ai_calls(("get_health", {"service": "churn"})), AIMessage("done")])``
      replies in order and raises ``ScriptExhaustedError`` when asked once more than scripted;
      an exception in the list is raised on its turn instead of replying.
    - ``ScriptedChatModel(lambda messages: ...)`` answers each call by calling the function.

    Every input is recorded in ``calls``; ``bind_tools`` records the schemas in
    ``tool_schemas`` and returns the model bound to them, like a real provider model.
    """

    # Any, not Sequence[Reply] | ScriptFn: pydantic would rebuild (copy) the scripted messages and
    # choke on exceptions; __init__ takes the typed argument.
    script: Any
    calls: list[ScriptedCall] = Field(default_factory=list)
    tool_schemas: list[dict[str, Any]] = Field(default_factory=list)
    _cursor: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, script: Sequence[Reply] | ScriptFn, **kwargs: Any) -> None:
        super().__init__(script=script if callable(script) else list(script), **kwargs)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def remaining(self) -> int | None:
        """Replies not yet given (``None`` for a function script)."""
        return None if callable(self.script) else len(self.script) - self._cursor

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        schemas = [convert_to_openai_tool(t) for t in tools]
        self.tool_schemas = schemas
        return self.bind(tools=schemas, tool_choice=tool_choice, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        names = [t["function"]["name"] for t in kwargs.get("tools") or []]
        with self._lock:
            self.calls.append(ScriptedCall(list(messages), names))
            n = len(self.calls)
            reply = self._next(messages, n)
        if isinstance(reply, BaseException):
            raise reply
        if not isinstance(reply, AIMessage):
            raise TypeError(f"script reply #{n} is {type(reply).__name__}, not AIMessage")
        # A copy, so that whatever the caller does to the reply leaves the script intact.
        return ChatResult(generations=[ChatGeneration(message=reply.model_copy(deep=True))])

    def _next(self, messages: list[BaseMessage], n: int) -> Reply:
        if callable(self.script):
            return self.script(messages)
        if self._cursor >= len(self.script):
            last = repr(messages[-1])[:300] if messages else "(no messages)"
            raise ScriptExhaustedError(
                f"ScriptedChatModel {self.name or '(unnamed)'!r} ran out of replies: the script "
                f"has {len(self.script)} and this is call {n}. Last input message: {last}. "
                "Add a reply to the script, or find out why the agent asked again."
            )
        self._cursor += 1
        return self.script[self._cursor - 1]


def ai_calls(
    *calls: tuple[str, dict[str, Any]],
    content: str = "",
    tokens: tuple[int, int] | None = None,
) -> AIMessage:
    """An ``AIMessage`` making the given tool calls (ids ``call_1``, ``call_2``, ...).

    Args:
        *calls: ``(tool name, args)`` pairs.
        content: Text alongside the calls.
        tokens: ``(input, output)`` tokens to report as ``usage_metadata``, as a provider would.
    """
    usage = (
        {"input_tokens": tokens[0], "output_tokens": tokens[1], "total_tokens": sum(tokens)}
        if tokens
        else None
    )
    return AIMessage(
        content=content,
        tool_calls=[tool_call(name=n, args=a, id=f"call_{i}") for i, (n, a) in enumerate(calls, 1)],
        usage_metadata=usage,
    )
