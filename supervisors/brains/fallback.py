"""The LLM brain's safety net: retry, repair once, else answer with the runbook brain.

Covers DESIGN §7 "LLM faults": timeouts, 429, 5xx, malformed or hallucinated tool calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import openai
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import patch_config

from supervisors.brains.config import BrainConfig
from supervisors.brains.repair import Problem, ToolCallChecker
from supervisors.brains.usage import FallbackReason, UsageTracker, incident_id_of

logger = logging.getLogger(__name__)

PROVIDER_ERRORS: tuple[type[BaseException], ...] = (openai.OpenAIError,)
"""What a provider failure looks like: litellm maps every provider's errors onto the openai
exception classes (``litellm.RateLimitError`` is an ``openai.RateLimitError``, and so on)."""


class GuardedBrain(Runnable[LanguageModelInput, AIMessage]):
    """An LLM bound to a role's tools that never leaves the agent without a usable reply.

    Per call: if the incident's token budget is spent, the runbook brain answers. Otherwise the
    LLM is asked, with up to ``config.max_retries`` retries on timeouts, connection errors, 429
    and 5xx. A reply whose tool calls are malformed, fail their schema or name a tool the role
    does not have gets one repair request; if that reply is still bad, or the provider keeps
    failing, the runbook brain answers and ``usage`` records why. A tool call written as JSON
    text is turned into a structured call first. A reply without tool calls passes through: what
    plain text means is the agent's business.

    Async callers go through ``Runnable.ainvoke``'s default, which runs ``invoke`` in the
    executor: one code path, at the cost of a thread per call.

    Args:
        role: Agent role, recorded with each fallback.
        llm: The provider chat model, already bound to the tools; it must not retry itself.
        runbook: The runbook brain, already bound to the same tools.
        checker: Validates tool calls against the role's tools.
        usage: Where calls, tokens and fallbacks are counted.
        config: Retry and backoff settings.
    """

    def __init__(
        self,
        *,
        role: str,
        llm: Runnable[LanguageModelInput, BaseMessage],
        runbook: Runnable[LanguageModelInput, BaseMessage],
        checker: ToolCallChecker,
        usage: UsageTracker,
        config: BrainConfig,
    ) -> None:
        self.role = role
        self.llm = llm
        self.runbook = runbook
        self.checker = checker
        self.usage = usage
        self.config = config
        self.name = f"{role} brain"
        self.sleep: Callable[[float], None] = time.sleep
        """How to wait between retries; swap in a recorder to observe the waits."""

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        """Answer the conversation with tool calls, from the LLM or else the runbook brain.

        Args:
            input: The conversation (messages, a string or a prompt value).
            config: Run config; ``configurable.thread_id`` (or ``incident_id``) selects the
                incident whose budget and counters apply.
            **kwargs: Passed to the chat model (e.g. ``stop``).

        Returns:
            The reply; its tool calls name only this role's tools and match their schemas,
            unless it came from the runbook brain, which is trusted.
        """
        return self._call_with_config(
            lambda messages, run_manager, config: self._answer(
                messages, patch_config(config, callbacks=run_manager.get_child()), kwargs
            ),
            _messages(input),
            config,
        )

    def _answer(
        self, messages: list[BaseMessage], config: RunnableConfig, kwargs: dict[str, Any]
    ) -> AIMessage:
        incident = incident_id_of(config)
        if self.usage.remaining(incident) <= 0:
            spent = self.usage.snapshot(incident).total_tokens
            detail = f"incident {incident!r} spent {spent} of {self.usage.token_budget} tokens"
            return self._fallback(messages, config, FallbackReason.BUDGET_EXHAUSTED, detail)
        try:
            reply = self._ask(messages, config, kwargs)
            problems = self.checker.problems(reply)
            if not problems:
                return reply
            if self.usage.remaining(incident) > 0:
                repair = [*messages, self.checker.repair_request(problems)]
                reply = self._ask(repair, config, kwargs)
                problems = self.checker.problems(reply)
                if not problems:
                    return reply
        except PROVIDER_ERRORS as exc:
            return self._fallback(messages, config, _reason(exc), _describe(exc))
        return self._fallback(messages, config, problems[0].reason, _summary(problems))

    def _ask(
        self, messages: list[BaseMessage], config: RunnableConfig, kwargs: dict[str, Any]
    ) -> AIMessage:
        """One question to the LLM, retried on transient faults; every attempt is counted."""
        incident = incident_id_of(config)
        for attempt in range(self.config.max_retries + 1):
            try:
                reply = self.llm.invoke(messages, config, **kwargs)
            except PROVIDER_ERRORS as exc:
                self.usage.record_call(incident, retry=attempt > 0)
                if not _is_transient(exc) or attempt == self.config.max_retries:
                    raise
                wait = self._wait(exc, attempt)
                logger.info(
                    "%s: %s, retry %d in %.2fs", self.name, _describe(exc), attempt + 1, wait
                )
                self.sleep(wait)
                continue
            tokens = getattr(reply, "usage_metadata", None) or {}
            self.usage.record_call(
                incident,
                prompt_tokens=tokens.get("input_tokens", 0),
                completion_tokens=tokens.get("output_tokens", 0),
                retry=attempt > 0,
            )
            if not isinstance(reply, AIMessage):
                raise TypeError(f"{self.name}: the chat model returned {type(reply).__name__}")
            return self.checker.recover(reply)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _wait(self, exc: BaseException, attempt: int) -> float:
        asked = _retry_after(exc)
        wait = asked if asked is not None else self.config.retry_backoff * 2**attempt
        return max(0.0, min(wait, self.config.max_backoff))

    def _fallback(
        self,
        messages: list[BaseMessage],
        config: RunnableConfig,
        reason: FallbackReason,
        detail: str,
    ) -> AIMessage:
        logger.warning("%s answered by the runbook brain (%s): %s", self.name, reason, detail)
        self.usage.record_fallback(
            incident_id_of(config), role=self.role, reason=reason, detail=detail
        )
        reply = self.runbook.invoke(messages, config)
        if not isinstance(reply, AIMessage):
            raise TypeError(f"{self.name}: the runbook brain returned {type(reply).__name__}")
        return reply


def _messages(value: LanguageModelInput) -> list[BaseMessage]:
    if isinstance(value, PromptValue):
        return value.to_messages()
    if isinstance(value, str):
        return [HumanMessage(value)]
    return convert_to_messages(value)


def _is_transient(exc: BaseException) -> bool:
    """Worth asking again: no answer at all, throttling, or a server-side failure."""
    if isinstance(exc, openai.APIConnectionError):  # includes timeouts
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and (status in (408, 429) or status >= 500)


def _reason(exc: BaseException) -> FallbackReason:
    if isinstance(exc, openai.APITimeoutError):
        return FallbackReason.TIMEOUT
    if getattr(exc, "status_code", None) == 429:
        return FallbackReason.RATE_LIMITED
    return FallbackReason.PROVIDER_ERROR


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the provider asked us to wait (``retry-after-ms`` or ``retry-after``), if any."""
    # litellm keeps the provider's headers in ``litellm_response_headers``; the ``response`` it
    # attaches to its own exceptions is rebuilt and may have lost them.
    for headers in (
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    ):
        for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
            try:
                return float(headers[name]) * scale  # type: ignore[index]
            except (KeyError, TypeError, ValueError):
                continue  # absent, or an HTTP date, which we do not parse
    return None


def _describe(exc: BaseException) -> str:
    """The error and, when litellm wrapped it, the original cause (often the useful part)."""
    root = exc
    while (nxt := root.__cause__ or root.__context__) is not None and nxt is not exc:
        root = nxt
    text = f"{type(exc).__name__}: {exc}"
    if root is not exc and str(root) not in text:
        text += f" [root cause {type(root).__name__}: {root}]"
    return text


def _summary(problems: Sequence[Problem]) -> str:
    return "; ".join(p.text for p in problems)
