"""Deployment tools: shadow, canary, promote, rollback, retire — with approvals as interrupts.

A write that needs a person raises ``ApprovalRequired`` in ``fleet``; here that becomes a LangGraph
``interrupt()`` carrying the request. The thread resumes with ``{"approval_id"}`` and the tool
reads the *stored* decision (never the resume payload) before it retries the write bound to that
approval. The fleet refuses any approval that is not approved, expired, or for another action.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, InjectedToolCallId, tool
from langgraph.types import interrupt

from fleet.errors import ApprovalRequired
from fleet.operations.results import DeployResult
from tools.deps import ToolDeps, action_context
from tools.results import Status, guarded, ok, result

Write = Callable[[str | None], DeployResult]
"""A guarded write, called with an approval id (or None on the first try)."""


def with_approval(deps: ToolDeps, write: Write) -> str:
    """Run ``write``; if it needs approval, pause the graph for the decision, then retry."""
    try:
        res = write(None)
    except ApprovalRequired as exc:
        req = exc.request
        answer = interrupt({"type": "approval", "approval_id": req.id,
                            "request": req.model_dump(mode="json")})
        if not isinstance(answer, dict) or answer.get("approval_id") != req.id:
            return result(Status.APPROVAL_REQUIRED, approval_id=req.id,
                          note="resumed without this approval's decision; nothing was done")
        decision = deps.approvals.decision(req.id)
        if decision is None:
            return result(Status.APPROVAL_REQUIRED, approval_id=req.id,
                          note="the approval is still pending; nothing was done")
        if not decision.approved:
            return result(Status.REJECTED, approval_id=req.id, by=decision.by,
                          reason=decision.reason, action=req.action.describe())
        res = write(req.id)
        return ok(**res.stored(), replayed=res.replayed, approval_id=req.id,
                  approved_by=decision.by)
    return ok(**res.stored(), replayed=res.replayed)


def make_deploy_tools(deps: ToolDeps) -> list[BaseTool]:
    """The Deployment specialist's tools over ``deps``."""

    def ctx(config: RunnableConfig, reason: str, step: str) -> Any:
        return action_context(config, role="deployment", reason=reason, step=step)

    @tool(parse_docstring=True)
    @guarded
    def start_shadow(service: str, version: int, reason: str, config: RunnableConfig,
                     tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Score a version silently on all traffic next to the champion (no user impact).

        Args:
            service: service name.
            version: version number to shadow.
            reason: why, one line.
        """
        c = ctx(config, reason, tool_call_id)
        return with_approval(deps, lambda a: deps.ops.shadow(service, version, c, approval_id=a))

    @tool(parse_docstring=True)
    @guarded
    def start_canary(service: str, version: int, percent: float, reason: str,
                     config: RunnableConfig,
                     tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Let a version answer a share of traffic (sticky by request id) next to the champion.

        Args:
            service: service name.
            version: version number to canary.
            percent: share of traffic in percent, e.g. 10; above the policy limit needs approval.
            reason: why, one line.
        """
        c = ctx(config, reason, tool_call_id)
        return with_approval(
            deps, lambda a: deps.ops.canary(service, version, percent, c, approval_id=a))

    @tool(parse_docstring=True)
    @guarded
    def promote_version(service: str, version: int, reason: str, config: RunnableConfig,
                        tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Make a version the champion of all traffic. Needs a person's approval.

        Args:
            service: service name.
            version: version number to promote.
            reason: why, with the evidence, one or two lines.
        """
        c = ctx(config, reason, tool_call_id)
        return with_approval(deps, lambda a: deps.ops.promote(service, version, c, approval_id=a))

    @tool(parse_docstring=True)
    @guarded
    def rollback(service: str, reason: str, config: RunnableConfig,
                 tool_call_id: Annotated[str, InjectedToolCallId],
                 to_version: int | None = None) -> str:
        """Roll back at once: remove a canary/shadow challenger, or restore the previous champion.

        Args:
            service: service name.
            reason: why, one line.
            to_version: restore this version instead of the previous champion.
        """
        c = ctx(config, reason, tool_call_id)
        return with_approval(deps, lambda a: deps.ops.rollback(service, c, to=to_version,
                                                                approval_id=a))

    @tool(parse_docstring=True)
    @guarded
    def retire_version(service: str, version: int, reason: str, config: RunnableConfig,
                       tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Retire a version that serves no traffic. Needs a person's approval.

        Args:
            service: service name.
            version: version number to retire.
            reason: why, one line.
        """
        c = ctx(config, reason, tool_call_id)
        return with_approval(deps, lambda a: deps.ops.retire(service, version, c, approval_id=a))

    return [start_shadow, start_canary, promote_version, rollback, retire_version]
