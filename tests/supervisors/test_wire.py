"""The real litellm wire path (ChatLiteLLM -> litellm -> httpx) replayed from hand-written vcrpy
cassettes, and a real timeout against a loopback server that never answers."""

from __future__ import annotations

import logging
import time

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import SecretStr

from supervisors.brains import BrainConfig, FallbackReason, UsageTracker, make_brain
from tests.fakes.chat import ScriptedChatModel, ai_calls
from tests.supervisors.conftest import Cassettes, SilentServer
from tests.supervisors.toolbox import TOOLS

OPENAI = "openai/gpt-4o-mini"
ANTHROPIC = "anthropic/claude-3-5-haiku-20241022"
INCIDENT = "inc-0007"
RUN = {"configurable": {"thread_id": INCIDENT}}
SYSTEM = SystemMessage("You are the deployment agent of an ML fleet. Act only through tools.")
CHECK = HumanMessage("Check the health of service 'churn'.")
ROLL_BACK = HumanMessage(
    "The canary of 'churn' (version 4) has a 9% error rate against 0.4% for the champion. "
    "Roll 'churn' back to version 3 now."
)


def _runbook_must_not_answer(usage: UsageTracker) -> ScriptedChatModel:
    """A runbook brain that fails the test with the reason the LLM call fell back (for a
    cassette that no longer matches, that reason names the vcrpy matcher that failed)."""

    def fail(messages):
        pytest.fail(f"the runbook brain answered: {usage.snapshot(INCIDENT).fallbacks}")

    return ScriptedChatModel(fail)


def _brain(model: str, usage: UsageTracker, runbook: ScriptedChatModel, **config):
    config = BrainConfig(model=model, retry_backoff=0.0, **config)
    return make_brain("deployment", TOOLS, config=config, fallback=runbook, usage=usage)


def _calls(reply) -> list[tuple[str, dict]]:
    return [(c["name"], c["args"]) for c in reply.tool_calls]


def test_openai_tool_call_is_parsed_and_its_tokens_counted(cassette: Cassettes):
    """An OpenAI-format tool call (arguments as a JSON string) reaches the agent as a structured
    call, with max_tokens and both tools sent, and the reported tokens land on the incident."""
    usage = UsageTracker(token_budget=60_000)
    runbook = _runbook_must_not_answer(usage)
    brain = _brain(OPENAI, usage, runbook, api_key=cassette.key("OPENAI_API_KEY"))

    with cassette.use("openai_tool_call.yaml", key_env="OPENAI_API_KEY") as cass:
        reply = brain.invoke([SYSTEM, CHECK], RUN)

    assert _calls(reply) == [("get_service_health", {"service": "churn"})]
    assert cass.play_count == 1
    spent = usage.snapshot(INCIDENT)
    assert (spent.llm_calls, spent.retries, spent.fallbacks) == (1, 0, ())
    if not cassette.recording("OPENAI_API_KEY"):
        assert (spent.prompt_tokens, spent.completion_tokens) == (96, 18)


def test_anthropic_tool_use_block_is_parsed_and_its_tokens_counted(cassette: Cassettes):
    """An Anthropic tool_use block (input as a JSON object) next to text becomes the same
    structured call; input_tokens/output_tokens are counted as prompt/completion tokens."""
    usage = UsageTracker(token_budget=60_000)
    runbook = _runbook_must_not_answer(usage)
    brain = _brain(ANTHROPIC, usage, runbook, api_key=cassette.key("ANTHROPIC_API_KEY"))

    with cassette.use("anthropic_tool_use.yaml", key_env="ANTHROPIC_API_KEY") as cass:
        reply = brain.invoke([SYSTEM, ROLL_BACK], RUN)

    assert _calls(reply) == [("rollback_version", {"service": "churn", "to_version": 3})]
    assert cass.play_count == 1
    spent = usage.snapshot(INCIDENT)
    assert (spent.llm_calls, spent.fallbacks) == (1, ())
    if not cassette.recording("ANTHROPIC_API_KEY"):
        assert (spent.prompt_tokens, spent.completion_tokens) == (412, 61)
        assert "rolling back" in reply.text


def test_rate_limit_is_retried_after_the_wait_the_provider_asked_for(cassette: Cassettes, caplog):
    """A 429 is retried (both recorded responses play) and the call succeeds without the runbook
    brain; the wait comes from Retry-After (1 s, capped here by max_backoff to 0.2 s), not from
    the zero backoff configured."""
    usage = UsageTracker(token_budget=60_000)
    runbook = _runbook_must_not_answer(usage)
    brain = _brain(OPENAI, usage, runbook, api_key=cassette.key("OPENAI_API_KEY"), max_backoff=0.2)

    caplog.set_level(logging.INFO, logger="supervisors.brains.fallback")
    with cassette.use(
        "openai_429_then_ok.yaml", key_env="OPENAI_API_KEY", recordable=False
    ) as cass:
        reply = brain.invoke([SYSTEM, ROLL_BACK], RUN)

    assert _calls(reply) == [("rollback_version", {"service": "churn", "to_version": 3})]
    assert (cass.play_count, cass.all_played) == (2, True)
    spent = usage.snapshot(INCIDENT)
    assert (spent.llm_calls, spent.retries, spent.fallbacks) == (2, 1, ())
    assert (spent.prompt_tokens, spent.completion_tokens) == (101, 24)
    assert "RateLimitError" in caplog.text and "retry 1 in 0.20s" in caplog.text


def test_timeout_then_runbook_brain_answers(silent_server: SilentServer):
    """A provider that accepts the connection and never answers times out on every attempt;
    the runbook brain answers that call and the incident records why."""
    usage = UsageTracker(token_budget=60_000)
    runbook = ScriptedChatModel(
        [ai_calls(("rollback_version", {"service": "churn", "to_version": 3}))]
    )
    brain = _brain(
        OPENAI,
        usage,
        runbook,
        api_key=SecretStr("sk-test"),
        api_base=silent_server.url,
        timeout=0.5,
        max_retries=1,
    )

    started = time.monotonic()
    reply = brain.invoke([SYSTEM, ROLL_BACK], RUN)
    elapsed = time.monotonic() - started

    assert _calls(reply) == [("rollback_version", {"service": "churn", "to_version": 3})]
    assert len(silent_server.accepted) == 2  # the first attempt and one retry
    assert 1.0 <= elapsed < 5.0
    spent = usage.snapshot(INCIDENT)
    assert (spent.llm_calls, spent.retries, spent.total_tokens) == (2, 1, 0)
    [fallback] = spent.fallbacks
    assert (fallback.role, fallback.reason) == ("deployment", FallbackReason.TIMEOUT)
    assert fallback.detail.startswith("Timeout:")
    assert runbook.calls[0].tools == ["get_service_health", "rollback_version"]
