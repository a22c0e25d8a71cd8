"""Process configuration: one typed object read from the environment once, then injected."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fleet.errors import InvalidInput
from fleet.store import as_cluster_url


class Settings(BaseSettings):
    """Everything flywheel reads from the environment (``FLYWHEEL_*``, plus ``REDIS_URL``)."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", env_file=None, extra="ignore")

    redis_url: SecretStr | None = Field(
        None, validation_alias=AliasChoices("REDIS_URL", "FLYWHEEL_REDIS_URL")
    )
    """Redis to use (``redis://`` or ``rediss://`` for TLS, credentials in the URL;
    ``redis+cluster://host:port[,host:port...]`` for a Redis Cluster). Unset: start a private
    redis-server child on a free port with a temp dir, stopped on exit."""
    home: Path = Path("~/.flywheel").expanduser()
    """Where model artifacts (and an embedded Redis's data, if asked) live."""
    prefix: str = "fw"
    """Prefix of every Redis key."""
    model: str | None = None
    """litellm model string for the agents (e.g. ``openai/gpt-4o-mini``); unset = runbook brain."""
    log_level: str = "INFO"
    """Level of the process log (``DEBUG`` also shows quiet loop passes)."""
    log_format: Literal["json", "text"] = "json"
    """Lines of ``flywheel run`` / ``flywheel serve``: one JSON object each, or readable text."""

    slack_bot_token: SecretStr | None = None
    """Slack bot token (``xoxb-``); unset = no Slack."""
    slack_signing_secret: SecretStr | None = None
    """Slack signing secret; every HTTP request from Slack is verified with it."""
    slack_app_token: SecretStr | None = None
    """App-level token (``xapp-``) for Socket Mode; unset = HTTP mode at ``/slack/events``."""
    slack_channel: str | None = None
    """Channel id where approval prompts and incident notifications are posted."""
    slack_approvers: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    """Slack user id -> approver identity, as ``U123=alice,U456=bob``; nobody else may decide."""
    slack_api_url: str | None = None
    """Base URL of Slack's Web API; unset = Slack's own (tests point it to a loopback stand-in)."""

    api_tokens: SecretStr | None = None
    """Bearer tokens of the HTTP API and who each one is, as ``tok1=alice,tok2=bob``; the identity
    is the one approval policies list as approvers."""
    api_auth: bool = True
    """Whether the HTTP API checks bearer tokens; false = every caller is ``anonymous``."""

    # --- security ---
    api_token: SecretStr | None = None
    """Bearer token this process sends as a client (``flywheel replay --url``); ``--token``
    overrides it."""

    # --- failures and training workers ---
    llm_timeout_s: float = Field(30.0, gt=0)
    """Seconds one LLM request may take before it counts as failed (raise it for a slow local
    model: at about 10 tokens/s a 1,000-token reply needs about 100 s)."""
    llm_max_retries: int = Field(2, ge=0)
    """Extra attempts after a transient LLM failure (timeout, connection error, 429, 5xx)."""
    llm_token_budget: int = Field(60_000, gt=0)
    """Prompt plus completion tokens one incident may spend; then the runbook brain answers."""
    dask_scheduler: str | None = None
    """Dask scheduler address (``tcp://host:8786``): training jobs run on that cluster; unset =
    a local worker process (needs ``pip install 'flywheel[dask]'``)."""

    # --- redis cluster ---
    redis_cluster: bool = False
    """Treat ``REDIS_URL`` (``redis://`` or ``rediss://``) as a Redis Cluster node: the same as
    writing it ``redis+cluster://`` (``FLYWHEEL_REDIS_CLUSTER=1``)."""

    # --- retention ---
    retention_checkpoint_grace_s: float = Field(86_400.0, ge=0)
    """After an incident closes, its LangGraph thread (every checkpoint) is deleted (1 day)."""
    retention_incident_keep_s: float = Field(30 * 86_400.0, ge=0)
    """After an incident closes, its record and index entries are deleted (30 days)."""
    retention_approval_keep_s: float = Field(30 * 86_400.0, ge=0)
    """After an incident closes, its decided approvals and their pointers are deleted (30 days)."""
    retention_action_keep_s: float = Field(30 * 86_400.0, ge=0)
    """After an incident closes, its idempotency records (``act:``) are deleted (30 days)."""
    retention_audit_keep_s: float = Field(90 * 86_400.0, ge=0)
    """Audit entries older than this are archived to JSON lines, then trimmed (90 days)."""
    retention_audit_archive_dir: Path | None = None
    """Audit archive directory; unset = ``FLYWHEEL_HOME/audit``."""
    retention_audit_archive: bool = True
    """Archive old audit entries before trimming; false = never archive (and never trim unless
    ``retention_audit_trim_unarchived``)."""
    retention_audit_trim_unarchived: bool = False
    """With archiving off, trim old audit entries anyway (they are lost)."""
    retention_interval_s: float = Field(3_600.0, gt=0)
    """How often ``flywheel run`` applies retention (seconds)."""

    def api_identities(self) -> dict[str, str]:
        """Bearer token -> identity, from ``FLYWHEEL_API_TOKENS`` (empty when unset).

        Parsed here rather than in a field validator: pydantic's validation errors echo the
        input, and this input is a secret.

        Raises:
            InvalidInput: an item is not ``TOKEN=identity`` (named by position only).
        """
        return parse_api_tokens(self.api_tokens.get_secret_value()) if self.api_tokens else {}

    @field_validator("slack_approvers", mode="before")
    @classmethod
    def _approver_pairs(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        pairs: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in v.split(","))):
            user, sep, identity = item.partition("=")
            if not sep or not user.strip() or not identity.strip():
                raise ValueError(
                    f"FLYWHEEL_SLACK_APPROVERS item {item!r} is not SLACK_USER_ID=identity; "
                    "expected e.g. 'U123=alice,U456=bob'"
                )
            pairs[user.strip()] = identity.strip()
        return pairs

    @model_validator(mode="after")
    def _cluster_url(self) -> Settings:
        # One place turns the flag into the URL form, so every entry point that reads
        # ``redis_url`` (fleet, demo, serve, eval) connects with a cluster client alike.
        if self.redis_cluster and self.redis_url is not None:
            self.redis_url = SecretStr(as_cluster_url(self.redis_url.get_secret_value()))
        return self


def parse_api_tokens(text: str) -> dict[str, str]:
    """Parse ``tok1=alice,tok2=bob`` into ``{token: identity}``.

    Raises:
        InvalidInput: naming the position of a bad item (never the token itself, it is a secret).
    """
    pairs: dict[str, str] = {}
    for n, item in enumerate(filter(None, (p.strip() for p in text.split(","))), start=1):
        token, sep, identity = item.partition("=")
        if not sep or not token.strip() or not identity.strip():
            raise InvalidInput(
                f"FLYWHEEL_API_TOKENS item #{n} is not TOKEN=identity; expected e.g. "
                "'s3cret1=alice,s3cret2=bob'"
            )
        if token.strip() in pairs:
            raise InvalidInput(f"FLYWHEEL_API_TOKENS item #{n} repeats an earlier token")
        pairs[token.strip()] = identity.strip()
    return pairs
