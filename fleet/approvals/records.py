"""Approval records: an immutable request bound to one action by its digest, and its decision."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from fleet.actions.spec import ActionSpec

Risk = Literal["low", "medium", "high"]
EvidenceValue = bool | int | float | str | None
MAX_EVIDENCE_ITEMS = 32
MAX_EVIDENCE_TEXT = 200


class ApprovalRequest(BaseModel):
    """A request for a human decision on one action; never changes once stored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    """Opaque id the channels (Slack, CLI, HTTP) pass back with the decision."""
    incident: str
    """Incident (or chat session) that asked; one pending request per incident and action."""
    thread_id: str = ""
    """LangGraph thread to resume with the decision."""
    interrupt_id: str = ""
    """LangGraph interrupt waiting for the decision, when the asker knew it."""
    action: ActionSpec
    """What would run if approved."""
    action_digest: str
    """sha256 of the canonical JSON of ``action``; a decision must quote it."""
    risk: Risk = "medium"
    rationale: str
    """Why the agent wants it, in a sentence or two."""
    evidence: dict[str, EvidenceValue] = Field(default_factory=dict)
    """Numbers and short strings that support it (metrics, sample counts)."""
    requested_by: str
    """Who asked: ``agent:deployment``."""
    created_at: float
    expires_at: float
    """After this (clock seconds) the request is auto-denied and the incident escalates."""
    approvers: tuple[str, ...]
    """Identities allowed to decide (from the service's policy when it was asked)."""

    @field_validator("evidence")
    @classmethod
    def _small_evidence(cls, v: dict[str, EvidenceValue]) -> dict[str, EvidenceValue]:
        if len(v) > MAX_EVIDENCE_ITEMS:
            raise ValueError(f"evidence has {len(v)} items; at most {MAX_EVIDENCE_ITEMS} allowed")
        for k, x in v.items():
            if isinstance(x, str) and len(x) > MAX_EVIDENCE_TEXT:
                raise ValueError(
                    f"evidence {k!r} is {len(x)} characters; at most {MAX_EVIDENCE_TEXT} allowed "
                    "(summarise it)"
                )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.action_digest != self.action.digest:
            raise ValueError(
                f"action_digest {self.action_digest!r} does not match the action "
                f"({self.action.digest!r})"
            )
        if self.expires_at <= self.created_at:
            raise ValueError("expires_at must be after created_at")
        if not self.approvers:
            raise ValueError("an approval request needs at least one approver")
        return self

    def expired(self, now: float) -> bool:
        """Whether the time to decide is over at ``now``."""
        return now >= self.expires_at


class ApprovalDecision(BaseModel):
    """The one decision on a request: approve, reject, or (by the system) expire."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    approval_id: str
    approved: StrictBool
    by: str
    """Who decided: one of the request's approvers, or ``system:expiry``."""
    reason: str = ""
    """Why; required to reject, and sent back to the agent."""
    decided_at: float
    action_digest: str
    """The digest the decider saw; equal to the request's."""

    @model_validator(mode="after")
    def _reject_has_reason(self) -> Self:
        if not self.approved and not self.reason.strip():
            raise ValueError("a rejection needs a reason")
        return self
