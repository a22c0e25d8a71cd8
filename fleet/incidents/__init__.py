"""Incidents: detector signals de-duplicated per (service, kind), their lifecycle, their store."""

from fleet.incidents.lifecycle import (
    NEXT,
    SEVERITIES,
    TERMINAL,
    Severity,
    Status,
    allowed_next,
    check_transition,
    max_severity,
    parse_status,
    suppressed,
)
from fleet.incidents.records import (
    KINDS,
    Closure,
    Evidence,
    Incident,
    Kind,
    Signal,
    check_kind,
    fingerprint,
)
from fleet.incidents.store import DEFAULT_CLEAR_AFTER, DEFAULT_COOLDOWN_S, IncidentStore

__all__ = [
    "DEFAULT_CLEAR_AFTER",
    "DEFAULT_COOLDOWN_S",
    "KINDS",
    "NEXT",
    "SEVERITIES",
    "TERMINAL",
    "Closure",
    "Evidence",
    "Incident",
    "IncidentStore",
    "Kind",
    "Severity",
    "Signal",
    "Status",
    "allowed_next",
    "check_kind",
    "check_transition",
    "fingerprint",
    "max_severity",
    "parse_status",
    "suppressed",
]
