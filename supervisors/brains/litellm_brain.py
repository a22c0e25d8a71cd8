"""Builds each role's brain: guarded ``ChatLiteLLM`` when a model is set, else the runbook brain.

This module is the one place a real provider model is constructed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import BaseModel

from supervisors.brains.config import BrainConfig
from supervisors.brains.fallback import GuardedBrain
from supervisors.brains.repair import ToolCallChecker
from supervisors.brains.usage import RUNBOOK_TAG, UsageTracker

ToolLike = BaseTool | type[BaseModel] | dict[str, Any] | Callable[..., Any]
"""Anything ``bind_tools`` accepts."""


def build_chat_model(model: str, config: BrainConfig) -> BaseChatModel:
    """Construct the provider chat model for one litellm model string.

    Retries are left to ``GuardedBrain``, so every layer below makes exactly one attempt:
    ChatLiteLLM's own retry waits a fixed 4-10 s, ignores ``Retry-After`` and skips 500/502/503,
    and the openai SDK retries only on the OpenAI route.

    Args:
        model: litellm model string, e.g. ``openai/gpt-4o-mini``.
        config: Limits, endpoint and key.

    Returns:
        A ``ChatLiteLLM`` (imported here so that merely importing this package never loads
        litellm).
    """
    from langchain_litellm import ChatLiteLLM

    return ChatLiteLLM(
        model=model,
        api_base=config.api_base,
        api_key=config.api_key.get_secret_value() if config.api_key else None,
        max_tokens=config.max_tokens,
        temperature=config.temperature,
        request_timeout=config.timeout,
        max_retries=1,  # ChatLiteLLM counts attempts: 1 = no retry of its own
        model_kwargs={
            "num_retries": 0,  # litellm's retry wrapper and the openai SDK's retries
            # Some models refuse a parameter we always send (temperature on reasoning models);
            # dropping it beats failing every call.
            "drop_params": True,
        },
    )


def make_brain(
    role: str,
    tools: Sequence[ToolLike],
    *,
    config: BrainConfig,
    fallback: BaseChatModel,
    usage: UsageTracker,
) -> Runnable[LanguageModelInput, AIMessage]:
    """The chat model one agent role thinks with, bound to that role's tools.

    Args:
        role: Agent role (see ``config.ROLES``); selects a per-role model override.
        tools: The role's tools.
        config: Model choice, limits, retries and budget.
        fallback: The runbook brain (any ``BaseChatModel`` with ``bind_tools``); it answers when
            no model is configured and whenever the LLM fails.
        usage: Counts LLM calls, tokens and fallbacks per incident and holds the token budget.

    Returns:
        A runnable from a message list to an ``AIMessage`` with tool calls. Without a model for
        this role it is just the runbook brain bound to the tools (tagged ``RUNBOOK_TAG``);
        otherwise a ``GuardedBrain`` over ``ChatLiteLLM``.
    """
    runbook = fallback.bind_tools(tools).with_config(
        run_name=f"{role} runbook brain", tags=[RUNBOOK_TAG]
    )
    model = config.model_for(role)
    if model is None:
        return runbook
    return GuardedBrain(
        role=role,
        llm=build_chat_model(model, config).bind_tools(tools),
        runbook=runbook,
        checker=ToolCallChecker(tools),
        usage=usage,
        config=config,
    )
