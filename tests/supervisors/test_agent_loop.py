"""The agent loop's tools node with a scripted brain: every tool call gets its answer."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from supervisors.agent_loop import AgentSpec, build_agent
from tests.fakes.chat import ScriptedChatModel, ai_calls
from tests.supervisors.toolbox import TOOLS


@tool
def finish(summary: str) -> str:
    """End the turn.

    Args:
        summary: what was done.
    """
    return summary


def test_calls_after_a_terminal_call_are_answered_not_run():
    """A model may put ``finish`` first and more calls after it in one reply. The loop ends at
    ``finish``, but each later call still needs a tool message: providers reject a conversation
    with an unanswered tool call, and the supervisor's conversation is sent again after verify."""
    brain = ScriptedChatModel([ai_calls(("finish", {"summary": "done"}),
                                        ("rollback_version", {"service": "churn",
                                                              "to_version": 2}))])
    agent = build_agent(AgentSpec(role="deployment", prompt="p", tools=[*TOOLS, finish]),
                        brain.bind_tools([*TOOLS, finish]))

    out = agent.invoke({"messages": [HumanMessage("go")], "steps": 0})

    assert (out["outcome"], out["summary"]) == ("finish", "done")
    answered = {m.tool_call_id: m for m in out["messages"] if isinstance(m, ToolMessage)}
    asked = [c["id"] for m in out["messages"] if isinstance(m, AIMessage) for c in m.tool_calls]
    assert sorted(answered) == sorted(asked) == ["call_1", "call_2"]
    assert '"status": "error"' in answered["call_2"].content
    assert "not run: finish ended this turn" in answered["call_2"].content
