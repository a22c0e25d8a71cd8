"""BrainConfig, UsageTracker and the ScriptedChatModel fake the whole suite relies on."""

from __future__ import annotations

import dataclasses

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from pydantic import SecretStr

from fleet.errors import InvalidInput
from supervisors.brains import BrainConfig, FallbackReason, Usage, UsageTracker
from tests.fakes.chat import ScriptedChatModel, ScriptExhaustedError, ai_calls
from tests.supervisors.toolbox import TOOLS

# --- BrainConfig -------------------------------------------------------------------------------


def test_config_defaults_are_safe_for_production():
    c = BrainConfig()
    assert (c.model, c.max_tokens, c.temperature, c.timeout, c.max_retries, c.token_budget) == (
        None,
        1024,
        0.0,
        30.0,
        2,
        60_000,
    )
    assert "sk-live" not in repr(BrainConfig(api_key=SecretStr("sk-live")))


def test_role_overrides_win_and_are_immutable():
    overrides = {"deployment": "anthropic/claude-3-5-haiku-20241022"}
    c = BrainConfig(model="openai/gpt-4o-mini", role_models=overrides)
    overrides["deployment"] = "openai/gpt-4o"

    assert c.model_for("deployment") == "anthropic/claude-3-5-haiku-20241022"
    assert c.model_for("supervisor") == "openai/gpt-4o-mini"
    with pytest.raises(TypeError):
        c.role_models["monitoring"] = "x"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.model = "x"  # type: ignore[misc]


def test_a_misspelt_role_is_refused_with_the_allowed_roles():
    with pytest.raises(
        InvalidInput, match=r"unknown role\(s\) 'deploy'; allowed roles: supervisor"
    ):
        BrainConfig(role_models={"deploy": "openai/gpt-4o-mini"})


@pytest.mark.parametrize("field", ["max_tokens", "token_budget"])
def test_limits_must_be_positive(field: str):
    with pytest.raises(InvalidInput, match=f"{field} must be positive, got 0"):
        BrainConfig(**{field: 0})


# --- UsageTracker ------------------------------------------------------------------------------


def test_an_unknown_incident_has_spent_nothing():
    usage = UsageTracker(token_budget=500)
    assert usage.snapshot("inc-x") == Usage("inc-x")
    assert usage.remaining("inc-x") == 500
    assert usage.incidents() == []


def test_calls_retries_tokens_and_fallbacks_add_up_and_forget_returns_the_total():
    usage = UsageTracker(token_budget=500)
    usage.record_call("inc-1", prompt_tokens=100, completion_tokens=20)
    usage.record_call("inc-1", retry=True)
    usage.record_fallback(
        "inc-1", role="supervisor", reason=FallbackReason.TIMEOUT, detail="x" * 1900
    )

    final = usage.forget("inc-1")

    assert (final.llm_calls, final.retries, final.total_tokens) == (2, 1, 120)
    assert final.fallbacks[0].reason == FallbackReason.TIMEOUT
    assert len(final.fallbacks[0].detail) == 1000
    assert usage.snapshot("inc-1") == Usage("inc-1")


# --- ScriptedChatModel -------------------------------------------------------------------------


def test_scripted_replies_come_in_order_and_every_input_is_recorded():
    model = ScriptedChatModel(
        [ai_calls(("get_service_health", {"service": "churn"})), AIMessage("done")]
    )
    bound = model.bind_tools(TOOLS)

    first = bound.invoke([HumanMessage("how is churn?")])
    second = model.invoke("and now?")

    assert first.tool_calls[0]["name"] == "get_service_health"
    assert second.text == "done"
    assert [c.tools for c in model.calls] == [["get_service_health", "rollback_version"], []]
    assert model.calls[1].messages == [HumanMessage("and now?")]
    assert model.remaining == 0


def test_running_out_of_script_says_which_call_and_what_it_was_asked():
    model = ScriptedChatModel([AIMessage("only one")], name="supervisor")
    model.invoke("first")

    with pytest.raises(
        ScriptExhaustedError,
        match=r"ScriptedChatModel 'supervisor' ran out of replies: the script has 1 and this is "
        r"call 2\. Last input message: HumanMessage\(content='second'",
    ):
        model.invoke("second")


def test_an_exception_in_the_script_is_raised_on_its_turn():
    model = ScriptedChatModel([TimeoutError("provider silent"), AIMessage("back")])

    with pytest.raises(TimeoutError, match="provider silent"):
        model.invoke("one")
    assert model.invoke("two").text == "back"


def test_a_function_script_sees_the_conversation():
    model = ScriptedChatModel(lambda messages: AIMessage(f"{len(messages)} messages"))

    assert model.invoke([HumanMessage("a"), HumanMessage("b")]).text == "2 messages"
    assert model.remaining is None


def test_a_reply_is_a_copy_so_callers_cannot_edit_the_script():
    script = [ai_calls(("get_service_health", {"service": "churn"}))]
    model = ScriptedChatModel(script)

    reply = model.invoke("x")
    reply.tool_calls[0]["args"]["service"] = "fraud"

    assert script[0].tool_calls[0]["args"] == {"service": "churn"}
