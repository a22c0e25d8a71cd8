"""The incidents' Redis edge: signals de-duplicated into incidents, lifecycle moves, notes, queries.

Every change is one optimistic transaction (WATCH the fingerprint and incident keys, read, decide
in pure code, MULTI/EXEC) that also appends its audit entry, so two monitor processes can never open
two incidents for one fingerprint and the audit trail never disagrees with the state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import redis
from redis.client import Pipeline

from fleet.audit import Audit
from fleet.clock import Clock, SystemClock
from fleet.errors import InvalidInput, UnknownIncident, WriteConflict
from fleet.ids import check_incident_id
from fleet.incidents.lifecycle import Status, check_transition, parse_status, suppressed
from fleet.incidents.records import Closure, Incident, Signal, check_kind
from fleet.keys import Keys

DEFAULT_COOLDOWN_S = 600.0
"""Seconds after an incident closes during which its fingerprint's noise re-opens nothing."""
DEFAULT_CLEAR_AFTER = 3
"""Consecutive quiet monitor ticks after which an open incident is marked recovered."""
MAX_NOTES = 100
"""Notes kept on an incident (oldest dropped first; the audit stream keeps them all)."""
NOTE_MAX_CHARS = 500
"""Characters of a note kept on the incident (the audit stream keeps the full text)."""
_ATTEMPTS = 100
"""Optimistic retries before a write gives up; each failed one means another writer succeeded."""

T = TypeVar("T")


