"""Per-incident accounting of LLM calls, tokens, retries and runbook fallbacks, and the budget.

The LLM brain reports into one ``UsageTracker`` per process; answers from the runbook brain cost
nothing and are never counted as LLM calls.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

NO_INCIDENT = "-"
"""Key for calls made outside any incident thread (no ``thread_id`` in the run config)."""

RUNBOOK_TAG = "flywheel:runbook"
"""Run tag on every call answered by the runbook brain, so traces and callbacks can tell it
apart from an LLM call."""


class FallbackReason(StrEnum):
    """Why a call went to the runbook brain instead of the LLM."""

    TIMEOUT = "timeout"
    """The provider did not answer within ``timeout`` on any attempt."""
    RATE_LIMITED = "rate_limited"
    """429 on every attempt."""
    PROVIDER_ERROR = "provider_error"
    """Any other provider failure (5xx after retries, auth, bad request, connection)."""
    INVALID_TOOL_CALL = "invalid_tool_call"
    """Tool calls that could not be parsed or failed their schema, even after one repair."""
    UNKNOWN_TOOL = "unknown_tool"
    """A call to a tool this role does not have, even after one repair."""
    BUDGET_EXHAUSTED = "budget_exhausted"
    """The incident's token budget was spent before the call."""


@dataclass(frozen=True, slots=True)
class Fallback:
    """One call answered by the runbook brain, and why."""

    role: str
    """Agent role whose call fell back."""
    reason: FallbackReason
    """The category, for counting and alerting."""
    detail: str
    """What exactly went wrong (error class and message, or the bad tool call), bounded."""


@dataclass(frozen=True, slots=True)
class Usage:
    """A snapshot of what one incident has spent so far."""

    incident_id: str
    """Incident (thread) id, or ``NO_INCIDENT``."""
    llm_calls: int = 0
    """Requests sent to the provider, retries and repair re-asks included."""
    retries: int = 0
    """Of ``llm_calls``, those that repeated a request after a transient failure."""
    prompt_tokens: int = 0
    """Input tokens the provider reported."""
    completion_tokens: int = 0
    """Output tokens the provider reported."""
    fallbacks: tuple[Fallback, ...] = ()
    """Calls the runbook brain answered instead, in order."""

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens, the quantity the budget limits."""
        return self.prompt_tokens + self.completion_tokens


def incident_id_of(config: Mapping[str, Any] | None) -> str:
    """The incident a run belongs to, read from its ``RunnableConfig``.

    Args:
        config: The run config; ``configurable.incident_id`` wins over ``configurable.thread_id``
            (the graphs use the incident id as the thread id, so normally both agree).

    Returns:
        The id as a string, or ``NO_INCIDENT`` when the run names neither.
    """
    configurable = (config or {}).get("configurable") or {}
    for key in ("incident_id", "thread_id"):
        value = configurable.get(key)
        if value not in (None, ""):
            return str(value)
    return NO_INCIDENT


@dataclass(slots=True)
class _Ledger:
    usage: Usage
    fallbacks: list[Fallback] = field(default_factory=list)


class UsageTracker:
    """Thread-safe per-incident counters of LLM usage with a token budget.

    Counters live in process memory: an incident resumed in a new process starts a fresh budget.

    Args:
        token_budget: Tokens (prompt + completion) each incident may spend; normally
            ``BrainConfig.token_budget``.
    """

    def __init__(self, *, token_budget: int) -> None:
        self.token_budget = token_budget
        self._lock = threading.Lock()
        self._ledgers: dict[str, _Ledger] = {}

    def _ledger(self, incident_id: str) -> _Ledger:
        ledger = self._ledgers.get(incident_id)
        if ledger is None:
            ledger = self._ledgers[incident_id] = _Ledger(Usage(incident_id))
        return ledger

    def record_call(
        self,
        incident_id: str,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        retry: bool = False,
    ) -> None:
        """Count one request sent to the provider.

        Args:
            incident_id: Incident the call was made for.
            prompt_tokens: Input tokens reported (0 when the request failed).
            completion_tokens: Output tokens reported.
            retry: Whether the request repeated an earlier failed one.
        """
        with self._lock:
            ledger = self._ledger(incident_id)
            u = ledger.usage
            ledger.usage = replace(
                u,
                llm_calls=u.llm_calls + 1,
                retries=u.retries + int(retry),
                prompt_tokens=u.prompt_tokens + prompt_tokens,
                completion_tokens=u.completion_tokens + completion_tokens,
            )

    def record_fallback(
        self, incident_id: str, *, role: str, reason: FallbackReason, detail: str
    ) -> None:
        """Note that the runbook brain answered a call, and why.

        Args:
            incident_id: Incident the call was made for.
            role: Agent role whose call fell back.
            reason: The category.
            detail: What exactly went wrong; cut to 1000 characters.
        """
        with self._lock:
            self._ledger(incident_id).fallbacks.append(Fallback(role, reason, detail[:1000]))

    def snapshot(self, incident_id: str) -> Usage:
        """What the incident has spent so far (all zeros if nothing was recorded).

        Args:
            incident_id: Incident (thread) id.
        """
        with self._lock:
            ledger = self._ledgers.get(incident_id)
            if ledger is None:
                return Usage(incident_id)
            return replace(ledger.usage, fallbacks=tuple(ledger.fallbacks))

    def remaining(self, incident_id: str) -> int:
        """Tokens the incident may still spend; 0 or less means the budget is exhausted.

        Args:
            incident_id: Incident (thread) id.
        """
        return self.token_budget - self.snapshot(incident_id).total_tokens

    def incidents(self) -> list[str]:
        """Ids of every incident with recorded usage, in first-seen order."""
        with self._lock:
            return list(self._ledgers)

    def forget(self, incident_id: str) -> Usage:
        """Drop an incident's counters (when it closes) and return its final snapshot.

        Args:
            incident_id: Incident (thread) id.
        """
        final = self.snapshot(incident_id)
        with self._lock:
            self._ledgers.pop(incident_id, None)
        return final
