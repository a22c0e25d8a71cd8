"""Checks an LLM's tool calls against the role's tools and words the one repair request.

Also recovers tool calls that a model wrote as JSON text instead of structured calls.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, ToolCall
from langchain_core.messages.tool import tool_call
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ValidationError

from supervisors.brains.usage import FallbackReason

_MAX_SCAN = 20_000
"""Longest reply text searched for a JSON tool call; longer replies are prose, not a call."""
_ARG_KEYS = ("arguments", "args", "parameters", "input")
"""Keys local models use for the arguments when they write a tool call as text."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a reply's tool calls."""

    reason: FallbackReason
    """``UNKNOWN_TOOL`` or ``INVALID_TOOL_CALL``."""
    text: str
    """What was wrong, written for the model (it is sent back in the repair request)."""


class ToolCallChecker:
    """Validates tool calls against the tools one role was given.

    Args:
        tools: The role's tools, in any form ``bind_tools`` accepts (``BaseTool``, pydantic
            class, OpenAI-format dict, function).
    """

    def __init__(self, tools: Sequence[Any]) -> None:
        self._schemas: dict[str, Any] = {}
        for tool in tools:
            if isinstance(tool, BaseTool):
                # tool_call_schema leaves out injected arguments, which the model never sends.
                self._schemas[tool.name] = tool.tool_call_schema
            elif isinstance(tool, type) and issubclass(tool, BaseModel):
                self._schemas[convert_to_openai_tool(tool)["function"]["name"]] = tool
            else:
                fn = convert_to_openai_tool(tool)["function"]
                self._schemas[fn["name"]] = fn.get("parameters") or {}

    @property
    def names(self) -> list[str]:
        """Names of the tools the model may call."""
        return list(self._schemas)

    def recover(self, message: AIMessage) -> AIMessage:
        """Turn a tool call the model wrote as JSON text into a structured one.

        Models without native tool calling (and some that have it) answer with
        ``{"name": ..., "arguments": {...}}`` in the text. Only calls naming one of this role's
        tools are taken; anything else leaves the message as it was.

        Args:
            message: The model's reply.

        Returns:
            The reply with ``tool_calls`` filled in and the text cleared, or ``message`` itself.
        """
        if message.tool_calls or message.invalid_tool_calls:
            return message
        text = message.text
        if "{" not in text or len(text) > _MAX_SCAN:
            return message
        calls = [c for c in _json_calls(text) if c["name"] in self._schemas]
        if not calls:
            return message
        return message.model_copy(update={"content": "", "tool_calls": calls})

    def problems(self, message: AIMessage) -> list[Problem]:
        """Everything wrong with the reply's tool calls; empty when it may be executed.

        Args:
            message: The model's reply (after ``recover``).
        """
        found: list[Problem] = []
        for bad in message.invalid_tool_calls:
            found.append(
                Problem(
                    FallbackReason.INVALID_TOOL_CALL,
                    f"the call to {bad.get('name')!r} has arguments that are not valid JSON: "
                    f"{_clip(bad.get('args'))}",
                )
            )
        for call in message.tool_calls:
            name = call["name"]
            if name not in self._schemas:
                found.append(
                    Problem(
                        FallbackReason.UNKNOWN_TOOL,
                        f"there is no tool {name!r}; the tools you can call are: "
                        f"{', '.join(self._schemas)}",
                    )
                )
                continue
            error = _schema_error(self._schemas[name], call["args"])
            if error:
                found.append(
                    Problem(
                        FallbackReason.INVALID_TOOL_CALL,
                        f"the arguments of {name!r} {_clip(call['args'])} are invalid: {error}",
                    )
                )
        return found

    def repair_request(self, problems: Sequence[Problem]) -> HumanMessage:
        """The message appended to the conversation to ask the model to fix its reply.

        Args:
            problems: What ``problems`` found.
        """
        lines = "\n".join(f"- {p.text}" for p in problems)
        return HumanMessage(
            "Your last reply could not be executed:\n"
            f"{lines}\n"
            "Reply again with tool calls that use only these tools, with arguments matching "
            f"their schemas: {', '.join(self._schemas)}."
        )


def _schema_error(schema: Any, args: dict[str, Any]) -> str | None:
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            schema.model_validate(args)
        except ValidationError as exc:
            return "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
        return None
    # A JSON-schema dict: check what can be checked without a validator dependency.
    missing = [k for k in schema.get("required", []) if k not in args]
    if missing:
        return f"missing required argument(s) {', '.join(map(repr, missing))}"
    if schema.get("additionalProperties") is False:
        extra = sorted(set(args) - set(schema.get("properties", {})))
        if extra:
            return f"unexpected argument(s) {', '.join(map(repr, extra))}"
    return None


def _json_calls(text: str) -> list[ToolCall]:
    """The first JSON value in ``text`` that reads as one or more tool calls."""
    decoder = json.JSONDecoder()
    for start, ch in enumerate(text):
        if ch not in "{[":
            continue
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        calls = list(_as_calls(value))
        if calls:
            return calls
    return []


def _as_calls(value: Any) -> Iterator[ToolCall]:
    if isinstance(value, list):
        for item in value:
            yield from _as_calls(item)
        return
    if not isinstance(value, dict):
        return
    if isinstance(value.get("tool_calls"), list):
        yield from _as_calls(value["tool_calls"])
        return
    if isinstance(value.get("function"), dict):
        yield from _as_calls(value["function"])
        return
    name = value.get("name")
    args = next((value[k] for k in _ARG_KEYS if k in value), {})
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return
    if isinstance(name, str) and isinstance(args, dict):
        yield tool_call(name=name, args=args, id=f"call_{uuid.uuid4().hex[:24]}")


def _clip(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "…"
