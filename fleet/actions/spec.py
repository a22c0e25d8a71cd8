"""What an action is: its spec (name, service, args), its canonical digest, and who asks for it."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fleet.keys import check_service_name
from fleet.schema import Action


def canonical_json(value: Any) -> str:
    """Serialise ``value`` the one way digests are taken: sorted keys, no whitespace, no NaN.

    >>> canonical_json({"b": 1, "a": [1.5, None]})
    '{"a":[1.5,null],"b":1}'
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def sha256_hex(text: str) -> str:
    """Hex sha256 of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def iso_time(ts: float) -> str:
    """Clock seconds as a UTC time for messages.

    >>> iso_time(1_700_000_000.0)
    '2023-11-14T22:13:20Z'
    """
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ActionSpec(BaseModel):
    """One write on one service, as data: what an approval binds to and a ledger key names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Action
    """The action kind, e.g. ``promote``."""
    service: str
    """The service it changes."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Its arguments, JSON values only, e.g. ``{"version": 3}``."""

    @field_validator("service")
    @classmethod
    def _service(cls, v: str) -> str:
        return check_service_name(v)

    @field_validator("args")
    @classmethod
    def _json_args(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            canonical_json(v)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"action args must be finite JSON values: {exc}") from exc
        return v

    @property
    def digest(self) -> str:
        """sha256 of the canonical JSON of ``{name, service, args}``.

        >>> ActionSpec(name="promote", service="elec", args={"version": 3}).digest[:12]
        'bf574d456f82'
        """
        return sha256_hex(canonical_json(self.model_dump(mode="json")))

    def describe(self) -> str:
        """One line for messages, e.g. ``promote 'elec' version=3``.

        >>> spec = ActionSpec(name="canary", service="elec", args={"version": 3, "percent": 5.0})
        >>> spec.describe()
        "canary 'elec' percent=5.0 version=3"
        """
        shown = " ".join(f"{k}={v!r}" for k, v in sorted(self.args.items()))
        return f"{self.name} {self.service!r}{' ' + shown if shown else ''}"


class ActionContext(BaseModel):
    """Who asks for an action and why; every guarded write takes one.

    The ledger names a side effect by ``incident`` + action + args (+ ``step`` when given), so an
    action repeated in the same incident returns its first result instead of running again.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    incident: str = Field(min_length=1, max_length=200)
    """Incident (or chat session) the action belongs to; it scopes idempotency and approvals."""
    actor: str = Field(min_length=1, max_length=200)
    """Who acts, for the audit trail: ``agent:deployment``, ``human:alice``."""
    reason: str = Field(min_length=1, max_length=2000)
    """Why, in one line; becomes the approval's rationale and the audit reason."""
    thread_id: str = ""
    """LangGraph thread to resume once an approval is decided ('' when not in a graph)."""
    interrupt_id: str = ""
    """LangGraph interrupt that will wait for the approval, when the caller knows it."""
    step: str = ""
    """Tells a deliberate repeat of the same action in one incident (e.g. a second verify round)
    from a resumed one. Empty means the action runs at most once per incident."""