class IncidentStore:
    """Opens, updates, moves and reads incidents in Redis.

    Args:
        r: a client with ``decode_responses=True``.
        keys: the key layout.
        clock: the time source for every timestamp and the cooldown (simulated in evals).
        audit: where every open, severity change, move and note is recorded.
        cooldown_s: hysteresis after a close; see :func:`fleet.incidents.lifecycle.suppressed`.
        clear_after: quiet ticks after which :meth:`clear` marks an incident recovered.
    """

    def __init__(
        self,
        r: redis.Redis,
        keys: Keys,
        clock: Clock | None = None,
        audit: Audit | None = None,
        *,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        clear_after: int = DEFAULT_CLEAR_AFTER,
    ):
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must be >= 0 seconds, got {cooldown_s!r}")
        if clear_after < 1:
            raise ValueError(f"clear_after must be >= 1 tick, got {clear_after!r}")
        self.r = r
        self.keys = keys
        self.clock = clock or SystemClock()
        self.audit = audit or Audit(r, keys, self.clock)
        self.cooldown_s = cooldown_s
        self.clear_after = clear_after

    # --- signals -------------------------------------------------------------------
    def observe(self, signal: Signal) -> Incident | None:
        """Fold one detector signal into the incidents.

        If the signal's fingerprint (service, kind) has a non-terminal incident, that incident
        absorbs it: latest evidence, ``signal_count + 1``, severity raised to the worst seen,
        ``quiet_ticks`` back to 0. Otherwise a new incident opens, unless the fingerprint is in
        its cooldown and the signal is no worse than the closed incident's peak severity.

        Returns:
            The opened or updated incident, or ``None`` when the cooldown swallowed the signal
            (counted in :meth:`last_closed`'s ``suppressed``).
        """
        return self._atomic(
            lambda pipe: self._observe(pipe, signal),
            self.keys.incident_fingerprint(signal.service, signal.kind),
            self.keys.incident_closed(signal.service, signal.kind),
        )

    def clear(self, service: str, kind: str) -> Incident | None:
        """Record that the detector of (service, kind) did not fire on this tick.

        Counts consecutive quiet ticks on the fingerprint's open incident and, when they reach
        ``clear_after``, marks it recovered (``recovered_at``, audit ``incident.recovered``). It
        never resolves the incident: agents may be acting on it, so the graph decides from
        ``quiet_ticks``. Without an open incident this is one cheap read, but a monitor with many
        services should call it only for the fingerprints of :meth:`open_incidents`.

        Returns:
            The updated incident, or ``None`` if the fingerprint has no open incident.
        """
        check_kind(kind)
        fp_key = self.keys.incident_fingerprint(service, kind)
        if not self.r.exists(fp_key):
            return None
        return self._atomic(lambda pipe: self._clear(pipe, service, kind), fp_key)

    # --- lifecycle and notes -------------------------------------------------------
    def transition(
        self,
        incident_id: str,
        status: Status | str,
        *,
        actor: str,
        reason: str,
        resolution: str | None = None,
    ) -> Incident:
        """Move an incident to ``status`` if its lifecycle allows it.

        Moving to the current status is a no-op with no audit entry, because graph nodes re-run
        on resume (DESIGN §7). A terminal status (resolved, failed) records ``closed_at``, drops
        the incident from the open set and starts its fingerprint's cooldown.

        Args:
            incident_id: the incident.
            status: the next status.
            actor: who moves it, e.g. ``agent:supervisor`` or ``human:alice``.
            reason: why, in one line (goes to the audit stream).
            resolution: how it ended; on a terminal move it defaults to ``reason``.

        Raises:
            UnknownIncident: no incident has that id.
            InvalidInput: ``status`` is not a status.
            IllegalTransition: naming the current status and the allowed next ones.
        """
        check_incident_id(incident_id)
        target = parse_status(status)
        return self._atomic(
            lambda pipe: self._transition(pipe, incident_id, target, actor, reason, resolution),
            self.keys.incident(incident_id),
        )

    def add_note(self, incident_id: str, text: str, *, actor: str) -> Incident:
        """Append a short ``actor: text`` note (closed incidents take notes too, for post-mortems).

        Notes longer than ``NOTE_MAX_CHARS`` are cut on the incident; the audit entry keeps the
        full text.

        Raises:
            UnknownIncident: no incident has that id.
            InvalidInput: the text is blank.
        """
        check_incident_id(incident_id)
        text = text.strip()
        if not text:
            raise InvalidInput(f"note for incident {incident_id!r} is empty; write one short line")

        def txn(pipe: Pipeline) -> Incident:
            cur = self._load(pipe, incident_id)
            notes = (*cur.notes, f"{actor}: {text[:NOTE_MAX_CHARS]}")[-MAX_NOTES:]
            new = cur.model_copy(update={"notes": notes, "updated_at": self.clock.now()})
            pipe.multi()
            pipe.hset(self.keys.incident(incident_id), mapping=new.to_hash())
            self.audit.add_to(
                pipe, actor, "incident.note", service=cur.service, reason="note added",
                incident=incident_id, text=text,
            )
            pipe.execute()
            return new

        return self._atomic(txn, self.keys.incident(incident_id))

    # --- reads ---------------------------------------------------------------------
    def get(self, incident_id: str) -> Incident:
        """Return one incident.

        Raises:
            UnknownIncident: no incident has that id.
        """
        h = self.r.hgetall(self.keys.incident(check_incident_id(incident_id)))
        if not h:
            raise UnknownIncident(incident_id)
        return Incident.from_hash(h)

    def open_for(self, service: str, kind: str) -> Incident | None:
        """Return the non-terminal incident of a fingerprint, if there is one."""
        iid = self.r.get(self.keys.incident_fingerprint(service, check_kind(kind)))
        found = self._many([iid]) if iid else []
        return found[0] if found and found[0].active else None

    def last_closed(self, service: str, kind: str) -> Closure | None:
        """Return the fingerprint's last closure (its cooldown's start), if it ever closed one."""
        h = self.r.hgetall(self.keys.incident_closed(service, check_kind(kind)))
        return Closure.from_hash(h) if h else None

    def open_incidents(self, service: str | None = None) -> list[Incident]:
        """Non-terminal incidents (escalated included), oldest first, optionally of one service."""
        found = self._many(sorted(self.r.smembers(self.keys.incidents_open)))
        return sorted(
            (i for i in found if service is None or i.service == service),
            key=lambda i: (i.opened_at, i.id),
        )

    def recent(self, limit: int = 20, service: str | None = None) -> list[Incident]:
        """The ``limit`` most recently opened incidents, newest first, optionally of one service."""
        if limit <= 0:
            return []
        index = self.keys.incidents_all if service is None else self.keys.incidents_of(service)
        return self._many(self.r.zrevrange(index, 0, limit - 1))

    def history(self, service: str, kind: str | None = None, *, limit: int = 100) -> list[Incident]:
        """A service's incidents, newest first, optionally of one kind only."""
        if kind is None:
            return self.recent(limit, service)
        check_kind(kind)
        out: list[Incident] = []
        page, start = 200, 0
        index = self.keys.incidents_of(service)
        while len(out) < limit:
            ids = self.r.zrevrange(index, start, start + page - 1)
            out += [i for i in self._many(ids) if i.kind == kind]
            if len(ids) < page:
                break
            start += page
        return out[:limit]

    # --- transactions --------------------------------------------------------------
    def _atomic(self, fn: Callable[[Pipeline], T], *watch: str) -> T:
        """Run ``fn`` (reads, then MULTI/EXEC) with ``watch`` watched, retrying lost races."""
        for _ in range(_ATTEMPTS):
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(*watch)
                    return fn(pipe)
                except redis.WatchError:
                    continue
        raise WriteConflict(
            f"gave up changing {watch[0]!r} after {_ATTEMPTS} attempts: other writers changed it "
            "first every time. Retry the call, and check that no process rewrites it in a loop."
        )

    def _observe(self, pipe: Pipeline, signal: Signal) -> Incident | None:
        now = self.clock.now()
        current = self._pointed(pipe, signal.service, signal.kind)
        if current is not None:
            return self._absorb(pipe, current, signal, now)
        closed_key = self.keys.incident_closed(signal.service, signal.kind)
        h = pipe.hgetall(closed_key)
        closure = Closure.from_hash(h) if h else None
        if closure is not None and suppressed(
            signal.severity, closed_severity=closure.severity, closed_at=closure.closed_at,
            now=now, cooldown_s=self.cooldown_s,
        ):
            pipe.multi()
            pipe.hincrby(closed_key, "suppressed", 1)
            pipe.execute()
            return None
        return self._open(pipe, signal, now)

    def _open(self, pipe: Pipeline, signal: Signal, now: float) -> Incident:
        svc = signal.service
        seq_key = self.keys.incident_seq(svc)
        # Watched too, so two kinds of one service opening at once cannot take the same number.
        pipe.watch(seq_key)
        n = int(pipe.get(seq_key) or 0) + 1
        inc = Incident.opened_by(signal, incident_id=f"inc-{svc}-{signal.kind}-{n}", now=now)
        pipe.multi()
        pipe.set(seq_key, n)
        pipe.hset(self.keys.incident(inc.id), mapping=inc.to_hash())
        pipe.set(self.keys.incident_fingerprint(svc, signal.kind), inc.id)
        pipe.sadd(self.keys.incidents_open, inc.id)
        pipe.zadd(self.keys.incidents_all, {inc.id: now})
        pipe.zadd(self.keys.incidents_of(svc), {inc.id: now})
        self.audit.add_to(
            pipe, f"detector:{signal.detector}", "incident.open", service=svc,
            reason=f"{signal.detector} raised {signal.severity} {signal.kind}",
            incident=inc.id, kind=signal.kind, severity=signal.severity,
            evidence=signal.evidence, onset=signal.onset, version=signal.version,
            signal_at=signal.at,
        )
        pipe.execute()
        return inc

    def _absorb(self, pipe: Pipeline, cur: Incident, signal: Signal, now: float) -> Incident:
        new = cur.absorb(signal, now=now)
        pipe.multi()
        pipe.hset(self.keys.incident(cur.id), mapping=new.to_hash())
        # Repeats of the same news stay out of the audit stream; a worse severity or a relapse
        # after recovery is a change someone reading the trail needs to see.
        if new.severity != cur.severity or cur.recovered_at is not None:
            why = (
                f"severity {cur.severity} -> {new.severity}"
                if new.severity != cur.severity
                else f"detector fired again after {cur.quiet_ticks} quiet ticks"
            )
            self.audit.add_to(
                pipe, f"detector:{signal.detector}", "incident.update", service=cur.service,
                reason=why, incident=cur.id, severity=new.severity,
                signal_count=new.signal_count, evidence=signal.evidence,
            )
        pipe.execute()
        return new

    def _clear(self, pipe: Pipeline, service: str, kind: str) -> Incident | None:
        cur = self._pointed(pipe, service, kind)
        if cur is None:
            return None
        ticks = cur.quiet_ticks + 1
        recovered = cur.recovered_at is None and ticks >= self.clear_after
        new = cur.model_copy(
            update={
                "quiet_ticks": ticks,
                "recovered_at": self.clock.now() if recovered else cur.recovered_at,
            }
        )
        pipe.multi()
        pipe.hset(self.keys.incident(cur.id), mapping=new.to_hash())
        if recovered:
            self.audit.add_to(
                pipe, "monitor", "incident.recovered", service=service,
                reason=f"detector quiet for {ticks} ticks", incident=cur.id,
                status=cur.status.value,
            )
        pipe.execute()
        return new

    def _transition(
        self,
        pipe: Pipeline,
        incident_id: str,
        target: Status,
        actor: str,
        reason: str,
        resolution: str | None,
    ) -> Incident:
        cur = self._load(pipe, incident_id)
        if cur.status == target:
            return cur
        check_transition(cur.status, target, incident_id=incident_id)
        now = self.clock.now()
        update: dict[str, object] = {"status": target, "updated_at": now}
        if resolution is not None or target.terminal:
            update["resolution"] = reason if resolution is None else resolution
        if target.terminal:
            update["closed_at"] = now
        new = cur.model_copy(update=update)
        pointed = None
        if target.terminal:
            fp_key = self.keys.incident_fingerprint(cur.service, cur.kind)
            pipe.watch(fp_key)
            pointed = pipe.get(fp_key)
        pipe.multi()
        pipe.hset(self.keys.incident(incident_id), mapping=new.to_hash())
        if target.terminal:
            self._close(pipe, new, owns_fingerprint=pointed == incident_id)
        self.audit.add_to(
            pipe, actor, "incident.transition", service=cur.service, reason=reason,
            incident=incident_id, previous=cur.status.value, status=target.value,
            resolution=new.resolution,
        )
        pipe.execute()
        return new

    def _close(self, pipe: Pipeline, inc: Incident, *, owns_fingerprint: bool) -> None:
        """Queue the writes that close ``inc`` and start its fingerprint's cooldown."""
        pipe.srem(self.keys.incidents_open, inc.id)
        if owns_fingerprint:
            pipe.delete(self.keys.incident_fingerprint(inc.service, inc.kind))
        closure = Closure(
            incident_id=inc.id, status=inc.status, severity=inc.severity,
            closed_at=inc.closed_at if inc.closed_at is not None else self.clock.now(),
        )
        pipe.hset(self.keys.incident_closed(inc.service, inc.kind), mapping=closure.to_hash())

    # --- helpers -------------------------------------------------------------------
    def _pointed(self, pipe: Pipeline, service: str, kind: str) -> Incident | None:
        """Return the fingerprint's open incident, watching its key; the fingerprint is watched."""
        iid = pipe.get(self.keys.incident_fingerprint(service, kind))
        if not iid:
            return None
        pipe.watch(self.keys.incident(iid))
        h = pipe.hgetall(self.keys.incident(iid))
        # A pointer to a missing or closed incident is stale; the caller's open overwrites it.
        if not h:
            return None
        inc = Incident.from_hash(h)
        return inc if inc.active else None

    def _load(self, pipe: Pipeline, incident_id: str) -> Incident:
        h = pipe.hgetall(self.keys.incident(incident_id))
        if not h:
            raise UnknownIncident(incident_id)
        return Incident.from_hash(h)

    def _many(self, ids: Iterable[str]) -> list[Incident]:
        """Load incidents by id in one round trip, in the order given, skipping missing ones."""
        with self.r.pipeline(transaction=False) as pipe:
            for iid in ids:
                pipe.hgetall(self.keys.incident(iid))
            rows = pipe.execute()
        return [Incident.from_hash(h) for h in rows if h]
