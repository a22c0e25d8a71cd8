"""make_brain and GuardedBrain with scripted models: retries, repair, fallback, budget, accounting.

The provider model is a ScriptedChatModel standing in for ChatLiteLLM (swapped in at the one
factory), so these tests run the guard's logic without any HTTP; test_wire.py covers the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import litellm
import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.messages.tool import invalid_tool_call

from supervisors.brains import (
    NO_INCIDENT,
    RUNBOOK_TAG,
    BrainConfig,
    FallbackReason,
    GuardedBrain,
    UsageTracker,
    litellm_brain,
    make_brain,
)
from tests.conftest import RealModelForbiddenError
from tests.fakes.chat import ScriptedChatModel, ai_calls
from tests.supervisors.toolbox import TOOLS

CONVERSATION = [
    SystemMessage("You are the deployment agent."),
    HumanMessage("Canary of churn fails."),
]
RUN = {"configurable": {"thread_id": "inc-1"}}
ROLLBACK = ("rollback_version", {"service": "churn", "to_version": 3})
HEALTH = ("get_service_health", {"service": "churn"})
_REQUEST = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")


def rate_limited(retry_after: str | None = None) -> litellm.RateLimitError:
    headers = {"retry-after": retry_after} if retry_after else {}
    return litellm.RateLimitError(
        "Rate limit reached",
        llm_provider="openai",
        model="gpt-4o-mini",
        response=httpx.Response(429, headers=headers, request=_REQUEST),
    )


def server_error() -> litellm.InternalServerError:
    return litellm.InternalServerError(
        "boom",
        llm_provider="openai",
        model="gpt-4o-mini",
        response=httpx.Response(500, request=_REQUEST),
    )


def bad_key() -> litellm.AuthenticationError:
    return litellm.AuthenticationError(
        "Incorrect API key provided",
        llm_provider="openai",
        model="gpt-4o-mini",
        response=httpx.Response(401, request=_REQUEST),
    )


@dataclass
class Rig:
    brain: GuardedBrain
    llm: ScriptedChatModel
    runbook: ScriptedChatModel
    usage: UsageTracker
    waits: list[float]


@pytest.fixture()
def rig(monkeypatch: pytest.MonkeyPatch):
    """make_brain with a scripted model in place of ChatLiteLLM and a scripted runbook brain."""

    def build(llm_script, runbook_script=(), *, token_budget: int = 60_000, **config: Any) -> Rig:
        llm = ScriptedChatModel(llm_script, name="llm")
        runbook = ScriptedChatModel(list(runbook_script), name="runbook")
        monkeypatch.setattr(litellm_brain, "build_chat_model", lambda model, cfg: llm)
        usage = UsageTracker(token_budget=token_budget)
        cfg = BrainConfig(model="openai/gpt-4o-mini", retry_backoff=0.5, **config)
        brain = make_brain("deployment", TOOLS, config=cfg, fallback=runbook, usage=usage)
        assert isinstance(brain, GuardedBrain)
        waits: list[float] = []
        brain.sleep = waits.append
        return Rig(brain, llm, runbook, usage, waits)

    return build


def calls(reply: AIMessage) -> list[tuple[str, dict]]:
    return [(c["name"], c["args"]) for c in reply.tool_calls]


def test_a_valid_tool_call_passes_through_and_its_tokens_are_counted(rig):
    r = rig([ai_calls(ROLLBACK, tokens=(120, 30))])

    reply = r.brain.invoke(CONVERSATION, RUN)

    assert calls(reply) == [ROLLBACK]
    assert r.llm.calls[0].tools == ["get_service_health", "rollback_version"]
    spent = r.usage.snapshot("inc-1")
    assert (spent.llm_calls, spent.prompt_tokens, spent.completion_tokens) == (1, 120, 30)
    assert spent.fallbacks == ()
    assert r.usage.remaining("inc-1") == 60_000 - 150


def test_an_unknown_tool_gets_one_repair_request_naming_the_real_tools(rig):
    r = rig([ai_calls(("promote_version", {"service": "churn"})), ai_calls(ROLLBACK)])

    reply = r.brain.invoke(CONVERSATION, RUN)

    assert calls(reply) == [ROLLBACK]
    repair = r.llm.calls[1].messages
    assert repair[:-1] == CONVERSATION
    assert isinstance(repair[-1], HumanMessage)
    assert "there is no tool 'promote_version'" in repair[-1].text
    assert "get_service_health, rollback_version" in repair[-1].text
    assert r.usage.snapshot("inc-1").llm_calls == 2
    assert r.usage.snapshot("inc-1").fallbacks == ()


def test_an_unknown_tool_after_the_repair_goes_to_the_runbook_brain(rig):
    hallucinated = ai_calls(("promote_version", {"service": "churn"}))
    r = rig([hallucinated, hallucinated], [ai_calls(ROLLBACK)])

    reply = r.brain.invoke(CONVERSATION, RUN)

    assert calls(reply) == [ROLLBACK]
    assert r.runbook.calls[0].messages == CONVERSATION  # not the repair request
    [fallback] = r.usage.snapshot("inc-1").fallbacks
    assert (fallback.role, fallback.reason) == ("deployment", FallbackReason.UNKNOWN_TOOL)
    assert "'promote_version'" in fallback.detail


@dataclass(frozen=True)
class BadCall:
    name: str
    reply: AIMessage
    says: str


BAD_CALLS = [
    BadCall(
        "args fail the pydantic schema",
        ai_calls(("rollback_version", {"service": "churn", "to_version": 0})),
        "to_version: Input should be greater than or equal to 1",
    ),
    BadCall(
        "a required argument is missing",
        ai_calls(("rollback_version", {"service": "churn"})),
        "to_version: Field required",
    ),
    BadCall(
        "arguments are not valid JSON",
        AIMessage(
            "",
            invalid_tool_calls=[
                invalid_tool_call(
                    name="rollback_version", args='{"service": "churn", "to_v', id="c1", error=None
                )
            ],
        ),
        "the call to 'rollback_version' has arguments that are not valid JSON",
    ),
]


@pytest.mark.parametrize("case", BAD_CALLS, ids=lambda c: c.name)
def test_invalid_arguments_are_repaired_once_then_fall_back(rig, case: BadCall):
    r = rig([case.reply, case.reply], [ai_calls(ROLLBACK)])

    reply = r.brain.invoke(CONVERSATION, RUN)

    assert case.says in r.llm.calls[1].messages[-1].text
    assert calls(reply) == [ROLLBACK]
    [fallback] = r.usage.snapshot("inc-1").fallbacks
    assert fallback.reason == FallbackReason.INVALID_TOOL_CALL
    assert case.says in fallback.detail


@pytest.mark.parametrize(
    "text",
    [
        'Checking now: {"name": "get_service_health", "arguments": {"service": "churn"}}',
        '```json\n{"type": "function", "function": {"name": "get_service_health", '
        '"parameters": {"service": "churn"}}}\n```',
        '[{"name": "get_service_health", "arguments": "{\\"service\\": \\"churn\\"}"}]',
    ],
    ids=["inline", "fenced-function", "list-with-string-arguments"],
)
def test_a_tool_call_written_as_json_text_is_recovered_without_asking_again(rig, text: str):
    r = rig([AIMessage(text)])

    reply = r.brain.invoke(CONVERSATION, RUN)

    assert calls(reply) == [HEALTH]
    assert reply.text == ""
    assert len(r.llm.calls) == 1


def test_json_text_naming_no_known_tool_stays_text(rig):
    r = rig([AIMessage('The config is {"name": "churn", "arguments": {}} as expected.')])

    reply = r.brain.invoke(CONVERSATION, RUN)

    assert reply.tool_calls == [] and "as expected" in reply.text
    assert r.usage.snapshot("inc-1").fallbacks == ()


def test_transient_errors_are_retried_with_exponential_backoff(rig):
    r = rig([rate_limited(), server_error(), ai_calls(ROLLBACK, tokens=(10, 5))])

    reply = r.brain.invoke(CONVERSATION, RUN)

    assert calls(reply) == [ROLLBACK]
    assert r.waits == [0.5, 1.0]
    spent = r.usage.snapshot("inc-1")
    assert (spent.llm_calls, spent.retries, spent.total_tokens, spent.fallbacks) == (3, 2, 15, ())


def test_retry_after_wins_over_the_backoff_and_is_capped(rig):
    r = rig([rate_limited("7"), rate_limited("120"), ai_calls(ROLLBACK)], max_backoff=30.0)

    r.brain.invoke(CONVERSATION, RUN)

    assert r.waits == [7.0, 30.0]


def test_rate_limited_on_every_attempt_falls_back(rig):
    r = rig([rate_limited()] * 3, [ai_calls(ROLLBACK)], max_retries=2)

    reply = r.brain.invoke(CONVERSATION, RUN)

    assert calls(reply) == [ROLLBACK]
    spent = r.usage.snapshot("inc-1")
    assert (spent.llm_calls, spent.retries) == (3, 2)
    [fallback] = spent.fallbacks
    assert fallback.reason == FallbackReason.RATE_LIMITED
    assert fallback.detail.startswith("RateLimitError: ")


def test_a_permanent_provider_error_is_not_retried(rig):
    r = rig([bad_key()], [ai_calls(ROLLBACK)])

    reply = r.brain.invoke(CONVERSATION, RUN)

    assert calls(reply) == [ROLLBACK]
    assert r.waits == []
    [fallback] = r.usage.snapshot("inc-1").fallbacks
    assert fallback.reason == FallbackReason.PROVIDER_ERROR
    assert "Incorrect API key provided" in fallback.detail


def test_an_exhausted_budget_sends_the_rest_of_the_incident_to_the_runbook_brain(rig):
    r = rig([ai_calls(HEALTH, tokens=(90, 20))], [ai_calls(ROLLBACK)], token_budget=100)

    first = r.brain.invoke(CONVERSATION, RUN)
    second = r.brain.invoke(CONVERSATION, RUN)

    assert (calls(first), calls(second)) == ([HEALTH], [ROLLBACK])
    assert len(r.llm.calls) == 1
    [fallback] = r.usage.snapshot("inc-1").fallbacks
    assert fallback.reason == FallbackReason.BUDGET_EXHAUSTED
    assert fallback.detail == "incident 'inc-1' spent 110 of 100 tokens"


def test_budgets_and_counters_are_per_incident(rig):
    r = rig([ai_calls(HEALTH, tokens=(90, 20)), ai_calls(HEALTH, tokens=(5, 5))], token_budget=100)

    r.brain.invoke(CONVERSATION, RUN)
    r.brain.invoke(CONVERSATION, {"configurable": {"thread_id": "inc-2"}})

    assert r.usage.snapshot("inc-2").total_tokens == 10
    assert r.usage.remaining("inc-2") == 90
    assert r.usage.incidents() == ["inc-1", "inc-2"]


def test_an_explicit_incident_id_wins_and_no_thread_means_no_incident(rig):
    r = rig([ai_calls(HEALTH, tokens=(1, 1)), ai_calls(HEALTH, tokens=(2, 2))])

    r.brain.invoke(CONVERSATION, {"configurable": {"thread_id": "t-9", "incident_id": "inc-9"}})
    r.brain.invoke(CONVERSATION)

    assert r.usage.snapshot("inc-9").total_tokens == 2
    assert r.usage.snapshot(NO_INCIDENT).total_tokens == 4
    assert r.usage.snapshot("t-9").llm_calls == 0


def test_a_programming_error_is_raised_not_hidden_behind_the_runbook_brain(rig):
    r = rig([ValueError("bug in a prompt builder")], [ai_calls(ROLLBACK)])

    with pytest.raises(ValueError, match="bug in a prompt builder"):
        r.brain.invoke(CONVERSATION, RUN)
    assert r.runbook.calls == []


async def test_ainvoke_takes_the_same_path(rig):
    r = rig([rate_limited(), ai_calls(ROLLBACK, tokens=(3, 4))])

    reply = await r.brain.ainvoke(CONVERSATION, RUN)

    assert calls(reply) == [ROLLBACK]
    assert r.usage.snapshot("inc-1").retries == 1


class _Tags(BaseCallbackHandler):
    def __init__(self) -> None:
        self.chat_model_tags: list[list[str]] = []

    def on_chat_model_start(self, serialized, messages, *, tags=None, **kwargs) -> None:
        self.chat_model_tags.append(list(tags or []))


def test_fallback_answers_are_tagged_as_runbook_and_llm_answers_are_not(rig):
    r = rig([bad_key(), ai_calls(HEALTH)], [ai_calls(ROLLBACK)])
    seen = _Tags()

    r.brain.invoke(CONVERSATION, {**RUN, "callbacks": [seen]})
    r.brain.invoke(CONVERSATION, {**RUN, "callbacks": [seen]})

    llm_failed, runbook, llm_ok = seen.chat_model_tags
    assert RUNBOOK_TAG in runbook
    assert RUNBOOK_TAG not in llm_failed and RUNBOOK_TAG not in llm_ok


def test_without_a_model_the_brain_is_the_runbook_brain_and_costs_nothing():
    runbook = ScriptedChatModel([ai_calls(ROLLBACK)])
    usage = UsageTracker(token_budget=100)
    seen = _Tags()

    brain = make_brain("deployment", TOOLS, config=BrainConfig(), fallback=runbook, usage=usage)
    reply = brain.invoke(CONVERSATION, {**RUN, "callbacks": [seen]})

    assert not isinstance(brain, GuardedBrain)
    assert calls(reply) == [ROLLBACK]
    assert [s["function"]["name"] for s in runbook.tool_schemas] == [
        "get_service_health",
        "rollback_version",
    ]
    assert seen.chat_model_tags == [[RUNBOOK_TAG]]
    assert usage.incidents() == []


def test_a_role_override_picks_that_roles_model(monkeypatch: pytest.MonkeyPatch):
    built: list[str] = []
    llm = ScriptedChatModel([ai_calls(HEALTH)])
    monkeypatch.setattr(
        litellm_brain, "build_chat_model", lambda model, cfg: built.append(model) or llm
    )
    config = BrainConfig(role_models={"deployment": "anthropic/claude-3-5-haiku-20241022"})
    runbook, usage = ScriptedChatModel([]), UsageTracker(token_budget=100)

    deployment = make_brain("deployment", TOOLS, config=config, fallback=runbook, usage=usage)
    monitoring = make_brain("monitoring", TOOLS, config=config, fallback=runbook, usage=usage)

    assert built == ["anthropic/claude-3-5-haiku-20241022"]
    assert isinstance(deployment, GuardedBrain) and not isinstance(monitoring, GuardedBrain)


def test_the_guard_forbids_building_a_provider_model_in_tests():
    config = BrainConfig(model="openai/gpt-4o-mini")

    with pytest.raises(
        RealModelForbiddenError, match="tried to build the provider model 'openai/gpt-4o-mini'"
    ):
        make_brain(
            "deployment",
            TOOLS,
            config=config,
            fallback=ScriptedChatModel([]),
            usage=UsageTracker(token_budget=100),
        )
