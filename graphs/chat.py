"""The chat graph: one agent loop over the chat tools, its threads persisted in Redis.

Each conversation is a thread (``chat-…``); a turn appends the user's message and runs the loop
until the brain replies without tool calls. With the runbook brain the chat follows a documented
command grammar; with an LLM it takes free text. Writes go through the same guarded operations.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, HumanMessage

from supervisors.agent_loop import AgentSpec, build_agent
from supervisors.prompting import render
from supervisors.team import BrainFactory
from tools.chat import READ_ONLY, make_chat_tools
from tools.deps import ToolDeps


def build_chat_graph(deps: ToolDeps, brains: BrainFactory, *, checkpointer: Any,
                     max_steps: int = 6) -> Any:
    """Compile the chat agent with a checkpointer (thread id = conversation id)."""
    tools = make_chat_tools(deps)

    def prompt(_: Any) -> str:
        return render("chat", services=", ".join(deps.registry.services()) or "(none)")

    spec = AgentSpec(role="chat", prompt=prompt, tools=tools, max_steps=max_steps,
                     read_only=READ_ONLY)
    return build_agent(spec, brains("chat", tools), checkpointer=checkpointer)


def chat_turn(graph: Any, thread_id: str, text: str, *, user: str) -> str:
    """Run one turn of a conversation and return the assistant's reply."""
    # ``said`` is what the person typed this turn: the one text a decision may come from.
    cfg = {"configurable": {"thread_id": thread_id, "user": user, "said": text},
           "recursion_limit": 50}
    out = graph.invoke({"messages": [HumanMessage(content=text)], "steps": 0, "outcome": "",
                        "summary": ""}, cfg)
    for m in reversed(out["messages"]):
        if isinstance(m, AIMessage) and not m.tool_calls:
            return str(m.content)
    return str(out.get("summary", ""))
