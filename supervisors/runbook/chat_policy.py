"""The chat runbook brain: a documented command grammar, turned into tool calls and replies.

Without an LLM the chat understands exactly these commands (``help`` prints them); anything else
gets a reply saying free-text requests need ``FLYWHEEL_MODEL``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from supervisors.runbook.policies import call, say, tool_results

GRAMMAR = """\
Commands (no LLM configured, so I understand exactly these):
  status                      every service: champion, challenger, mode, open incidents
  status SVC                  one service's health
  incidents                   open and recently closed incidents
  why SVC                     why SVC runs its current version (from the audit trail)
  approvals                   pending approval requests
  approve ID                  approve a request (you must be one of its approvers)
  reject ID because REASON    reject a request, with the reason the agent will get
  retrain SVC                 retrain SVC on its recent validated window
  rollback SVC                roll SVC back
  promote SVC vN              promote version N of SVC (needs an approval)
  help                        this list
Set FLYWHEEL_MODEL (a litellm model string) to ask in free text."""

_RULES: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(r"^(help|\?)$"), lambda m: say(GRAMMAR)),
    (re.compile(r"^status$"), lambda m: call("fleet_status")),
    (re.compile(r"^status\s+(\S+)$"), lambda m: call("service_status", service=m[1])),
    (re.compile(r"^incidents$"), lambda m: call("list_incidents")),
    (re.compile(r"^why\s+(\S+)$"), lambda m: call("explain_service", service=m[1])),
    (re.compile(r"^approvals$"), lambda m: call("list_pending_approvals")),
    (re.compile(r"^approve\s+(\S+)$"),
     lambda m: call("decide_approval", approval_id=m[1], approve=True)),
    (re.compile(r"^reject\s+(\S+)\s+because\s+(.+)$", re.S),
     lambda m: call("decide_approval", approval_id=m[1], approve=False, reason=m[2].strip())),
    (re.compile(r"^reject\s+(\S+)$"),
     lambda m: say(f"a rejection needs a reason: reject {m[1]} because ...")),
    (re.compile(r"^retrain\s+(\S+)$"), lambda m: call("request_retrain", service=m[1])),
    (re.compile(r"^roll\s*back\s+(\S+)$"), lambda m: call("request_rollback", service=m[1])),
    (re.compile(r"^promote\s+(\S+)\s+v?(\d+)$"),
     lambda m: call("request_promotion", service=m[1], version=int(m[2]))),
]


def chat(messages: Sequence[BaseMessage]) -> AIMessage:
    """Answer the last human message: a tool call for a command, or the reply to its result."""
    last = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1)
    if last < 0:
        return say(GRAMMAR)
    done = tool_results(messages, last)
    if done:
        name, _, res = done[-1]
        return say(render(name, res))
    text = str(messages[last].content).strip()
    for pattern, action in _RULES:
        m = pattern.match(text)
        if m:
            return action(m)
    return say(f"I did not understand {text[:80]!r}. Free-text requests need an LLM: set "
               f"FLYWHEEL_MODEL.\n\n{GRAMMAR}")


def render(tool: str, res: dict[str, Any]) -> str:
    """A short human reply for one tool result."""
    status = res.get("status")
    if status in ("error", "duplicate_call"):
        return f"error: {res.get('error')}"
    if status == "approval_required":
        return (f"needs approval {res['approval_id']} ({res.get('action')}); approvers: "
                f"{', '.join(res.get('approvers', []))}. An approver says: "
                f"approve {res['approval_id']}")
    if status != "success" or res.get("truncated"):  # no_data, a cut-off result: as it is
        return _short({k: v for k, v in res.items() if k != "status"})
    if tool == "fleet_status":
        lines = [f"{s['service']}: champion v{s['champion']}, mode {s['mode']}"
                 + (f", challenger v{s['challenger']}" if s["challenger"] else "")
                 + f", {s['open_incidents']} open incident(s)" for s in res["services"]]
        return "\n".join(lines or ["no services registered"]) + (
            f"\npending approvals: {res['pending_approvals']}")
    if tool == "list_incidents":
        rows = [f"{i['id']} {i['kind']} {i['severity']} [{i['status']}]" for i in res["open"]]
        closed = [f"{i['id']} [{i['status']}] {i['resolution']}" for i in res["recently_closed"]]
        return "\n".join(["open:", *(rows or ["  none"]), "recently closed:",
                          *(closed or ["  none"])])
    if tool == "explain_service":
        hist = [f"- {h['action']} v{h['version']} by {h['actor']}: {h['reason']}"
                for h in res["history"]]
        prev = f" (previous v{res['previous']})" if res.get("previous") is not None else ""
        return (f"{res['service']} runs v{res['champion']}{prev}.\n"
                + "\n".join(hist or ["no promotions or rollbacks recorded"]))
    if tool == "list_pending_approvals":
        rows = [f"{a['id']}: {a['action']} (risk {a['risk']}, approvers "
                f"{', '.join(a['approvers'])})" for a in res["pending"]]
        return "\n".join(rows or ["no pending approvals"])
    if tool == "decide_approval":
        verdict = "approved" if res.get("approved") else "rejected"
        extra = res.get("executed") or res.get("note") or ""
        return f"{res['approval_id']} {verdict} by {res['by']}. {_short(extra)}".strip()
    return _short({k: v for k, v in res.items() if k != "status"})


def _short(v: Any, limit: int = 600) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)[:limit]
