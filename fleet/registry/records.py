"""Typed records of a service and a model version, and their flat Redis-hash encoding."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleet.schema import FeatureSchema, Policy, Task

RECORD_SCHEMA = 1
"""Version of the hash layout below; bump with a migration when it changes."""


class Mode(StrEnum):
    """How traffic is shared between champion and challenger."""

    FULL = "full"
    """All traffic to the champion; no challenger scored."""
    SHADOW = "shadow"
    """The champion answers; the challenger scores the same requests silently."""
    CANARY = "canary"
    """The challenger answers ``split`` of requests (sticky by request id)."""


class VersionStatus(StrEnum):
    """Lifecycle of a model version."""

    CANDIDATE = "candidate"
    SHADOW = "shadow"
    CANARY = "canary"
    PRODUCTION = "production"
    RETIRED = "retired"
    REJECTED = "rejected"


class ServiceRecord(BaseModel):
    """A served model slot: schema, policy and the champion/challenger pointers."""

    model_config = ConfigDict(frozen=True)

    name: str
    task: Task
    schema_: FeatureSchema = Field(alias="schema")
    policy: Policy = Field(default_factory=Policy)
    owner: str = ""
    champion: int | None = None
    """Version answering production traffic."""
    challenger: int | None = None
    """Version under shadow or canary, if any."""
    previous: int | None = None
    """Champion before the last promotion, the default rollback target."""
    split: float = 0.0
    """Share of traffic (0..1) the challenger answers in canary mode."""
    challenger_since: float = 0.0
    """When the current challenger started shadow/canary (analysis looks only after this)."""
    champion_since: float = 0.0
    """When the current champion took all traffic (promotion or rollback); 0 if unknown."""
    accepted_at: float = 0.0
    """When a person last accepted the champion's current error level (``flywheel ack
    --accept`` on an escalated performance incident); the monitor re-baselines its performance
    alarm from here. 0 if never."""
    mode: Mode = Mode.FULL
    generation: int = 0
    """Bumped on every pointer change; the gateway reloads when it moves."""
    created_at: float = 0.0

    def to_hash(self) -> dict[str, str]:
        """Encode as flat string fields for a Redis hash."""
        return {
            "v": str(RECORD_SCHEMA),
            "name": self.name,
            "task": self.task,
            "schema": self.schema_.model_dump_json(),
            "policy": self.policy.model_dump_json(),
            "owner": self.owner,
            "champion": _opt(self.champion),
            "challenger": _opt(self.challenger),
            "previous": _opt(self.previous),
            "split": repr(self.split),
            "challenger_since": repr(self.challenger_since),
            "champion_since": repr(self.champion_since),
            "accepted_at": repr(self.accepted_at),
            "mode": self.mode.value,
            "generation": str(self.generation),
            "created_at": repr(self.created_at),
        }

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> ServiceRecord:
        """Decode a Redis hash written by :meth:`to_hash`."""
        return cls(
            name=h["name"],
            task=h["task"],  # type: ignore[arg-type]
            schema=FeatureSchema.model_validate_json(h["schema"]),
            policy=Policy.model_validate_json(h["policy"]),
            owner=h.get("owner", ""),
            champion=_int(h.get("champion")),
            challenger=_int(h.get("challenger")),
            previous=_int(h.get("previous")),
            split=float(h.get("split") or 0.0),
            challenger_since=float(h.get("challenger_since") or 0.0),
            champion_since=float(h.get("champion_since") or 0.0),
            accepted_at=float(h.get("accepted_at") or 0.0),
            mode=Mode(h.get("mode") or "full"),
            generation=int(h.get("generation") or 0),
            created_at=float(h.get("created_at") or 0.0),
        )


class VersionRecord(BaseModel):
    """One trained model: where its artifact is, how it was made, how it scored."""

    model_config = ConfigDict(frozen=True)

    service: str
    number: int
    artifact_uri: str
    sha256: str
    training_window: dict[str, Any] = Field(default_factory=dict)
    """What it was trained on, e.g. ``{"from": stream id, "to": stream id, "rows": 5000}``."""
    data_hash: str = ""
    """sha256 of the training matrix and labels."""
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    """Offline metrics, e.g. ``holdout_accuracy`` and the champion's on the same holdout."""
    parent: int | None = None
    """Version that was champion when this one was trained."""
    created_by: str = ""
    created_at: float = 0.0
    status: VersionStatus = VersionStatus.CANDIDATE

    def to_hash(self) -> dict[str, str]:
        """Encode as flat string fields for a Redis hash."""
        return {
            "v": str(RECORD_SCHEMA),
            "service": self.service,
            "number": str(self.number),
            "artifact_uri": self.artifact_uri,
            "sha256": self.sha256,
            "training_window": json.dumps(self.training_window, sort_keys=True),
            "data_hash": self.data_hash,
            "params": json.dumps(self.params, sort_keys=True, default=str),
            "metrics": json.dumps(self.metrics, sort_keys=True),
            "parent": _opt(self.parent),
            "created_by": self.created_by,
            "created_at": repr(self.created_at),
            "status": self.status.value,
        }

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> VersionRecord:
        """Decode a Redis hash written by :meth:`to_hash`."""
        return cls(
            service=h["service"],
            number=int(h["number"]),
            artifact_uri=h["artifact_uri"],
            sha256=h["sha256"],
            training_window=json.loads(h.get("training_window") or "{}"),
            data_hash=h.get("data_hash", ""),
            params=json.loads(h.get("params") or "{}"),
            metrics=json.loads(h.get("metrics") or "{}"),
            parent=_int(h.get("parent")),
            created_by=h.get("created_by", ""),
            created_at=float(h.get("created_at") or 0.0),
            status=VersionStatus(h.get("status") or "candidate"),
        )


def _opt(v: int | None) -> str:
    return "" if v is None else str(v)


def _int(v: str | None) -> int | None:
    return int(v) if v not in (None, "") else None
