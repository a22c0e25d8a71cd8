"""The audit trail: one append-only Redis stream of every change, who/what/why/when."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import redis

from fleet.audit_outbox import AuditOutbox
from fleet.clock import Clock, SystemClock
from fleet.keys import Keys
from fleet.store import is_cluster


@dataclass(frozen=True)
class AuditEntry:
    """One audit record as read back from the stream."""

    id: str
    """Redis stream id (monotonic)."""
    ts: float
    """When it happened (the injected clock's seconds)."""
    actor: str
    """Who or what did it: ``agent:deployment``, ``human:alice``, ``system``."""
    action: str
    """What was done, dotted: ``registry.promote``, ``incident.open``."""
    service: str
    """Service it concerns ('' for fleet-wide)."""
    reason: str
    """Why, in one line."""
    details: dict[str, Any] = field(default_factory=dict)
    """Structured extras (version numbers, digests, evidence)."""


class Audit:
    """Appends to and reads the audit stream. Entries are never edited or deleted.

    Args:
        r: a decoding Redis client.
        keys: the key layout.
        clock: stamps entries.
        context: details added to every entry this process writes, e.g. the CLI's
            ``{"os_user": ...}`` beside the self-declared ``--user``.
    """

    def __init__(self, r: redis.Redis, keys: Keys, clock: Clock | None = None,
                 context: Mapping[str, str] | None = None):
        self.r = r
        self.keys = keys
        self.clock = clock or SystemClock()
        self.context = dict(context or {})

    def fields(
        self, actor: str, action: str, *, service: str = "", reason: str = "", **details: Any
    ) -> dict[str, str]:
        """Return the stream fields of one entry (to add inside a caller's pipeline)."""
        return {
            "ts": repr(self.clock.now()),
            "actor": actor,
            "action": action,
            "service": service,
            "reason": reason,
            "details": json.dumps({**self.context, **details}, sort_keys=True, default=str),
        }

    def record(
        self, actor: str, action: str, *, service: str = "", reason: str = "", **details: Any
    ) -> str:
        """Append one entry and return its stream id."""
        return str(
            self.r.xadd(
                self.keys.audit,
                self.fields(actor, action, service=service, reason=reason, **details),
            )
        )

    def add_to(
        self,
        pipe: redis.client.Pipeline,
        actor: str,
        action: str,
        *,
        service: str = "",
        reason: str = "",
        **details: Any,
    ) -> None:
        """Queue one entry on ``pipe`` so it commits atomically with the change it describes."""
        pipe.xadd(
            self.keys.audit, self.fields(actor, action, service=service, reason=reason, **details)
        )

    def read(
        self, *, service: str | None = None, action_prefix: str = "", count: int = 100
    ) -> list[AuditEntry]:
        """Return the most recent entries, newest last, optionally filtered.

        Args:
            service: only entries about this service.
            action_prefix: only actions starting with this, e.g. ``"registry."``.
            count: at most this many entries (filters apply to the last ``count * 20`` scanned).
        """
        scan = count if service is None and not action_prefix else count * 20
        raw = self.r.xrevrange(self.keys.audit, count=scan)
        out: list[AuditEntry] = []
        for sid, f in raw:
            if service is not None and f.get("service") != service:
                continue
            if action_prefix and not f.get("action", "").startswith(action_prefix):
                continue
            out.append(_entry(sid, f))
            if len(out) >= count:
                break
        out.reverse()
        return out

    def last_id(self) -> str:
        """Id of the newest entry (``0-0`` when the stream is empty): a cursor for :meth:`after`."""
        newest = self.r.xrevrange(self.keys.audit, count=1)
        return str(newest[0][0]) if newest else "0-0"

    def after(self, cursor: str, *, count: int = 500) -> list[AuditEntry]:
        """Up to ``count`` entries written after stream id ``cursor``, oldest first."""
        # XREAD (not XRANGE with an exclusive "(" bound, which needs Redis 6.2) without BLOCK.
        found = self.r.xread({self.keys.audit: cursor}, count=count)
        return [_entry(sid, f) for _key, batch in found for sid, f in batch]

    def add_after(
        self,
        pipe: Any,
        actor: str,
        action: str,
        *,
        service: str = "",
        reason: str = "",
        **details: Any,
    ) -> Callable[[], object]:
        """Queue the entry of a change to a SERVICE's keys; call what it returns after EXEC.

        On one Redis the entry commits in ``pipe`` with the change (as :meth:`add_to`) and the
        returned call does nothing. On a Redis Cluster the audit stream lives in the fleet slot,
        the service's keys in the service's slot, and one MULTI cannot span two slots: the
        entry commits with the change in the service's outbox, and the returned call moves it
        to the audit stream (exactly once, even after a crash; see fleet/audit_outbox).
        """
        entry = self.fields(actor, action, service=service, reason=reason, **details)
        if not is_cluster(pipe):
            pipe.xadd(self.keys.audit, entry)
            return lambda: None
        if not service:
            raise ValueError("add_after is for a change to a service's keys: name the service")
        self.outbox.queue(pipe, service, entry)
        return lambda: self.outbox.drain(service)

    @cached_property
    def outbox(self) -> AuditOutbox:
        """The services' audit outboxes (used on a Redis Cluster only)."""
        return AuditOutbox(self.r, self.keys)


def _entry(sid: str, f: dict[str, str]) -> AuditEntry:
    return AuditEntry(
        id=sid,
        ts=float(f.get("ts", 0)),
        actor=f.get("actor", ""),
        action=f.get("action", ""),
        service=f.get("service", ""),
        reason=f.get("reason", ""),
        details=json.loads(f.get("details") or "{}"),
    )
