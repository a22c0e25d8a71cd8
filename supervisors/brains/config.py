"""What the brains need to know: which model per role, its limits, retries and token budget.

Built once in ``apps/`` from ``Settings`` and passed down; nothing here reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pydantic import SecretStr

from fleet.errors import InvalidInput

ROLES = ("supervisor", "monitoring", "data_steward", "continuous_learning", "deployment")
"""The agent roles that get a brain; per-role model overrides must name one of these."""


@dataclass(frozen=True, kw_only=True, slots=True)
class BrainConfig:
    """Settings of the LLM brains, shared by every role unless overridden.

    Example:
        ``BrainConfig(model="openai/gpt-4o-mini", role_models={"deployment": "anthropic/..."})``
    """

    model: str | None = None
    """litellm model string (``openai/gpt-4o-mini``, ``anthropic/claude-...``,
    ``ollama_chat/qwen2.5``); ``None`` means every role without an override uses the runbook
    brain."""
    role_models: Mapping[str, str] = field(default_factory=dict)
    """Per-role model overrides, role -> litellm model string; they win over ``model``."""
    api_base: str | None = None
    """Endpoint override (a proxy, a local Ollama, a test server); ``None`` = the provider's."""
    api_key: SecretStr | None = None
    """Provider key; ``None`` lets litellm use the provider's usual variable (``OPENAI_API_KEY``,
    ``ANTHROPIC_API_KEY``), which ``apps/`` is responsible for."""
    max_tokens: int = 1024
    """Completion cap sent on every request, so no reply can run away with the budget."""
    temperature: float = 0.0
    """Sampling temperature; 0 keeps tool choices as repeatable as the provider allows."""
    timeout: float = 30.0
    """Seconds one request may take before it counts as failed."""
    max_retries: int = 2
    """Extra attempts after a transient failure (timeout, connection error, 429, 5xx)."""
    retry_backoff: float = 1.0
    """Seconds before the first retry, doubled on each further one; a provider's
    ``Retry-After`` header wins (capped at ``max_backoff``)."""
    max_backoff: float = 30.0
    """Longest wait before a retry, whatever the provider asks for."""
    token_budget: int = 60_000
    """Prompt plus completion tokens one incident may spend across all roles; once spent, every
    role answers with the runbook brain for the rest of that incident."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.role_models) - set(ROLES))
        if unknown:
            raise InvalidInput(
                f"role_models names unknown role(s) {', '.join(map(repr, unknown))}; "
                f"allowed roles: {', '.join(ROLES)}"
            )
        for name in ("max_tokens", "token_budget"):
            if getattr(self, name) <= 0:
                raise InvalidInput(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("timeout", "max_retries", "retry_backoff", "max_backoff"):
            if getattr(self, name) < 0:
                raise InvalidInput(f"{name} must be >= 0, got {getattr(self, name)!r}")
        # Frozen means frozen: a caller keeping the dict it passed must not be able to reroute.
        object.__setattr__(self, "role_models", MappingProxyType(dict(self.role_models)))

    def model_for(self, role: str) -> str | None:
        """The litellm model string this role uses, or ``None`` for the runbook brain.

        Args:
            role: The agent role (normally one of ``ROLES``).

        Returns:
            The role's override if set, else ``model``.
        """
        return self.role_models.get(role, self.model)
