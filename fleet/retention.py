"""Retention: what of a closed incident is kept, for how long, and the pass that removes the rest.

Only closed (resolved or failed) incidents are ever touched: a terminal status never moves again,
so nothing races a removal. An open or escalated incident keeps every key. Checkpoints go first
(nothing reads a closed thread: ``flywheel incidents`` reads the incident hash, ``why`` the audit
stream), then, after their own windows, the incident record, its approvals and its idempotency
records. The audit stream is archived, never simply dropped (see :mod:`fleet.audit_archive`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import redis

from fleet.audit_archive import AuditArchiver
from fleet.clock import Clock, SystemClock
from fleet.keys import Keys
from fleet.leases import Leases

DAY_S = 86_400.0

# Deletes a pointer only while it still names the removed incident: a new incident of the same
# fingerprint may have taken it meanwhile (one key, so one cluster slot).
_DEL_IF_EQ = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Deletes a fingerprint's last closure only if it is this incident's and its cooldown is over.
_DEL_CLOSURE = """
if redis.call('HGET', KEYS[1], 'incident_id') ~= ARGV[1] then return 0 end
local at = tonumber(redis.call('HGET', KEYS[1], 'closed_at') or '0')
if at + tonumber(ARGV[3]) > tonumber(ARGV[2]) then return 0 end
return redis.call('DEL', KEYS[1])
"""


@dataclass(frozen=True)
class Retention:
    """How long what a closed incident leaves behind is kept (seconds of the fleet clock)."""

    checkpoint_grace_s: float = DAY_S
    """After the close, the incident's LangGraph thread (every checkpoint) is deleted."""
    incident_keep_s: float = 30 * DAY_S
    """After the close, the incident hash and its index entries are deleted."""
    approval_keep_s: float = 30 * DAY_S
    """After the close (or, with no incident record, after the decision), decided approvals and
    their pointers are deleted; a pending request is never deleted."""
    action_keep_s: float = 30 * DAY_S
    """After the close (or the record's finish), idempotency records (``act:``) are deleted."""
    audit_keep_s: float = 90 * DAY_S
    """Audit entries older than this are archived to JSON lines, then trimmed from the stream."""
    audit_archive_dir: Path | None = None
    """Where the audit archive files go; None disables archiving (and so trimming)."""
    audit_trim_unarchived: bool = False
    """With archiving disabled, trim old audit entries anyway (they are lost)."""
    interval_s: float = 3_600.0
    """How often ``flywheel run`` applies retention (real seconds)."""
    cooldown_s: float = 600.0
    """The incidents' cooldown: a fingerprint's last closure is kept at least this long."""

    def __post_init__(self) -> None:
        for name in ("checkpoint_grace_s", "incident_keep_s", "approval_keep_s",
                     "action_keep_s", "audit_keep_s", "interval_s", "cooldown_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"retention {name} must be >= 0 seconds, got "
                                 f"{getattr(self, name)!r}")

    @property
    def shortest_s(self) -> float:
        """The shortest window after a close: no incident closed more recently is touched."""
        return min(self.checkpoint_grace_s, self.incident_keep_s, self.approval_keep_s,
                   self.action_keep_s)


