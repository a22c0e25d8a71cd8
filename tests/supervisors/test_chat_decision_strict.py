"""The chat's decide_approval tool takes only a real boolean: "yes" or 1 decides nothing."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from fleet.actions import ActionContext, ActionSpec
from fleet.approvals import ApprovalStore
from fleet.schema import Policy
from tools.chat import make_chat_tools


def test_decide_approval_refuses_truthy_non_booleans(r, keys, clock) -> None:
    approvals = ApprovalStore(r, keys, clock)
    req = approvals.request(
        ActionSpec(name="promote", service="elec", args={"version": 2}),
        ActionContext(incident="inc-1", actor="agent:deployment", reason="canary passed",
                      thread_id="inc-1"),
        Policy(approvers=("alice",)),
    )
    # Only the approval store is used by decide_approval; the executor needs ops.approvals.
    deps = SimpleNamespace(ops=SimpleNamespace(approvals=approvals), registry=None,
                           approvals=approvals)
    tool = {t.name: t for t in make_chat_tools(deps)}["decide_approval"]  # type: ignore[arg-type]
    config = {"configurable": {"user": "alice", "said": f"approve {req.id}"}}
    for approve in ("yes", 1, "true"):
        call = {"name": "decide_approval", "id": "c1", "type": "tool_call",
                "args": {"approval_id": req.id, "approve": approve}}
        with pytest.raises(ValidationError, match="approve"):
            tool.invoke(call, config=config)
    assert approvals.decision(req.id) is None
    call = {"name": "decide_approval", "id": "c2", "type": "tool_call",
            "args": {"approval_id": req.id, "approve": True}}
    out = tool.invoke(call, config=config)
    assert json.loads(str(out.content))["approved"] is True
    assert approvals.decision(req.id).approved is True
