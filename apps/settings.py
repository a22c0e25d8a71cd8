"""Process configuration: one typed object read from the environment once, then injected."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything flywheel reads from the environment (``FLYWHEEL_*``, plus ``REDIS_URL``)."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", env_file=None, extra="ignore")

    redis_url: SecretStr | None = Field(
        None, validation_alias=AliasChoices("REDIS_URL", "FLYWHEEL_REDIS_URL")
    )
    """Redis to use (``redis://`` or ``rediss://`` for TLS, credentials in the URL). Unset: start a
    private redis-server child on a free port with a temp dir, stopped on exit."""
    home: Path = Path("~/.flywheel").expanduser()
    """Where model artifacts (and an embedded Redis's data, if asked) live."""
    prefix: str = "fw"
    """Prefix of every Redis key."""
    model: str | None = None
    """litellm model string for the agents (e.g. ``openai/gpt-4o-mini``); unset = runbook brain."""
    log_level: str = "INFO"
