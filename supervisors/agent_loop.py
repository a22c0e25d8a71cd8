"""One agent as a small LangGraph loop: brain → tools → brain …, with a step cap and guards.

The tools node (ours, not ``ToolNode``) turns every recoverable problem into a tool message the
model can act on: an unknown tool, arguments that fail the schema, a ``ToolException``. A repeated
read-only call with the same arguments in one turn (since the last human message) is answered
from the first result instead of being run again. ``GraphInterrupt`` (an approval) is never
caught: it must reach the outermost graph.
Terminal tools (``finish``, ``escalate``) end the loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool, ToolException
from langgraph.errors import GraphBubbleUp
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from pydantic import ValidationError

TERMINAL = frozenset({"finish", "escalate"})
"""Tools whose call ends the agent's loop."""
MAX_RESULT_CHARS = 4_000
"""Tool results longer than this are cut (tools summarise; this is the last line of defence)."""


@dataclass(frozen=True)
class AgentSpec:
    """What one agent is: its role, system prompt, tools and limits."""

    role: str
    """``supervisor``, ``monitoring``, ``data_steward``, ``continuous_learning``, ``deployment``."""
    prompt: str | Callable[[RunnableConfig], str]
    """System prompt, or a function rendering it for the run (e.g. per service)."""
    tools: Sequence[BaseTool]
    max_steps: int = 8
    """Brain calls allowed per invocation; the loop stops with a note when reached."""
    read_only: frozenset[str] = field(default_factory=frozenset)
    """Tools that change nothing, so a repeat with the same arguments can be answered from cache."""


class AgentState(TypedDict, total=False):
    """The loop's state."""

    messages: Annotated[list[AnyMessage], add_messages]
    steps: int
    outcome: str
    """``finish`` or ``escalate`` when a terminal tool was called; ``step_cap`` when cut off."""
    summary: str


def build_agent(spec: AgentSpec, brain: Runnable, *, checkpointer: Any = None) -> Any:
    """Compile the loop for ``spec`` driven by ``brain`` (a chat model with the tools bound).

    Specialists and the supervisor are compiled without a checkpointer: called inside a
    checkpointed graph they are checkpointed as its subgraphs, so an interrupt inside a tool
    resumes at that tool, not at the first step. Only an outermost loop (chat) gets one.
    """
    tools = {t.name: t for t in spec.tools}

    def agent(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        steps = state.get("steps", 0)
        if steps >= spec.max_steps:
            note = f"{spec.role}: step cap of {spec.max_steps} reached; stopping"
            return {"outcome": "step_cap", "summary": note,
                    "messages": [AIMessage(content=note)]}
        prompt = spec.prompt if isinstance(spec.prompt, str) else spec.prompt(config)
        msgs: list[BaseMessage] = [SystemMessage(content=prompt), *state["messages"]]
        reply = brain.invoke(msgs, config)
        if not isinstance(reply, AIMessage):
            reply = AIMessage(content=str(getattr(reply, "content", reply)))
        update: dict[str, Any] = {"messages": [reply], "steps": steps + 1}
        if not reply.tool_calls:
            update["summary"] = _text(reply.content)
        return update

    def run_tools(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        last = state["messages"][-1]
        assert isinstance(last, AIMessage)
        seen = _previous_results(_this_turn(state["messages"][:-1]), spec.read_only)
        out: list[ToolMessage] = []
        update: dict[str, Any] = {}
        for call in last.tool_calls:
            if "outcome" in update:
                # Not run, but answered: providers reject a conversation with a tool call
                # that has no tool message, and this conversation may be sent again.
                content = _error(f"not run: {update['outcome']} ended this turn")
            else:
                content = _call_tool(tools, call, seen, config)
            out.append(
                ToolMessage(content=content, tool_call_id=call["id"] or "", name=call["name"])
            )
            if "outcome" not in update and call["name"] in TERMINAL and call["name"] in tools:
                update["outcome"] = call["name"]
                args = call["args"] or {}
                update["summary"] = str(next(iter(args.values()), ""))
        update["messages"] = out
        return update

    def route(state: AgentState) -> str:
        last = state["messages"][-1]
        if state.get("outcome") or not isinstance(last, AIMessage) or not last.tool_calls:
            return END
        return "tools"

    g = StateGraph(AgentState)
    g.add_node("agent", agent)
    g.add_node("tools", run_tools)
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", route, ["tools", END])
    g.add_conditional_edges("tools", lambda s: END if s.get("outcome") else "agent",
                            ["agent", END])
    return g.compile(name=spec.role, checkpointer=checkpointer)


def _call_tool(
    tools: dict[str, BaseTool], call: Any, seen: dict[str, str], config: RunnableConfig
) -> str:
    name, args = call["name"], call.get("args") or {}
    tool = tools.get(name)
    if tool is None:
        return _error(f"unknown tool {name!r}; available tools: {sorted(tools)}")
    key = _key(name, args)
    if key in seen:
        return _error(
            f"{name} was already called with these arguments; its result has not changed: "
            f"{seen[key][:1500]}",
            status="duplicate_call",
        )
    try:
        # Invoked with the whole tool call so tools can see their call id (InjectedToolCallId).
        result = tool.invoke({"type": "tool_call", "name": name, "args": args,
                              "id": call.get("id") or ""}, config)
        if isinstance(result, ToolMessage):
            result = result.content
    except GraphBubbleUp:
        raise  # interrupts (approvals, waits) must reach the outermost graph
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'args'}: {e['msg']}" for e in exc.errors()
        )
        return _error(f"invalid arguments for {name}: {problems}. Args given: {json.dumps(args)}")
    except ToolException as exc:
        return _error(str(exc))
    text = result if isinstance(result, str) else json.dumps(result, default=str)
    return text[:MAX_RESULT_CHARS]


def _this_turn(messages: Sequence[BaseMessage]) -> Sequence[BaseMessage]:
    """The messages since the last human one (the current turn).

    A new turn (a chat message, a verify round) may find the fleet changed, so reads from earlier
    turns are no answer to it.
    """
    last = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=0)
    return messages[last:]


def _previous_results(messages: Sequence[BaseMessage], read_only: frozenset[str]) -> dict[str, str]:
    """``{call key: result}`` of earlier successful read-only calls in this conversation."""
    calls: dict[str, str] = {}
    for m in messages:
        if isinstance(m, AIMessage):
            for c in m.tool_calls:
                if c["name"] in read_only:
                    calls[c["id"] or ""] = _key(c["name"], c.get("args") or {})
    out: dict[str, str] = {}
    for m in messages:
        if isinstance(m, ToolMessage) and m.tool_call_id in calls:
            text = _text(m.content)
            if '"status": "error"' not in text and '"status":"error"' not in text:
                out[calls[m.tool_call_id]] = text
    return out


def _key(name: str, args: dict[str, Any]) -> str:
    return name + json.dumps(args, sort_keys=True, default=str)


def _error(message: str, *, status: str = "error") -> str:
    return json.dumps({"status": status, "error": message})


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)
