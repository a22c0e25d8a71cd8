"""The pure rules of an incident's life: statuses, moves, severity order and cooldown.

The statuses are those of DESIGN §3; the cooldown rule keeps noise from re-opening what just closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Literal, get_args

from fleet.errors import IllegalTransition, InvalidInput


class Status(StrEnum):
    """Where an incident is in its handling. ``resolved`` and ``failed`` are terminal."""

    OPEN = "open"
    """A detector fired; no agent has taken the incident yet."""
    INVESTIGATING = "investigating"
    """An agent is gathering evidence and choosing an action."""
    AWAITING_APPROVAL = "awaiting_approval"
    """A risky action waits for a human decision."""
    MITIGATING = "mitigating"
    """An action (rollback, retrain, canary, promotion) is under way."""
    RESOLVED = "resolved"
    """Handled; terminal."""
    ESCALATED = "escalated"
    """Handed to a person; still open, and a person may hand it back to the agents."""
    FAILED = "failed"
    """The automation gave up (repeated failures, budget spent); terminal."""

    @property
    def terminal(self) -> bool:
        """Whether no further move is allowed (the incident is closed)."""
        return self in TERMINAL


TERMINAL: frozenset[Status] = frozenset({Status.RESOLVED, Status.FAILED})
"""Closed statuses: an incident in one leaves the open set and starts its fingerprint's cooldown."""

_CLOSE = (Status.RESOLVED, Status.ESCALATED, Status.FAILED)

NEXT: Mapping[Status, frozenset[Status]] = MappingProxyType(
    {
        # An agent takes an incident before acting on it, so ``open`` cannot jump to mitigating.
        Status.OPEN: frozenset({Status.INVESTIGATING, *_CLOSE}),
        # Rollbacks and quarantines need no approval, so investigating may go straight to
        # mitigating.
        Status.INVESTIGATING: frozenset({Status.AWAITING_APPROVAL, Status.MITIGATING, *_CLOSE}),
        # A rejected approval sends the agent back to investigating with the reason.
        Status.AWAITING_APPROVAL: frozenset({Status.INVESTIGATING, Status.MITIGATING, *_CLOSE}),
        # Verification failed (another supervisor round), or a passed canary needs a promotion
        # approval.
        Status.MITIGATING: frozenset({Status.INVESTIGATING, Status.AWAITING_APPROVAL, *_CLOSE}),
        # A person hands the incident back to the agents, or closes it.
        Status.ESCALATED: frozenset({Status.INVESTIGATING, Status.RESOLVED, Status.FAILED}),
        Status.RESOLVED: frozenset(),
        Status.FAILED: frozenset(),
    }
)
"""Allowed next statuses from each status. Moving to the current status is not a move: the store
treats it as a no-op, because graph nodes re-run on resume (DESIGN §7)."""


def allowed_next(current: Status) -> list[Status]:
    """Return the statuses ``current`` may move to, in lifecycle order.

    >>> [s.value for s in allowed_next(Status.OPEN)]
    ['investigating', 'resolved', 'escalated', 'failed']
    >>> allowed_next(Status.RESOLVED)
    []
    """
    return [s for s in Status if s in NEXT[current]]


def check_transition(current: Status, target: Status, *, incident_id: str) -> None:
    """Raise unless an incident may move from ``current`` to ``target``.

    Raises:
        IllegalTransition: naming the incident, both statuses and the allowed next ones.
    """
    if target not in NEXT[current]:
        raise IllegalTransition(
            incident_id, current.value, target.value, [s.value for s in allowed_next(current)]
        )


def parse_status(value: str | Status) -> Status:
    """Return ``value`` as a :class:`Status`.

    Raises:
        InvalidInput: naming the value and the allowed statuses.
    """
    try:
        return Status(value)
    except ValueError:
        allowed = ", ".join(repr(s.value) for s in Status)
        raise InvalidInput(f"unknown incident status {value!r}; allowed: {allowed}") from None


Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = get_args(Severity)
"""Severities from lowest to highest."""


def severity_rank(severity: Severity) -> int:
    """Return the position of ``severity`` in :data:`SEVERITIES` (higher is worse)."""
    return SEVERITIES.index(severity)


def max_severity(a: Severity, b: Severity) -> Severity:
    """Return the worse of two severities.

    >>> max_severity("warning", "critical"), max_severity("warning", "info")
    ('critical', 'warning')
    """
    return a if severity_rank(a) >= severity_rank(b) else b


def suppressed(
    severity: Severity,
    *,
    closed_severity: Severity,
    closed_at: float,
    now: float,
    cooldown_s: float,
) -> bool:
    """Return whether a signal must not re-open a fingerprint that was closed recently.

    The rule (hysteresis): for ``cooldown_s`` seconds after an incident of a fingerprint closes
    (resolved or failed), a signal for that fingerprint opens nothing unless it is strictly more
    severe than the closed incident's peak severity. Detectors that just stopped firing tend to
    flicker at the level they were at; that is noise about a problem just handled (or given up on,
    where re-opening would loop the agents). A signal worse than anything the closed incident saw
    is news and breaks through. A closed ``critical`` therefore holds everything for the cooldown.

    >>> suppressed("warning", closed_severity="warning", closed_at=0, now=10, cooldown_s=600)
    True
    >>> suppressed("critical", closed_severity="warning", closed_at=0, now=10, cooldown_s=600)
    False
    >>> suppressed("warning", closed_severity="critical", closed_at=0, now=600, cooldown_s=600)
    False
    """
    if now - closed_at >= cooldown_s:
        return False
    return severity_rank(severity) <= severity_rank(closed_severity)
