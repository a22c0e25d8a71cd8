"""Request and response bodies of the HTTP API; typed so the OpenAPI spec says exactly what flows.

Records the fleet already types (incidents, approval requests, feature specs, policies) are reused
as they are; views add only what a caller needs on top (an approval's status and decision).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from fleet.approvals import ApprovalDecision, ApprovalRequest
from fleet.incidents import Incident
from fleet.registry import Mode, VersionStatus
from fleet.schema import FeatureSpec, Policy, Task

SERVICE_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
"""The fleet's service-name rule (``fleet.keys.check_service_name``), checked at the edge."""
THREAD_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
MAX_EVENTS = 10_000
"""Events one ingest request may carry."""

ServiceName = Annotated[str, Field(pattern=SERVICE_NAME, description="A service name.")]
RecordId = Annotated[str, Field(min_length=1, max_length=200)]


class ErrorOut(BaseModel):
    """Every error response: what went wrong and, where there is one, what to do instead."""

    detail: str | list[Any]
    """A message naming the input and the fix; a list of field errors for a malformed request."""


class HealthOut(BaseModel):
    """Liveness of the API process, its Redis and the trainers."""

    status: Literal["ok", "degraded", "unavailable"]
    """``degraded``: a trainer is broken (training jobs cannot run until it is replaced)."""
    version: str
    """Installed flywheel version."""
    redis: str
    """``ok``, or why Redis cannot be reached."""
    trainer: str | None = None
    """This process's trainer: ``ok``, ``rebuilt N times`` or ``broken: why``; None: none here."""
    trainers: dict[str, str] = Field(default_factory=dict)
    """Each live ``flywheel run`` worker's trainer, as that worker last reported it."""


# --- services -------------------------------------------------------------------------------
class VersionOut(BaseModel):
    """One model version of a service, without its artifact location."""

    number: int
    status: VersionStatus
    metrics: dict[str, float]
    """Offline metrics, e.g. ``holdout_accuracy``."""
    parent: int | None
    """Version that was champion when this one was trained."""
    created_by: str
    created_at: float


class ServiceSummary(BaseModel):
    """A service's pointers, as listed."""

    name: str
    task: Task
    owner: str
    champion: int | None
    """Version answering production traffic."""
    challenger: int | None
    """Version in shadow or canary, if any."""
    mode: Mode
    split: float
    """Share of traffic (0..1) the challenger answers in canary mode."""
    generation: int
    """Bumped on every pointer change."""
    versions: int
    """How many versions the service has."""


class ServicesOut(BaseModel):
    """Every registered service, by name."""

    services: list[ServiceSummary]


class ServiceDetail(BaseModel):
    """One service: schema, policy, pointers and every version."""

    name: str
    task: Task
    owner: str
    champion: int | None
    challenger: int | None
    previous: int | None
    """Champion before the last promotion, the default rollback target."""
    mode: Mode
    split: float
    generation: int
    created_at: float
    features: list[FeatureSpec]
    policy: Policy
    versions: list[VersionOut]


# --- incidents ------------------------------------------------------------------------------
class IncidentsOut(BaseModel):
    """Incidents, oldest first when open ones are listed, newest first otherwise."""

    incidents: list[Incident]


# --- approvals ------------------------------------------------------------------------------
ApprovalStatus = Literal["pending", "approved", "rejected", "expired"]


class ApprovalOut(BaseModel):
    """An approval request, where it stands, and its decision once there is one."""

    request: ApprovalRequest
    status: ApprovalStatus
    """``expired`` once the time to decide is over, whether or not the expiry was recorded."""
    decision: ApprovalDecision | None
    """The first (and only) decision; None while pending."""


class ApprovalsOut(BaseModel):
    """Pending approval requests, soonest expiry first."""

    approvals: list[ApprovalOut]


class DecisionIn(BaseModel):
    """A decision on one approval request. Who decides is the caller's token, never the body."""

    model_config = ConfigDict(extra="forbid")

    approve: StrictBool
    """``true`` to approve, ``false`` to reject; nothing else counts (``"yes"`` and ``1`` are
    422, never an approval)."""
    reason: str = Field("", max_length=2000)
    """Why; required to reject (it goes back to the agent)."""
    digest: str = Field(min_length=1, max_length=128)
    """The request's ``action_digest`` as shown to the decider; binds the decision to it."""


# --- chat -----------------------------------------------------------------------------------
class ChatIn(BaseModel):
    """One chat message; without ``thread_id`` a new conversation starts."""

    model_config = ConfigDict(extra="forbid")

    thread_id: str | None = Field(None, pattern=THREAD_ID)
    """Conversation to continue (from an earlier reply)."""
    message: str = Field(min_length=1, max_length=8000)


class ChatOut(BaseModel):
    """The whole reply to one message."""

    thread_id: str
    """Conversation id; send it back to continue."""
    reply: str


class ChatChunk(BaseModel):
    """One line of a streamed reply (NDJSON); the last line has ``done`` or ``error`` set."""

    thread_id: str
    delta: str = ""
    """The next piece of the reply."""
    done: bool = False
    """True on the last line of a reply that completed."""
    error: str | None = None
    """Set on the last line when the reply failed midway."""


# --- telemetry ------------------------------------------------------------------------------
class PredictionsIn(BaseModel):
    """Prediction events scored outside the gateway; each is checked, bad ones dead-lettered.

    An event is ``{"ts": seconds, "request_id": str, "version": int, "features": [number|null,
    ...] (one per schema feature), "prediction": number|null, "latency_ms": number, "error":
    str|null, "shadow": bool}``. Items are not typed here on purpose: one bad event must not
    reject the batch, it goes to the dead-letter stream with its reason.
    """

    model_config = ConfigDict(extra="forbid")

    events: list[Any] = Field(max_length=MAX_EVENTS)


class LabelsIn(BaseModel):
    """Ground-truth labels ``{"request_id": str, "label": number}``; bad ones are dead-lettered."""

    model_config = ConfigDict(extra="forbid")

    labels: list[Any] = Field(max_length=MAX_EVENTS)


class IngestOut(BaseModel):
    """What one ingest call stored and what it dead-lettered."""

    accepted: int
    rejected: int
    reasons: list[str]
    """The first rejection reasons, ``[index] message``."""
