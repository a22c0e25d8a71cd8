"""Chat tools: read the fleet (status, incidents, why, approvals) and request actions.

Action requests run through the same guarded operations as the agents: a write that needs a
person returns an ``approval_required`` result with the request id instead of running. Deciding
an approval needs the chat user to be one of its approvers; an approved request made from a chat
thread is then executed at once, bound to that approval.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, InjectedToolCallId, tool
from pydantic import StrictBool

from fleet.actions.spec import ActionContext
from fleet.errors import ApprovalRequired
from fleet.operations.approved import ApprovedRequests, chat_made
from tools.deps import ToolDeps
from tools.results import Status, error, guarded, ok, result

READ_ONLY = frozenset({"fleet_status", "service_status", "list_incidents", "explain_service",
                       "list_pending_approvals"})


def _user(config: RunnableConfig) -> str:
    return str((config.get("configurable") or {}).get("user") or "anonymous")


def _ctx(config: RunnableConfig, reason: str, step: str) -> ActionContext:
    thread = str((config.get("configurable") or {}).get("thread_id") or "chat-adhoc")
    return ActionContext(incident=thread, actor=f"human:{_user(config)}", reason=reason,
                         thread_id=thread, step=step)


def _request(write: Callable[[str | None], Any], approved: ApprovedRequests) -> str:
    try:
        res = write(None)
    except ApprovalRequired as exc:
        req = exc.request
        approved.watch(req.id)  # runs once approved, whichever channel approves it
        return result(Status.APPROVAL_REQUIRED, approval_id=req.id, action=req.action.describe(),
                      approvers=list(req.approvers), expires_at=req.expires_at,
                      how=f"an approver says: approve {req.id}")
    return ok(**res.stored(), replayed=res.replayed)


def make_chat_tools(deps: ToolDeps) -> list[BaseTool]:
    """Tools of the chat agent."""
    ops, reg = deps.ops, deps.registry
    approved = ApprovedRequests(ops)

    @tool(parse_docstring=True)
    @guarded
    def fleet_status() -> str:
        """Summarise every service: champion, challenger, mode, incidents, pending approvals."""
        rows = []
        for name in reg.services():
            s = reg.service(name)
            rows.append({"service": name, "champion": s.champion, "challenger": s.challenger,
                         "mode": s.mode.value,
                         "open_incidents": len(deps.incidents.open_incidents(name))})
        return ok(services=rows, pending_approvals=len(deps.approvals.pending()))

    @tool(parse_docstring=True)
    @guarded
    def service_status(service: str) -> str:
        """Show one service's health: pointers, recent accuracy, errors, latency, incidents.

        Args:
            service: service name.
        """
        return ok(**deps.monitor.health(service))

    @tool(parse_docstring=True)
    @guarded
    def list_incidents(service: str | None = None) -> str:
        """List open incidents, newest first.

        Args:
            service: only this service (default: all).
        """
        items = [{"id": i.id, "service": i.service, "kind": i.kind, "severity": i.severity,
                  "status": i.status.value} for i in deps.incidents.open_incidents(service)]
        recent = [{"id": i.id, "kind": i.kind, "status": i.status.value,
                   "resolution": i.resolution[:160]}
                  for i in deps.incidents.recent(5, service) if i.status.terminal]
        return ok(open=items[::-1], recently_closed=recent)

    @tool(parse_docstring=True)
    @guarded
    def explain_service(service: str) -> str:
        """Explain from the audit trail why a service runs its current version.

        Covers promotions, rollbacks, canaries and approvals, with who and why.

        Args:
            service: service name.
        """
        s = reg.service(service)
        trail = [{"when": round(e.ts), "actor": e.actor, "action": e.action,
                  "reason": e.reason[:200],
                  "version": e.details.get("version"), "approval": e.details.get("approval_id")}
                 for e in deps.audit.read(service=service, count=200)
                 if e.action.startswith(("registry.promote", "registry.rollback",
                                         "registry.start_", "registry.clear", "approval.",
                                         "incident.transition"))]
        return ok(service=service, champion=s.champion, previous=s.previous,
                  challenger=s.challenger, history=trail[-8:])

    @tool(parse_docstring=True)
    @guarded
    def list_pending_approvals() -> str:
        """List approval requests waiting for a decision."""
        return ok(pending=[{"id": a.id, "action": a.action.describe(), "risk": a.risk,
                            "incident": a.incident, "approvers": list(a.approvers),
                            "expires_at": a.expires_at, "rationale": a.rationale[:200]}
                           for a in deps.approvals.pending()])

    @tool(parse_docstring=True)
    @guarded
    def decide_approval(approval_id: str, approve: StrictBool, config: RunnableConfig,
                        tool_call_id: Annotated[str, InjectedToolCallId],
                        reason: str = "") -> str:
        """Approve or reject a pending request as the chat user (who must be an approver).

        Args:
            approval_id: the request id, like apr-1234abcd.
            approve: true to approve, false to reject.
            reason: why; required to reject.
        """
        said = str((config.get("configurable") or {}).get("said") or "").lower()
        verb = "approv" if approve else "reject"
        if not approval_id or approval_id.lower() not in said or verb not in said:
            # Text the model read (tool results, incident notes, telemetry) may ask for this
            # call; only the person's own message can, naming the request and the verdict.
            return error(
                f"approval {approval_id!r} is decided only when the person names it and the "
                f"verdict in their own message; ask them to write: approve {approval_id}  "
                f"(or: reject {approval_id} <reason>)"
            )
        req = deps.approvals.get(approval_id)
        d = deps.approvals.decide(approval_id, approve=approve, by=_user(config),
                                  reason=reason, digest=req.action_digest)
        out: dict[str, Any] = {"approval_id": approval_id, "approved": d.approved, "by": d.by}
        if d.approved and chat_made(req):
            # A chat-made request has no graph thread to resume: run it now, bound to approval
            # (the same executor the loop runs for approvals made elsewhere: it runs once).
            out["executed"] = approved.execute(approval_id)
        elif not chat_made(req):
            out["note"] = f"incident {req.incident} resumes on the loop's next pass"
        return ok(**out)

    @tool(parse_docstring=True)
    @guarded
    def request_retrain(service: str, config: RunnableConfig,
                        tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Ask to retrain a service on its recent validated window (policy decides approval).

        Args:
            service: service name.
        """
        c = _ctx(config, f"retrain requested in chat by {_user(config)}", tool_call_id)
        return _request(lambda a: ops.retrain(service, c, approval_id=a), approved)

    @tool(parse_docstring=True)
    @guarded
    def request_rollback(service: str, config: RunnableConfig,
                         tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Ask to roll a service back (drop its challenger, or restore the previous champion).

        Args:
            service: service name.
        """
        c = _ctx(config, f"rollback requested in chat by {_user(config)}", tool_call_id)
        return _request(lambda a: ops.rollback(service, c, approval_id=a), approved)

    @tool(parse_docstring=True)
    @guarded
    def request_promotion(service: str, version: int, config: RunnableConfig,
                          tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Ask to promote a version to champion (needs an approver's decision).

        Args:
            service: service name.
            version: version number.
        """
        c = _ctx(config, f"promotion requested in chat by {_user(config)}", tool_call_id)
        return _request(lambda a: ops.promote(service, version, c, approval_id=a), approved)

    return [fleet_status, service_status, list_incidents, explain_service,
            list_pending_approvals, decide_approval, request_retrain, request_rollback,
            request_promotion]

