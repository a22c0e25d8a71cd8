"""Typed incident records (signal, incident, closure) and their flat Redis-hash encodings.

A closure is the last closed incident of a fingerprint: the start of that fingerprint's cooldown.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fleet.errors import InvalidInput
from fleet.incidents.lifecycle import Severity, Status, max_severity
from fleet.keys import check_service_name

INCIDENT_SCHEMA = 1
"""Version of the hash layouts below; bump with a migration when they change."""

Kind = Literal[
    "performance_drop",
    "covariate_drift",
    "prediction_drift",
    "data_quality",
    "latency_regression",
    "error_rate_regression",
    "canary_fail",
    "canary_inconclusive",
    "canary_pass",
]
KINDS: tuple[Kind, ...] = get_args(Kind)
"""Every incident kind, one per detector outcome the runbooks handle."""

Evidence = dict[str, float | int | bool | str | list[float | int | str]]
"""Numbers behind a signal: statistic, threshold, window sizes, affected features, ..."""


def check_kind(kind: str) -> Kind:
    """Return ``kind`` if it is an incident kind.

    Raises:
        InvalidInput: naming the kind and the allowed ones.
    """
    if kind not in KINDS:
        raise InvalidInput(f"unknown incident kind {kind!r}; allowed: {', '.join(KINDS)}")
    return kind  # type: ignore[return-value]


def fingerprint(service: str, kind: str) -> str:
    """Return the de-duplication fingerprint of a (service, kind) pair.

    >>> fingerprint("elec", "performance_drop")
    'elec:performance_drop'
    """
    return f"{service}:{kind}"


class Signal(BaseModel):
    """One detector outcome for one service, as the monitor tick hands it to the store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str
    """Service the detector watched."""
    kind: Kind
    """What is wrong; with ``service`` it is the incident's fingerprint."""
    severity: Severity
    """How bad: ``info`` (worth recording), ``warning`` or ``critical``."""
    detector: str
    """Name of the detector that fired, e.g. ``cusum`` or ``psi``."""
    evidence: Evidence = Field(default_factory=dict)
    """Numbers behind the verdict (statistic, threshold, window sizes, affected features)."""
    onset: int | None = None
    """Estimated first event of the change, as an index into the service's event stream."""
    onset_at: float | None = None
    """Estimated time the change began (seconds since the epoch), when the detector knows it."""
    version: int | None = None
    """Model version the signal concerns (the champion, or the challenger of a canary)."""
    at: float
    """When the detector saw it (the injected clock's seconds)."""

    @field_validator("service")
    @classmethod
    def _service(cls, v: str) -> str:
        return check_service_name(v)

    @property
    def fingerprint(self) -> str:
        """The de-duplication key, ``service:kind``."""
        return fingerprint(self.service, self.kind)


