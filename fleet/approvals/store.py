"""The approvals' Redis edge: create requests once, decide them once, expire the overdue ones.

Each request lives in ``keys.approval(id)`` as two fields: ``request`` (written once, never
changed) and ``decision`` (written once: the first decision wins). Creating, deciding and expiring
are Lua scripts that also append the audit entry, so the audit trail and the record never
disagree. No channel code here: Slack, the CLI and the HTTP API call :meth:`ApprovalStore.decide`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import redis
from pydantic import ValidationError

from fleet.actions.spec import ActionContext, ActionSpec, iso_time
from fleet.approvals.records import ApprovalDecision, ApprovalRequest, EvidenceValue, Risk
from fleet.audit import Audit
from fleet.clock import Clock, SystemClock
from fleet.errors import (
    AlreadyDecided,
    InvalidInput,
    PolicyViolation,
    UnknownApproval,
    WriteConflict,
)
from fleet.ids import check_approval_id
from fleet.keys import Keys
from fleet.schema import Policy

APPROVAL_SCHEMA = 1
"""Version of the record layout; bump with a migration when it changes."""
EXPIRED_BY = "system:expiry"
"""The ``by`` of a decision the system made because nobody decided in time."""
MACHINE_IDENTITIES = ("agent:", "system:", "detector:")
"""Prefixes of the identities automation acts under; none of them may decide an approval, even
if a policy lists it as an approver by mistake (an approval is a person's decision)."""

# KEYS: open pointer, approval hash, pending zset, audit stream.
# ARGV: id, request JSON, expires_at, schema version, audit field/value pairs...
_CREATE = """
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {-1, ARGV[1]} end
redis.call('HSET', KEYS[2], 'v', ARGV[4], 'request', ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('XADD', KEYS[4], '*', unpack(ARGV, 5))
return {1, ARGV[1]}
"""

# KEYS: approval hash, pending zset, open pointer, audit stream.
# ARGV: id, decision JSON, "1" to drop the open pointer (expiry only), audit field/value pairs...
# A person's decision keeps the pointer, so asking again for the same action in the same incident
# (as a resumed tool does) gets the decided request back: an approval is reusable, a rejection
# stands.
_DECIDE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, ''} end
local cur = redis.call('HGET', KEYS[1], 'decision')
if cur then return {0, cur} end
redis.call('HSET', KEYS[1], 'decision', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[3] == '1' and redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
redis.call('XADD', KEYS[4], '*', unpack(ARGV, 4))
return {1, ''}
"""


def _new_id() -> str:
    return f"apr-{uuid.uuid4().hex[:12]}"


class ApprovalStore:
    """Creates, reads, decides and expires approval requests.

    Args:
        r: a decoding Redis client.
        keys: the key layout.
        clock: stamps and expires requests (simulated time in evals).
        audit: where every create, decide and expire is recorded.
        new_id: makes request ids (override for deterministic evals).
    """

    def __init__(
        self,
        r: redis.Redis,
        keys: Keys,
        clock: Clock | None = None,
        audit: Audit | None = None,
        *,
        new_id: Callable[[], str] = _new_id,
    ):
        self.r = r
        self.keys = keys
        self.clock = clock or SystemClock()
        self.audit = audit or Audit(r, keys, self.clock)
        self.new_id = new_id
        self._create = r.register_script(_CREATE)
        self._decide = r.register_script(_DECIDE)

    # --- create ---------------------------------------------------------------------------
    def request(
        self,
        action: ActionSpec,
        ctx: ActionContext,
        policy: Policy,
        *,
        risk: Risk = "medium",
        evidence: Mapping[str, EvidenceValue] | None = None,
    ) -> ApprovalRequest:
        """Ask for a decision on ``action``; return the pending request.

        Asking again for the same action in the same incident returns the request already made
        (pending or decided by a person), not a second one; only an expired request is replaced.
        The same ``ctx.step`` asking again (a tool call re-run when its thread resumes) always gets
        its own request back, even an expired one, so the thread sees that denial instead of
        a fresh request nobody waits on.
        Its approvers and time to decide come from ``policy`` (``approvers``, ``approval_ttl_s``).

        Raises:
            InvalidInput: the evidence is too large or not numbers and short strings.
        """
        step_key = (self.keys.approval_step(ctx.incident, ctx.step, action.digest)
                    if ctx.step else None)
        if step_key is not None:
            mine = self.r.get(step_key)
            if mine is not None:
                try:
                    return self.get(mine)
                except UnknownApproval:
                    pass  # deleted by hand: ask afresh
        for _ in range(5):
            existing = self._open_request(ctx.incident, action.digest)
            if existing is not None:
                if step_key is not None:
                    self.r.set(step_key, existing.id)
                return existing
            req = self._build(action, ctx, policy, risk, evidence)
            fields = self.audit.fields(
                ctx.actor, "approval.request", service=action.service, reason=ctx.reason,
                approval_id=req.id, incident=ctx.incident, kind=action.name,
                args=action.args, digest=req.action_digest, risk=risk,
                approvers=list(req.approvers), expires_at=req.expires_at,
            )
            code, _ = self._create(
                keys=[self.keys.approval_open(ctx.incident, action.digest),
                      self.keys.approval(req.id), self.keys.approvals_pending, self.keys.audit],
                args=[req.id, req.model_dump_json(), repr(req.expires_at), APPROVAL_SCHEMA,
                      *_flat(fields)],
            )
            if int(code) == 1:
                if step_key is not None:
                    self.r.set(step_key, req.id)
                return req
            # 0: another caller created one first; -1: id collision. Either way, look again.
        raise WriteConflict(
            f"could not create an approval request for {action.describe()} in incident "
            f"{ctx.incident!r} after 5 attempts; retry"
        )

    def _open_request(self, incident: str, digest: str) -> ApprovalRequest | None:
        """The pending request of ``incident`` for ``digest``; an overdue one is expired first."""
        rid = self.r.get(self.keys.approval_open(incident, digest))
        if rid is None:
            return None
        try:
            req = self.get(rid)
        except UnknownApproval:
            self.r.delete(self.keys.approval_open(incident, digest))  # dangling pointer
            return None
        if req.expired(self.clock.now()) and self.decision(rid) is None:
            self._expire(req)  # auto-deny it, then the caller creates a fresh request
            return None
        return req

    def _build(
        self,
        action: ActionSpec,
        ctx: ActionContext,
        policy: Policy,
        risk: Risk,
        evidence: Mapping[str, EvidenceValue] | None,
    ) -> ApprovalRequest:
        now = self.clock.now()
        try:
            return ApprovalRequest(
                id=self.new_id(), incident=ctx.incident, thread_id=ctx.thread_id,
                interrupt_id=ctx.interrupt_id, action=action, action_digest=action.digest,
                risk=risk, rationale=ctx.reason, evidence=dict(evidence or {}),
                requested_by=ctx.actor, created_at=now, expires_at=now + policy.approval_ttl_s,
                approvers=tuple(policy.approvers),
            )
        except ValidationError as exc:
            raise InvalidInput(f"approval request for {action.describe()}: {exc}") from exc

    # --- read -----------------------------------------------------------------------------
    def get(self, approval_id: str) -> ApprovalRequest:
        """Return one request.

        Raises:
            UnknownApproval: no request has that id.
            InvalidId: ``approval_id`` is not of the form of one.
        """
        raw = self.r.hget(self.keys.approval(check_approval_id(approval_id)), "request")
        if raw is None:
            raise UnknownApproval(approval_id)
        return ApprovalRequest.model_validate_json(raw)

    def decision(self, approval_id: str) -> ApprovalDecision | None:
        """The decision on a request, or None while it is pending.

        Raises:
            UnknownApproval: no request has that id.
        """
        key = self.keys.approval(check_approval_id(approval_id))
        raw_req, raw = self.r.hmget(key, ["request", "decision"])
        if raw_req is None:
            raise UnknownApproval(approval_id)
        return ApprovalDecision.model_validate_json(raw) if raw else None

    def pending(self) -> list[ApprovalRequest]:
        """Requests still open for a decision, soonest expiry first (overdue ones excluded)."""
        ids = self.r.zrangebyscore(self.keys.approvals_pending, f"({self.clock.now()!r}", "+inf")
        if not ids:
            return []
        with self.r.pipeline(transaction=False) as pipe:
            for rid in ids:
                pipe.hmget(self.keys.approval(rid), ["request", "decision"])
            rows = pipe.execute()
        return [ApprovalRequest.model_validate_json(q) for q, d in rows if q and not d]

    # --- decide ---------------------------------------------------------------------------
    def decide(
        self, approval_id: str, *, approve: bool, by: str, reason: str, digest: str
    ) -> ApprovalDecision:
        """Record a person's decision; the first decision on a request wins.

        Args:
            approval_id: the request.
            approve: True to approve, False to reject.
            by: who decides; must be one of the request's approvers.
            reason: why; required to reject (it goes back to the agent).
            digest: the ``action_digest`` the decider was shown; binds the decision to it.

        Raises:
            UnknownApproval: no such request.
            PolicyViolation: ``by`` is not an approver, the digest is another action's, or the
                request has expired.
            InvalidInput: a rejection without a reason.
            AlreadyDecided: someone decided first (carries that decision).
        """
        if not isinstance(approve, bool):  # a decision is True or False, never a truthy value
            raise InvalidInput(f"approve must be true or false, not {approve!r}")
        req = self.get(approval_id)
        if by.startswith(MACHINE_IDENTITIES):
            raise PolicyViolation(
                f"{by!r} is an automation identity and may not decide approval {approval_id!r} "
                f"({req.action.describe()}); a person among "
                f"{', '.join(repr(a) for a in req.approvers)} must decide it"
            )
        if by not in req.approvers:
            raise PolicyViolation(
                f"{by!r} may not decide approval {approval_id!r} ({req.action.describe()}); "
                f"allowed approvers: {', '.join(repr(a) for a in req.approvers)}"
            )
        if digest != req.action_digest:
            raise PolicyViolation(
                f"the decision on approval {approval_id!r} quotes action digest {digest[:12]!r} "
                f"but the request is for {req.action.describe()} (digest "
                f"{req.action_digest[:12]!r}); a decision cannot approve a different action. "
                f"Re-read the request: flywheel approvals show {approval_id}"
            )
        if not approve and not reason.strip():
            raise InvalidInput(
                f"rejecting approval {approval_id!r} needs a reason; it is sent back to the agent"
            )
        now = self.clock.now()
        if req.expired(now):
            raise PolicyViolation(
                f"approval {approval_id!r} ({req.action.describe()}) expired at "
                f"{iso_time(req.expires_at)} and can no longer be decided; it is denied. The "
                "agent must request it again"
            )
        decision = ApprovalDecision(
            approval_id=approval_id, approved=approve, by=by, reason=reason.strip(),
            decided_at=now, action_digest=digest,
        )
        return self._commit(req, decision, "approval.approve" if approve else "approval.reject")

    def expire_overdue(self) -> list[ApprovalRequest]:
        """Deny every pending request whose time is up (reason ``expired``), with audit.

        Returns:
            The requests expired by this call; the caller escalates their incidents.
        """
        ids = self.r.zrangebyscore(self.keys.approvals_pending, "-inf", repr(self.clock.now()))
        out: list[ApprovalRequest] = []
        for rid in ids:
            try:
                req = self.get(rid)
            except UnknownApproval:
                self.r.zrem(self.keys.approvals_pending, rid)  # a record deleted by hand
                continue
            if self._expire(req):
                out.append(req)
        return out

    def _expire(self, req: ApprovalRequest) -> bool:
        decision = ApprovalDecision(
            approval_id=req.id, approved=False, by=EXPIRED_BY, reason="expired",
            decided_at=self.clock.now(), action_digest=req.action_digest,
        )
        try:
            self._commit(req, decision, "approval.expire")
        except AlreadyDecided:
            return False  # a person decided just before the deadline; their decision stands
        return True

    def _commit(
        self, req: ApprovalRequest, decision: ApprovalDecision, audit_action: str
    ) -> ApprovalDecision:
        fields = self.audit.fields(
            decision.by, audit_action, service=req.action.service,
            reason=decision.reason or "approved", approval_id=req.id, incident=req.incident,
            kind=req.action.name, args=req.action.args, digest=req.action_digest,
            approved=decision.approved,
        )
        code, raw = self._decide(
            keys=[self.keys.approval(req.id), self.keys.approvals_pending,
                  self.keys.approval_open(req.incident, req.action_digest), self.keys.audit],
            args=[req.id, decision.model_dump_json(),
                  "1" if audit_action == "approval.expire" else "0", *_flat(fields)],
        )
        if int(code) == -1:
            raise UnknownApproval(req.id)
        if int(code) == 0:
            first = ApprovalDecision.model_validate_json(raw)
            verdict = "approved" if first.approved else "rejected"
            raise AlreadyDecided(
                f"approval {req.id!r} was already {verdict} by {first.by!r} at "
                f"{iso_time(first.decided_at)} ({first.reason or 'no reason given'}); "
                "the first decision is final",
                first,
            )
        return decision

    # --- use ------------------------------------------------------------------------------
    def consume(self, approval_id: str) -> None:
        """Mark an approval as used by the write it authorised; it authorises nothing else.

        A resumed thread still gets the write's stored result from the action ledger; a new
        attempt at the same action must ask again.
        """
        key = self.keys.approval(check_approval_id(approval_id))
        if self.r.hsetnx(key, "consumed_at", repr(self.clock.now())):
            req = self.get(approval_id)
            pointer = self.keys.approval_open(req.incident, req.action_digest)
            if self.r.get(pointer) == approval_id:
                self.r.delete(pointer)

    def check(self, approval_id: str, action: ActionSpec, *, incident: str) -> ApprovalDecision:
        """Return the approval that authorises ``action`` in ``incident``, or refuse.

        An approval authorises exactly the action it was requested for (same digest, so same
        service and args), in the same incident, once approved, and stays usable for as long as
        the request was open for a decision, counted from the decision.

        Raises:
            PolicyViolation: naming what is wrong and what to do instead.
        """
        try:
            req = self.get(approval_id)
            decision = self.decision(approval_id)
        except UnknownApproval as exc:
            raise PolicyViolation(
                f"approval {approval_id!r} does not exist; {action.describe()} needs an approved "
                "request. Call without approval_id to request one"
            ) from exc
        what = f"approval {approval_id!r} is for {req.action.describe()}"
        if req.action_digest != action.digest:
            raise PolicyViolation(
                f"{what}, not {action.describe()}; it cannot authorise a different action. "
                "Call without approval_id to request approval for this one"
            )
        if req.incident != incident:
            raise PolicyViolation(
                f"{what} in incident {req.incident!r}, not {incident!r}; approvals do not carry "
                "over between incidents"
            )
        now = self.clock.now()
        used = self.r.hget(self.keys.approval(approval_id), "consumed_at")
        if used is not None:
            raise PolicyViolation(
                f"{what} and was already used at {iso_time(float(used))}; an approval "
                "authorises one write. Call without approval_id to request a new one"
            )
        if decision is None:
            raise PolicyViolation(
                f"{what} and is still pending (expires {iso_time(req.expires_at)}); wait for a "
                "decision"
            )
        if not decision.approved:
            raise PolicyViolation(
                f"{what} and was {'denied' if decision.by == EXPIRED_BY else 'rejected'} by "
                f"{decision.by!r}: {decision.reason}. Do not retry it; report the reason"
            )
        usable_until = decision.decided_at + (req.expires_at - req.created_at)
        if now > usable_until:
            raise PolicyViolation(
                f"{what}; it was approved at {iso_time(decision.decided_at)} and could be used "
                f"until {iso_time(usable_until)}. Request a fresh approval"
            )
        return decision


def _flat(fields: dict[str, str]) -> list[Any]:
    out: list[Any] = []
    for k, v in fields.items():
        out += [k, v]
    return out
