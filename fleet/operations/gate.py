"""The one path every write takes: ledger replay, approval, lease, limits, run once, audit.

Order matters. A write already done in this incident returns its stored result first, so a graph
resumed after a crash gets the same answer even though a cooldown has started since. Then the
approval (fail closed: no valid approval, no write), then the service lease and the limits, then
the side effect through the ledger, then the audit entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet.actions.ledger import ActionLedger, ActionState, action_key
from fleet.actions.limits import Lane, Limits
from fleet.actions.spec import ActionContext, ActionSpec, iso_time
from fleet.approvals import ApprovalStore, Risk
from fleet.approvals.records import EvidenceValue
from fleet.audit import Audit
from fleet.errors import ApprovalRequired, FleetError, PolicyViolation
from fleet.schema import Policy


@dataclass(frozen=True)
class Write:
    """One guarded write, as the gate needs it."""

    spec: ActionSpec
    policy: Policy
    run: Callable[[], dict[str, Any]]
    """Does the side effect; returns the JSON result the ledger keeps."""
    check: Callable[[], None] = lambda: None
    """Validates preconditions (raises); skipped when the write is replayed from the ledger."""
    needs_approval: bool = False
    why_approval: str = ""
    """Why it needs approval, when not simply the policy's ``needs_approval`` list."""
    risk: Risk = "medium"
    evidence: Mapping[str, EvidenceValue] = field(default_factory=dict)
    retry_safe: bool = False
    """Running it twice does no harm (see :meth:`ActionLedger.run_once`)."""
    lane: Lane = "deploy"


@dataclass(frozen=True)
class Leases:
    """How long (clock seconds) a write may hold the service lease and its ledger claim."""

    deploy_s: float = 120.0
    train_s: float = 1800.0


class Gate:
    """Runs writes under approvals, limits and the ledger, and audits each outcome."""

    def __init__(
        self,
        approvals: ApprovalStore,
        ledger: ActionLedger,
        limits: Limits,
        audit: Audit,
        leases: Leases | None = None,
    ):
        self.approvals = approvals
        self.ledger = ledger
        self.limits = limits
        self.audit = audit
        self.leases = leases or Leases()

    def execute(
        self, w: Write, ctx: ActionContext, approval_id: str | None
    ) -> tuple[dict[str, Any], bool]:
        """Run ``w`` once for ``ctx.incident``; return ``(result, replayed)``.

        Raises:
            ApprovalRequired: it needs a decision; carries the pending request.
            PolicyViolation: the approval is not valid for it, the service is busy, or a limit
                (cooldown, rollbacks per hour, repeated failures) refuses it.
            FleetError: the write itself failed (unknown version, too few rows, ...).
        """
        spec = w.spec
        prior = self.ledger.get(ctx.incident, spec.name, spec.args, ctx.step)
        if prior is not None and prior.state is ActionState.DONE:
            self._audit(ctx, spec, "replayed", approval_id)
            return prior.result, True
        unsettled = prior is not None and prior.state in (ActionState.RUNNING, ActionState.UNKNOWN)
        if not (unsettled and not w.retry_safe):
            # Skipped for an unsafe action an earlier run left unsettled: its effect may already
            # break the precondition, and the ledger's error below says what really happened.
            w.check()
        if w.needs_approval or approval_id is not None:
            self._authorise(w, ctx, approval_id)
        lease_s = self.leases.train_s if w.lane == "train" else self.leases.deploy_s
        holder = f"{spec.name} (incident {ctx.incident!r}, {ctx.actor})"
        try:
            lease = self.limits.acquire(spec.service, holder=holder, lease_s=lease_s, lane=w.lane)
        except PolicyViolation as exc:
            self._audit(ctx, spec, "refused", approval_id, error=str(exc))
            raise
        try:
            return self._run(w, ctx, approval_id, lease_s)
        finally:
            self.limits.release(lease)

    def _run(
        self, w: Write, ctx: ActionContext, approval_id: str | None, lease_s: float
    ) -> tuple[dict[str, Any], bool]:
        spec = w.spec
        try:
            self.limits.check(spec.service, spec.name, w.policy)
        except PolicyViolation as exc:
            self._audit(ctx, spec, "refused", approval_id, error=str(exc))
            raise
        key = action_key(ctx.incident, spec.name, spec.args, ctx.step)
        ran = False

        def once() -> dict[str, Any]:
            nonlocal ran
            ran = True
            out = w.run()
            self.limits.record(spec.service, spec.name, ref=key)
            return out

        try:
            result = self.ledger.run_once(
                ctx.incident, spec.name, spec.args, once,
                retry_safe=w.retry_safe, lease_s=lease_s, step=ctx.step,
            )
        except FleetError as exc:
            if not ran:  # the ledger refused (in progress elsewhere, or crashed earlier)
                self._audit(ctx, spec, "refused", approval_id, error=str(exc))
                raise
            self._failed(w, ctx, approval_id, exc)
            raise
        except Exception as exc:
            self._failed(w, ctx, approval_id, exc)
            raise
        if ran:
            self.limits.reset_failures(spec.service, spec.name)
            if approval_id is not None:
                self.approvals.consume(approval_id)
        self._audit(ctx, spec, "replayed" if not ran else "done", approval_id, key=key)
        return result, not ran

    def _authorise(self, w: Write, ctx: ActionContext, approval_id: str | None) -> None:
        spec = w.spec
        if approval_id is None:
            req = self.approvals.request(spec, ctx, w.policy, risk=w.risk, evidence=w.evidence)
            why = w.why_approval or "the service's policy requires approval for it"
            raise ApprovalRequired(
                f"{spec.describe()} needs a human decision ({why}). Approval {req.id!r} is "
                f"pending until {iso_time(req.expires_at)}, for one of "
                f"{', '.join(repr(a) for a in req.approvers)} to decide. Wait for the decision, "
                f"then call again with approval_id={req.id!r}",
                req,
            )
        try:
            self.approvals.check(approval_id, spec, incident=ctx.incident)
        except PolicyViolation as exc:
            self._audit(ctx, spec, "refused", approval_id, error=str(exc))
            raise

    def _failed(
        self, w: Write, ctx: ActionContext, approval_id: str | None, exc: Exception
    ) -> None:
        n = self.limits.record_failure(w.spec.service, w.spec.name)
        self._audit(
            ctx, w.spec, "failed", approval_id, error=f"{type(exc).__name__}: {exc}",
            consecutive_failures=n,
            escalate=self.limits.should_escalate(w.spec.service, w.spec.name, w.policy),
        )

    def _audit(
        self,
        ctx: ActionContext,
        spec: ActionSpec,
        outcome: str,
        approval_id: str | None,
        **details: Any,
    ) -> None:
        self.audit.record(
            ctx.actor, f"ops.{spec.name}", service=spec.service, reason=ctx.reason,
            incident=ctx.incident, outcome=outcome, args=spec.args, approval_id=approval_id,
            thread_id=ctx.thread_id, step=ctx.step, **details,
        )
