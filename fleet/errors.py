"""Domain exceptions of the fleet; the CLI and the HTTP edges translate them into messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # records import this module; the types are only for annotations
    from fleet.approvals.records import ApprovalDecision, ApprovalRequest


class FleetError(Exception):
    """Base class for every error the fleet raises on purpose."""


class NotFound(FleetError):
    """A service, version, incident or approval does not exist."""


class UnknownService(NotFound):
    """No service of that name is registered."""

    def __init__(self, name: str, known: list[str] | None = None):
        hint = f"; known services: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"unknown service {name!r}{hint}. Run: flywheel services")
        self.name = name


class UnknownVersion(NotFound):
    """The service has no version with that number."""

    def __init__(self, service: str, version: int, known: list[int] | None = None):
        hint = f"; known versions: {', '.join(map(str, known))}" if known else ""
        super().__init__(
            f"service {service!r} has no version {version!r}{hint}. "
            f"Run: flywheel versions {service}"
        )
        self.service = service
        self.version = version


class AlreadyExists(FleetError):
    """Something with that identity already exists."""


class InvalidInput(FleetError):
    """Input failed validation; the message names the field and the allowed values."""


class InvalidId(NotFound, InvalidInput):
    """An id from outside (approval, incident, thread, service, version) is not of its form.

    Checked before the id becomes part of a Redis key, so no id can name another key. Nothing
    can have such an id, so it is also a :class:`NotFound` (HTTP 404, naming the form).
    """


class IntegrityError(FleetError):
    """Stored data does not match its recorded checksum; it must not be used."""


class PolicyViolation(FleetError):
    """An action was refused by the service's policy (approval, limits, cooldown)."""


class RedisUnavailable(FleetError):
    """Redis cannot be reached or started."""


class UnknownIncident(NotFound):
    """No incident has that id."""

    def __init__(self, incident_id: str):
        super().__init__(f"no incident {incident_id!r}. Run: flywheel incidents")
        self.incident_id = incident_id


class IllegalTransition(FleetError):
    """An incident was asked to move to a status its lifecycle does not allow from where it is."""

    def __init__(self, incident_id: str, current: str, target: str, allowed: list[str]):
        nxt = ", ".join(repr(s) for s in allowed) or f"none ({current!r} is terminal)"
        super().__init__(
            f"incident {incident_id!r} cannot go from {current!r} to {target!r}; "
            f"allowed from {current!r}: {nxt}"
        )
        self.incident_id = incident_id
        self.current = current
        self.target = target
        self.allowed = allowed


class WriteConflict(FleetError):
    """An optimistic Redis transaction kept losing to concurrent writers and gave up."""


class LimitExceeded(PolicyViolation):
    """A rate limit refused the action (cooldown, rollbacks per hour, repeated failures)."""

    def __init__(self, message: str, *, limit: str, retry_at: float | None = None):
        super().__init__(message)
        # Which limit: "cooldown", "max_rollbacks_per_hour" or "max_retrain_failures".
        self.limit = limit
        # When the action is allowed again (clock seconds); None when only a person can clear it.
        self.retry_at = retry_at


class ServiceBusy(PolicyViolation):
    """Another action holds the service's lease; only one action runs at a time per service."""


class ApprovalRequired(FleetError):
    """The action needs a human decision first; ``request`` is the pending approval to show.

    Not a :class:`PolicyViolation`: it is the signal on which the tool layer pauses the graph
    (LangGraph ``interrupt()``) and resumes with the decision, so it must not be swallowed as a
    refusal.
    """

    def __init__(self, message: str, request: ApprovalRequest):
        super().__init__(message)
        self.request = request


class UnknownApproval(NotFound):
    """No approval request has that id."""

    def __init__(self, approval_id: str):
        super().__init__(
            f"unknown approval {approval_id!r}. Run: flywheel approvals (lists pending requests)"
        )
        self.approval_id = approval_id


class AlreadyDecided(AlreadyExists):
    """Someone decided the approval first; the first decision wins and is final."""

    def __init__(self, message: str, decision: ApprovalDecision):
        super().__init__(message)
        self.decision = decision


class ActionInProgress(FleetError):
    """The same side effect is running elsewhere (its lease has not expired)."""


class ActionOutcomeUnknown(FleetError):
    """A side effect started but never recorded an outcome (a crash), and is unsafe to repeat."""


class TrainingFailed(FleetError):
    """A training job did not come back: its fit raised, or its worker process died.

    The message names the service and the error (type and text), so an escalation that quotes
    it tells a person what went wrong.
    """