class CheckpointThreads(Protocol):
    """The checkpoint store as retention sees it (graphs/checkpoint_prune implements it)."""

    def key_counts(self) -> dict[str, int]:
        """Thread id -> number of Redis keys it holds, for every stored thread."""
        ...

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, write and blob of one thread."""
        ...


@dataclass
class PruneReport:
    """What one retention pass removed (or, with ``dry_run``, would remove)."""

    dry_run: bool = False
    checkpoint_threads: list[str] = field(default_factory=list)
    checkpoint_keys: int = 0
    incidents: list[str] = field(default_factory=list)
    incident_keys: int = 0
    approvals: int = 0
    approval_pointers: int = 0
    actions: int = 0
    audit_archived: int = 0
    audit_trimmed: int = 0
    audit_files: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """Counts only (for a log line)."""
        d = asdict(self)
        d["checkpoint_threads"] = len(self.checkpoint_threads)
        d["incidents"] = len(self.incidents)
        return d


@dataclass(frozen=True)
class _Closed:
    id: str
    service: str
    kind: str
    closed_at: float


class Pruner:
    """Applies a :class:`Retention` to one fleet's Redis.

    Args:
        r: a decoding Redis client.
        keys: the key layout.
        retention: the windows.
        checkpoints: the incident threads' store (None: checkpoints are left alone).
        clock: the fleet clock every window is measured with.
    """

    def __init__(self, r: redis.Redis, keys: Keys, retention: Retention, *,
                 checkpoints: CheckpointThreads | None = None, clock: Clock | None = None):
        self.r, self.keys, self.retention = r, keys, retention
        self.checkpoints = checkpoints
        self.clock = clock or SystemClock()
        self.archiver = AuditArchiver(r, keys, retention, clock=self.clock)
        self._del_if_eq = r.register_script(_DEL_IF_EQ)
        self._del_closure = r.register_script(_DEL_CLOSURE)

    def due(self, now_real: float) -> bool:
        """Whether ``interval_s`` has passed since the last pass (of any process)."""
        last = self.r.hget(self.keys.retention, "ran_at_real")
        return last is None or now_real - float(last) >= self.retention.interval_s

    def run(self, *, dry_run: bool = False, now_real: float | None = None) -> PruneReport:
        """One pass under the retention lease (another process running one: an empty report).

        Args:
            dry_run: count what would go, delete nothing, archive nothing.
            now_real: real time of the pass, recorded for :meth:`due`.
        """
        rep = PruneReport(dry_run=dry_run)
        leases = Leases(self.r)
        with leases.hold(self.keys.retention_lock, 600.0, keepalive=True) as mine:
            if not mine:
                rep.errors.append("another process is applying retention now")
                return rep
            if not dry_run:
                # Stamped first: a pass that fails is not retried until the next interval.
                self.r.hset(self.keys.retention, mapping={
                    "ran_at": repr(self.clock.now()),
                    "ran_at_real": repr(now_real if now_real is not None else _real_now())})
            self._incidents(rep, dry_run)
            self._orphans(rep, dry_run)
            self.archiver.run(rep, dry_run=dry_run)
            if not dry_run:
                self.r.hset(self.keys.retention, "last", json.dumps(rep.summary(), default=str))
        return rep

    # --- closed incidents ---------------------------------------------------------------
    def _closed(self) -> tuple[list[_Closed], list[str]]:
        """Closed incidents old enough for a window, and index entries whose record is gone.

        Only incidents opened before the shortest window can qualify (closed_at >= opened_at).
        """
        now = self.clock.now()
        ids = self.r.zrangebyscore(self.keys.incidents_all, "-inf",
                                   repr(now - self.retention.shortest_s))
        with self.r.pipeline(transaction=False) as pipe:
            for iid in ids:
                pipe.hmget(self.keys.incident(iid), ["status", "closed_at", "service", "kind"])
            rows = pipe.execute()
        out, stale = [], []
        for iid, (status, closed_at, service, kind) in zip(ids, rows, strict=True):
            if status is None:
                # Opening writes the record and the index entry in one MULTI, so an entry without
                # a record is what a removal that died before its last step left behind.
                stale.append(iid)
            elif status in ("resolved", "failed") and closed_at:
                out.append(_Closed(iid, service or "", kind or "", float(closed_at)))
        return out, stale

    def _incidents(self, rep: PruneReport, dry_run: bool) -> None:
        now, ret = self.clock.now(), self.retention
        closed, stale = self._closed()
        if stale and not dry_run:
            self.r.zrem(self.keys.incidents_all, *stale)
        threads = self.checkpoints.key_counts() if self.checkpoints is not None else {}
        by_incident = self._incident_refs()
        for inc in closed:
            age = now - inc.closed_at
            if age > ret.checkpoint_grace_s and inc.id in threads:
                self._drop_thread(rep, inc.id, threads[inc.id], dry_run)
            if age > ret.approval_keep_s:
                self._drop_approvals(rep, by_incident.approvals.get(inc.id, []),
                                     by_incident.pointers.get(inc.id, []), dry_run)
            if age > ret.action_keep_s:
                self._drop_actions(rep, by_incident.actions.get(inc.id, []), dry_run)
            if age > ret.incident_keep_s:
                self._drop_incident(rep, inc, dry_run)
        # Threads named like incidents whose record is gone (a pass that died half-way).
        for tid, n in threads.items():
            if tid.startswith("inc-") and tid not in rep.checkpoint_threads \
                    and not self.r.exists(self.keys.incident(tid)):
                self._drop_thread(rep, tid, n, dry_run)

    def _drop_thread(self, rep: PruneReport, tid: str, n: int, dry_run: bool) -> None:
        if not dry_run and self.checkpoints is not None:
            self.checkpoints.delete_thread(tid)
        rep.checkpoint_threads.append(tid)
        rep.checkpoint_keys += n

    def _drop_incident(self, rep: PruneReport, inc: _Closed, dry_run: bool) -> None:
        rep.incidents.append(inc.id)
        rep.incident_keys += 1
        if dry_run:
            return
        k = self.keys
        # One key per command (each key may live in its own cluster slot). The fleet index goes
        # last: a pass that dies half-way finds the incident again (or its stale entry) next time.
        if inc.service:
            self.r.zrem(k.incidents_of(inc.service), inc.id)
        self.r.srem(k.incidents_open, inc.id)
        if inc.service and inc.kind:
            self._del_if_eq(keys=[k.incident_fingerprint(inc.service, inc.kind)], args=[inc.id])
            self._del_closure(keys=[k.incident_closed(inc.service, inc.kind)],
                              args=[inc.id, repr(self.clock.now()),
                                    repr(self.retention.cooldown_s)])
        self.r.delete(k.incident(inc.id))
        self.r.zrem(k.incidents_all, inc.id)

    # --- approvals and idempotency records ----------------------------------------------
    def _incident_refs(self) -> _Refs:
        """Every approval record, pointer and idempotency record, grouped by incident."""
        refs = _Refs()
        approvals: list[str] = []
        for key in self._scan(self.keys.approval_scan()):
            inc = self.keys.approval_pointer_incident(key)
            if inc is not None:
                refs.pointers.setdefault(inc, []).append(key)
            else:
                approvals.append(key)
        for key, (raw_req, raw_dec) in zip(approvals, self._hmget(approvals, ["request",
                                                                              "decision"]),
                                           strict=True):
            if raw_req is None:
                continue  # not an approval record
            req = json.loads(raw_req)
            dec = json.loads(raw_dec) if raw_dec else None
            refs.approvals.setdefault(req["incident"], []).append(
                _Approval(key, req["id"], req["incident"], dec["decided_at"] if dec else None))
        acts = list(self._scan(self.keys.action_scan()))
        for key, (inc, state, finished) in zip(
                acts, self._hmget(acts, ["incident", "state", "finished_at"]), strict=True):
            if inc is not None:
                refs.actions.setdefault(inc, []).append(
                    _Action(key, state or "", float(finished) if finished else None))
        return refs

    def _drop_approvals(self, rep: PruneReport, approvals: list[_Approval],
                        pointers: list[str], dry_run: bool) -> None:
        decided = [a for a in approvals if a.decided_at is not None]
        if len(decided) < len(approvals):
            return  # a request still pending: keep the incident's approvals together
        rep.approvals += len(decided)
        rep.approval_pointers += len(pointers)
        if dry_run:
            return
        for a in decided:
            self.r.zrem(self.keys.approvals_pending, a.id)
        for key in [*pointers, *(a.key for a in decided)]:
            self.r.delete(key)

    def _drop_actions(self, rep: PruneReport, actions: list[_Action], dry_run: bool) -> None:
        gone = [a.key for a in actions if a.state != "running"]
        rep.actions += len(gone)
        if gone and not dry_run:
            for key in gone:
                self.r.delete(key)

    def _orphans(self, rep: PruneReport, dry_run: bool) -> None:
        """Approvals and records of incidents (or chat sessions) that have no record any more."""
        now, ret = self.clock.now(), self.retention
        refs = self._incident_refs()
        owners = set(refs.approvals) | set(refs.actions) | set(refs.pointers)
        owners = {o for o in owners if not self.r.exists(self.keys.incident(o))}
        for owner in sorted(owners):
            approvals = refs.approvals.get(owner, [])
            if all(a.decided_at is not None and now - a.decided_at > ret.approval_keep_s
                   for a in approvals):
                self._drop_approvals(rep, approvals, refs.pointers.get(owner, []), dry_run)
            old = [a for a in refs.actions.get(owner, [])
                   if a.finished is not None and now - a.finished > ret.action_keep_s]
            self._drop_actions(rep, old, dry_run)

    def _scan(self, pattern: str) -> Iterator[str]:
        yield from self.r.scan_iter(match=pattern, count=1000)

    def _hmget(self, keys: list[str], fields: list[str]) -> list[list[str | None]]:
        with self.r.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, fields)
            return pipe.execute() if keys else []


@dataclass(frozen=True)
class _Approval:
    key: str
    id: str
    incident: str
    decided_at: float | None


@dataclass(frozen=True)
class _Action:
    key: str
    state: str
    finished: float | None


@dataclass
class _Refs:
    approvals: dict[str, list[_Approval]] = field(default_factory=dict)
    pointers: dict[str, list[str]] = field(default_factory=dict)
    actions: dict[str, list[_Action]] = field(default_factory=dict)


def _real_now() -> float:
    import time

    return time.time()