class Incident(BaseModel):
    """A problem with one service, de-duplicated on (service, kind), handled by one graph thread."""

    model_config = ConfigDict(frozen=True)

    id: str
    """``inc-<service>-<kind>-<n>``, ``n`` counting the service's incidents from 1."""
    service: str
    """Service the incident is about."""
    kind: Kind
    """What is wrong (one of :data:`KINDS`)."""
    fingerprint: str
    """``service:kind``; at most one non-terminal incident per fingerprint."""
    severity: Severity
    """Highest severity of any signal so far (never lowered)."""
    status: Status = Status.OPEN
    """Where the incident is in its lifecycle (see :mod:`fleet.incidents.lifecycle`)."""
    detector: str
    """Detector of the latest signal."""
    evidence: Evidence = Field(default_factory=dict)
    """Evidence of the latest signal."""
    first_evidence: Evidence = Field(default_factory=dict)
    """Evidence of the signal that opened the incident."""
    onset: int | None = None
    """Event index where the change began, from the first signal that estimated it. Later signals
    in the same incident are re-detections after a detector reset, so their onsets are later."""
    onset_at: float | None = None
    """Time the change began, from the first signal that estimated it."""
    version: int | None = None
    """Model version the incident is about, from the first signal that named one."""
    opened_at: float
    """When the first signal opened it."""
    updated_at: float
    """Last signal, move or note."""
    closed_at: float | None = None
    """When it reached a terminal status."""
    signal_count: int = 1
    """Signals absorbed, including the opening one."""
    quiet_ticks: int = 0
    """Consecutive monitor ticks the detector has not fired since the latest signal."""
    recovered_at: float | None = None
    """When ``quiet_ticks`` reached the store's ``clear_after``; reset by a new signal."""
    thread_id: str
    """LangGraph thread handling the incident (equal to ``id``)."""
    resolution: str = ""
    """How it ended, set when it closes."""
    notes: tuple[str, ...] = ()
    """Short ``actor: text`` notes, oldest first."""

    @property
    def active(self) -> bool:
        """Whether the incident is not closed (it may still absorb signals)."""
        return not self.status.terminal

    @classmethod
    def opened_by(cls, signal: Signal, *, incident_id: str, now: float) -> Self:
        """Return a new open incident built from its first signal."""
        return cls(
            id=incident_id,
            service=signal.service,
            kind=signal.kind,
            fingerprint=signal.fingerprint,
            severity=signal.severity,
            detector=signal.detector,
            evidence=signal.evidence,
            first_evidence=signal.evidence,
            onset=signal.onset,
            onset_at=signal.onset_at,
            version=signal.version,
            opened_at=now,
            updated_at=now,
            thread_id=incident_id,
        )

    def absorb(self, signal: Signal, *, now: float) -> Self:
        """Return this incident updated by one more signal of its fingerprint."""
        return self.model_copy(
            update={
                "severity": max_severity(self.severity, signal.severity),
                "detector": signal.detector,
                "evidence": signal.evidence,
                "onset": self.onset if self.onset is not None else signal.onset,
                "onset_at": self.onset_at if self.onset_at is not None else signal.onset_at,
                "version": self.version if self.version is not None else signal.version,
                "updated_at": now,
                "signal_count": self.signal_count + 1,
                "quiet_ticks": 0,
                "recovered_at": None,
            }
        )

    def to_hash(self) -> dict[str, str]:
        """Encode as flat string fields for a Redis hash."""
        return {
            "v": str(INCIDENT_SCHEMA),
            "id": self.id,
            "service": self.service,
            "kind": self.kind,
            "fingerprint": self.fingerprint,
            "severity": self.severity,
            "status": self.status.value,
            "detector": self.detector,
            "evidence": _json(self.evidence),
            "first_evidence": _json(self.first_evidence),
            "onset": _opt(self.onset),
            "onset_at": _opt(self.onset_at),
            "version": _opt(self.version),
            "opened_at": repr(self.opened_at),
            "updated_at": repr(self.updated_at),
            "closed_at": _opt(self.closed_at),
            "signal_count": str(self.signal_count),
            "quiet_ticks": str(self.quiet_ticks),
            "recovered_at": _opt(self.recovered_at),
            "thread_id": self.thread_id,
            "resolution": self.resolution,
            "notes": _json(list(self.notes)),
        }

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Self:
        """Decode a Redis hash written by :meth:`to_hash`."""
        return cls(
            id=h["id"],
            service=h["service"],
            kind=h["kind"],  # type: ignore[arg-type]
            fingerprint=h["fingerprint"],
            severity=h["severity"],  # type: ignore[arg-type]
            status=Status(h["status"]),
            detector=h.get("detector", ""),
            evidence=json.loads(h.get("evidence") or "{}"),
            first_evidence=json.loads(h.get("first_evidence") or "{}"),
            onset=_int(h.get("onset")),
            onset_at=_float(h.get("onset_at")),
            version=_int(h.get("version")),
            opened_at=float(h["opened_at"]),
            updated_at=float(h["updated_at"]),
            closed_at=_float(h.get("closed_at")),
            signal_count=int(h.get("signal_count") or 1),
            quiet_ticks=int(h.get("quiet_ticks") or 0),
            recovered_at=_float(h.get("recovered_at")),
            thread_id=h.get("thread_id") or h["id"],
            resolution=h.get("resolution", ""),
            notes=tuple(json.loads(h.get("notes") or "[]")),
        )


class Closure(BaseModel):
    """The last closed incident of a fingerprint: what its cooldown is measured from."""

    model_config = ConfigDict(frozen=True)

    incident_id: str
    """The closed incident."""
    status: Status
    """``resolved`` or ``failed``."""
    severity: Severity
    """Peak severity of the closed incident; only a worse signal breaks the cooldown."""
    closed_at: float
    """When it closed; the cooldown runs from here."""
    suppressed: int = 0
    """Signals the cooldown has swallowed since the close (noise that re-opened nothing)."""

    def to_hash(self) -> dict[str, str]:
        """Encode as flat string fields for a Redis hash."""
        return {
            "v": str(INCIDENT_SCHEMA),
            "incident_id": self.incident_id,
            "status": self.status.value,
            "severity": self.severity,
            "closed_at": repr(self.closed_at),
            "suppressed": str(self.suppressed),
        }

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Self:
        """Decode a Redis hash written by :meth:`to_hash`."""
        return cls(
            incident_id=h["incident_id"],
            status=Status(h["status"]),
            severity=h["severity"],  # type: ignore[arg-type]
            closed_at=float(h["closed_at"]),
            suppressed=int(h.get("suppressed") or 0),
        )


def _json(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def _opt(v: float | None) -> str:
    return "" if v is None else repr(v)


def _int(v: str | None) -> int | None:
    return int(v) if v not in (None, "") else None


def _float(v: str | None) -> float | None:
    return float(v) if v not in (None, "") else None
