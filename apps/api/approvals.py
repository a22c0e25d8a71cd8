"""``/v1/approvals``: pending requests, one request with its decision, and deciding one.

The decider is the caller's token identity, never a body field; the store enforces the rest
(listed approvers only, digest-bound, first decision wins, a rejection needs a reason). The
background loop notices the decision and resumes the waiting agent thread.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path

from apps.api.auth import Caller
from apps.api.errors import documented
from apps.api.models import ApprovalOut, ApprovalsOut, ApprovalStatus, DecisionIn
from fleet.approvals import EXPIRED_BY, ApprovalDecision, ApprovalRequest, ApprovalStore

ApprovalId = Path(min_length=1, max_length=200, description="An approval request id.")


def approvals_router(approvals: ApprovalStore, caller: Caller) -> APIRouter:
    """Routes over the approval store; ``caller`` names who decides."""
    router = APIRouter(prefix="/v1/approvals", tags=["approvals"])

    def view(req: ApprovalRequest, decision: ApprovalDecision | None) -> ApprovalOut:
        status: ApprovalStatus
        if decision is None:
            status = "expired" if req.expired(approvals.clock.now()) else "pending"
        elif decision.by == EXPIRED_BY:
            status = "expired"
        else:
            status = "approved" if decision.approved else "rejected"
        return ApprovalOut(request=req, status=status, decision=decision)

    @router.get("", response_model=ApprovalsOut, responses=documented(401, 503))
    def list_pending() -> ApprovalsOut:
        """Requests waiting for a decision, soonest expiry first."""
        return ApprovalsOut(approvals=[view(req, None) for req in approvals.pending()])

    @router.get("/{approval_id}", response_model=ApprovalOut,
                responses=documented(401, 404, 422, 503))
    def get_approval(approval_id: str = ApprovalId) -> ApprovalOut:
        """One request, where it stands and its decision."""
        return view(approvals.get(approval_id), approvals.decision(approval_id))

    @router.post("/{approval_id}/decision", response_model=ApprovalOut,
                 responses=documented(400, 401, 403, 404, 409, 422, 503))
    def decide(body: DecisionIn, approval_id: str = ApprovalId,
               who: str = Depends(caller)) -> ApprovalOut:
        """Approve or reject a request as the caller; the first decision wins.

        403 if the caller is not one of the request's approvers, the digest is another action's,
        or the request expired; 409 naming the first decision if someone decided already; 422 for
        a rejection without a reason.
        """
        decision = approvals.decide(approval_id, approve=body.approve, by=who,
                                    reason=body.reason, digest=body.digest)
        return view(approvals.get(approval_id), decision)

    return router
