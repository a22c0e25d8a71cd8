"""The one executor of approved chat-made requests: whichever channel approved it, it runs once.

A request made in chat (incident ``chat-…``) has no agent thread to resume. Once approved — in
chat, over HTTP, in Slack or with the CLI — it runs here, bound to its approval, through the
guarded operations; the action ledger (step ``approved-ID``) makes a second run, from any
process, return the first one's stored result instead of acting again. The loop calls
:meth:`ApprovedRequests.sweep` every pass; chat and Slack call :meth:`ApprovedRequests.execute`
at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fleet.actions.spec import ActionContext
from fleet.approvals import ApprovalRequest
from fleet.errors import ActionInProgress, FleetError, UnknownApproval
from fleet.operations.operations import Operations

log = logging.getLogger(__name__)

CHAT_PREFIX = "chat-"
"""Incident ids of requests made in chat (their "incident" is the chat thread)."""


def chat_made(request: ApprovalRequest) -> bool:
    """Whether ``request`` came from a chat thread (no agent thread waits on it)."""
    return request.incident.startswith(CHAT_PREFIX)


class ApprovedRequests:
    """Runs approved chat-made requests exactly once.

    Args:
        ops: the guarded operations (their approval store and Redis are used too).
    """

    def __init__(self, ops: Operations):
        self.ops = ops
        self.approvals = ops.approvals
        self.r, self.keys = ops.approvals.r, ops.approvals.keys

    def watch(self, approval_id: str) -> None:
        """Remember a chat-made request, so it runs once approved even if nobody chats again."""
        self.r.sadd(self.keys.approvals_chat, approval_id)

    def execute(self, approval_id: str) -> dict[str, Any]:
        """Run the approved request ``approval_id`` (once; a repeat returns the stored result).

        Returns:
            ``{"status": "done", ...result, "replayed": bool}``, or ``{"status":
            "not_executed", "why": ...}`` for a request that is not chat-made, not approved, or
            not an action chat can run.

        Raises:
            FleetError: the write was refused or failed (a limit, a busy service, ...).
        """
        req = self.approvals.get(approval_id)
        if not chat_made(req):
            return {"status": "not_executed",
                    "why": f"incident {req.incident} resumes its own thread on the loop's pass"}
        decision = self.approvals.decision(approval_id)
        if decision is None or not decision.approved:
            return {"status": "not_executed", "why": "the request is not approved"}
        a = req.action
        # One step per approval: the ledger key, whoever calls, so the write happens once.
        ctx = ActionContext(incident=req.incident, actor=req.requested_by,
                            reason=req.rationale[:2000] or "approved request",
                            thread_id=req.incident, step=f"approved-{approval_id}")
        if a.name == "promote":
            res = self.ops.promote(a.service, int(a.args["version"]), ctx, approval_id=approval_id)
        elif a.name == "retire":
            res = self.ops.retire(a.service, int(a.args["version"]), ctx, approval_id=approval_id)
        elif a.name == "rollback":
            res = self.ops.rollback(a.service, ctx, to=a.args.get("to"), approval_id=approval_id)
        elif a.name == "retrain":
            res = self.ops.retrain(a.service, ctx, rows=a.args.get("rows"),
                                   seed=a.args.get("seed", 0), since_ts=a.args.get("since_ts"),
                                   approval_id=approval_id)
        else:
            return {"status": "not_executed",
                    "why": f"{a.name!r} requests run from their incident"}
        return {"status": "done", **res.stored(), "replayed": res.replayed}

    def sweep(self, owns: Callable[[str], bool] = lambda service: True
              ) -> dict[str, dict[str, Any]]:
        """Watch pending chat-made requests; run each approved one; forget decided ones.

        Args:
            owns: whether this process handles a service (a loop worker's shards), so two
                workers do not race for the same service's lease.

        Returns:
            Approval id -> what :meth:`execute` returned (or ``{"status": "error"}``), for the
            requests decided since the last sweep.
        """
        for req in self.approvals.pending():
            if chat_made(req):
                self.watch(req.id)
        out: dict[str, dict[str, Any]] = {}
        for aid in sorted(self.r.smembers(self.keys.approvals_chat)):
            try:
                if self.approvals.decision(aid) is None:
                    continue  # still pending (or overdue: the driver expires it first)
                if not owns(self.approvals.get(aid).action.service):
                    continue
                out[aid] = self.execute(aid)
            except UnknownApproval:
                pass
            except ActionInProgress:
                continue  # another process runs it right now; look again next pass
            except FleetError as exc:  # refused or failed: audited by the gate; not retried
                log.warning("approved request %s did not run: %s", aid, exc)
                out[aid] = {"status": "error", "error": str(exc)[:300]}
            self.r.srem(self.keys.approvals_chat, aid)
        return out
