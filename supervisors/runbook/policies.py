"""The runbook, as code: for each role, the next tool call given the conversation so far.

Message conventions the policies read (written by the graphs and the specialist tools):

- ``INCIDENT {json}``: the structured incident the supervisor works on (first human message);
- ``VERIFY {json}``: what the verify step found after a round (e.g. a canary verdict);
- ``STAGE {json}``: a performance incident's stage (``stopgap``: the drift is still under way,
  ship a model on the most recent rows; ``settled``: retrain on the settled concept); the runbook
  starts over from the latest one;
- ``TASK: text`` + ``CONTEXT {json}``: a specialist's assignment;
- specialist tool results: ``{"specialist", "report", "results": [{"tool", "args", "result"}]}``.

Free text inside tool results is never read to decide a write: only the structured fields are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

# --- reading the conversation ---------------------------------------------------------------


def _text(m: BaseMessage) -> str:
    c = m.content
    return c if isinstance(c, str) else json.dumps(c)


def tagged(messages: Sequence[BaseMessage], tag: str) -> list[tuple[int, dict[str, Any]]]:
    """``(index, payload)`` of every human message starting with ``TAG {json}``."""
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, HumanMessage) and _text(m).startswith(tag + " "):
            try:
                out.append((i, json.loads(_text(m)[len(tag) + 1 :])))
            except json.JSONDecodeError:
                continue
    return out


def tool_results(messages: Sequence[BaseMessage], start: int = 0) -> list[tuple[str, dict, dict]]:
    """``(tool name, args, parsed result)`` of every tool call after ``start``, in order."""
    args: dict[str, tuple[str, dict]] = {}
    out = []
    for m in messages[start:]:
        if isinstance(m, AIMessage):
            for c in m.tool_calls:
                args[c["id"] or ""] = (c["name"], c.get("args") or {})
        elif isinstance(m, ToolMessage) and m.tool_call_id in args:
            name, a = args[m.tool_call_id]
            try:
                parsed = json.loads(_text(m))
            except json.JSONDecodeError:
                parsed = {"status": "error", "error": _text(m)[:300]}
            out.append((name, a, parsed if isinstance(parsed, dict) else {"value": parsed}))
    return out


def last_result(results: Sequence[tuple[str, dict, dict]], tool: str) -> dict | None:
    """The most recent parsed result of ``tool`` (directly or inside a specialist report)."""
    for name, _, res in reversed(results):
        if name == tool:
            return res
        for inner in reversed(res.get("results", []) if isinstance(res, dict) else []):
            if isinstance(inner, dict) and inner.get("tool") == tool:
                return inner.get("result") or {}
    return None


def call(name: str, **args: Any) -> AIMessage:
    """An AIMessage with one tool call."""
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": None}])


def say(text: str) -> AIMessage:
    """A final AIMessage with no tool calls."""
    return AIMessage(content=text)


# --- the supervisor ---------------------------------------------------------------------------


def supervisor(messages: Sequence[BaseMessage]) -> AIMessage:
    """Next step of the supervisor's runbook (DESIGN §5)."""
    incidents = tagged(messages, "INCIDENT")
    if not incidents:
        return call("escalate", reason="no structured incident in the conversation")
    inc = incidents[0][1]
    start = 0
    stages = tagged(messages, "STAGE")
    if stages:
        start, stage = stages[-1]
        inc = {**inc, "stage": stage.get("stage", ""),
               **{k: stage[k] for k in ("champion", "challenger") if k in stage}}
    verifies = [(i, v) for i, v in tagged(messages, "VERIFY") if i > start]
    if verifies:
        idx, ver = verifies[-1]
        return _after_verify(inc, ver, tool_results(messages, idx))
    return _first_round(inc, tool_results(messages, start))


def _first_round(inc: dict, done: list[tuple[str, dict, dict]]) -> AIMessage:
    svc, kind = inc["service"], inc["kind"]
    if kind == "canary_fail" and inc.get("challenger") is None:
        # Another incident (the one that started the canary) already ended it.
        return call("finish", summary=f"canary of {svc} already ended (champion "
                    f"v{inc.get('champion')}); nothing to roll back")
    if kind in ("latency_regression", "error_rate_regression", "canary_fail"):
        rb = last_result(done, "rollback")
        if rb is None:
            return call("deployment", task=f"roll back {svc} now: {kind} "
                        f"({_evidence(inc)})")
        if rb.get("status") == "success":
            return call("finish", summary=f"rolled back {svc} after {kind}: {_short(rb)}")
        return call("escalate", reason=f"rollback of {svc} failed: {_short(rb)}")
    if kind in ("covariate_drift", "prediction_drift"):
        if last_result(done, "get_drift_report") is None:
            return call("monitoring", task=f"drift report for {svc}")
        rep = last_result(done, "get_drift_report") or {}
        return call("finish", summary=f"{kind} on {svc} recorded without a performance drop; "
                    f"watching, no retrain ({_short(rep)})")
    if kind == "canary_inconclusive":
        return call("escalate", reason=f"canary of {svc} inconclusive: {_evidence(inc)}")
    return _retrain_path(inc, done)


def _retrain_path(inc: dict, done: list[tuple[str, dict, dict]]) -> AIMessage:
    svc, kind = inc["service"], inc["kind"]
    val = last_result(done, "validate_window")
    if val is None:
        return call("data_steward", task=f"validate the recent labelled window of {svc}")
    if val.get("status") != "success":
        return call("escalate", reason=f"could not validate {svc}'s window: {_short(val)}")
    if not val.get("ok", False) or kind == "data_quality":
        q = last_result(done, "quarantine_window")
        if q is None:
            return call("data_steward", task=(
                f"quarantine the window of {svc} first_id={val.get('first_id')} "
                f"last_id={val.get('last_id')}: {_issues(val)}"))
        return call("escalate", reason=(
            f"data-quality problem in {svc} ({_issues(val)}); window quarantined "
            f"({q.get('status')}), not training on it"))
    tr = last_result(done, "train_candidate")
    if tr is None:
        # The round is named in the task: a new round's retrain is a deliberate new write, so
        # its (content-derived) tool call id must differ from the last round's, or the action
        # ledger would hand back the earlier candidate.
        round_ = f" ({inc['stage']} round)" if inc.get("stage") else ""
        return call("continuous_learning", task=(
            f"train a candidate for {svc} and evaluate it against the champion{round_}"))
    if tr.get("status") != "success":
        # The error text itself, not a cut JSON dump: the person needs the exception's name.
        why = tr.get("error") if isinstance(tr.get("error"), str) else _short(tr)
        return call("escalate", reason=f"training for {svc} failed: {why[:800]}")
    ver = tr.get("version")
    stage = inc.get("stage", "")
    if not tr.get("better", False) and stage == "stopgap":
        return call("finish", summary=(
            f"stopgap candidate v{ver} of {svc} is not better than the champion (holdout "
            f"{tr.get('metric')} {tr.get('candidate')} vs {tr.get('champion')}); waiting for "
            "the drift to settle"))
    if (not tr.get("better", False) and stage == "settled"
            and inc.get("champion") != inc.get("version")):
        return call("finish", summary=(
            f"keeping the stopgap v{inc.get('champion')} of {svc}: candidate v{ver} trained on "
            f"the settled concept is not better ({tr.get('metric')} {tr.get('candidate')} vs "
            f"{tr.get('champion')})"))
    if not tr.get("better", False):
        return call("escalate", reason=(
            f"candidate v{ver} of {svc} {_shortfall(tr)} (holdout {tr.get('metric')} "
            f"{tr.get('candidate')} vs {tr.get('champion')}); not deploying it"))
    policy = inc.get("policy", {})
    mode = "shadow" if policy.get("rollout") == "shadow" else "canary"
    can = last_result(done, f"start_{mode}")
    if can is None:
        pct = policy.get("max_canary_pct", 10)
        task = (f"start a shadow of v{ver} for {svc}" if mode == "shadow"
                else f"start a canary of v{ver} for {svc} at {pct:g}%")
        return call("deployment", task=task)
    if can.get("status") != "success":
        return call("escalate", reason=f"{mode} of v{ver} for {svc} failed to start: "
                    f"{_short(can)}")
    return call("finish", summary=(
        f"{mode} of v{ver} started on {svc} ({tr.get('metric')} {tr.get('candidate')} vs "
        f"champion {tr.get('champion')} on the recent holdout); awaiting its analysis"))


def _after_verify(inc: dict, ver: dict, done: list[tuple[str, dict, dict]]) -> AIMessage:
    svc = inc["service"]
    canary = ver.get("canary") or {}
    verdict, version = canary.get("verdict"), canary.get("version")
    if verdict == "pass":
        pr = last_result(done, "promote_version")
        if pr is None:
            return call("deployment", task=f"promote v{version} of {svc}: canary analysis "
                        f"passed ({_short(canary)})")
        if pr.get("status") == "success":
            return call("finish", summary=f"promoted v{version} of {svc} after a passing "
                        f"{canary.get('mode', 'canary')} analysis and approval by "
                        f"{pr.get('approved_by', 'a person')}")
        if pr.get("status") == "rejected":
            if last_result(done, "rollback") is None:
                return call("deployment", task=f"roll back the canary of {svc}: promotion "
                            "was rejected")
            return call("escalate", reason=(
                f"promotion of v{version} of {svc} rejected by {pr.get('by')}: "
                f"{pr.get('reason')}; canary stopped, champion unchanged"))
        return call("escalate", reason=f"promotion of v{version} of {svc} did not happen: "
                    f"{_short(pr)}")
    if verdict == "fail":
        rb = last_result(done, "rollback")
        if rb is None:
            return call("deployment", task=f"roll back the canary of {svc}: canary analysis "
                        f"failed ({_short(canary)})")
        return call("finish", summary=f"canary of v{version} on {svc} failed "
                    f"({_short(canary)}); rolled back ({rb.get('status')})")
    if ver.get("health") == "ok":
        return call("finish", summary=f"{svc} healthy after the actions")
    return call("escalate", reason=f"verify for {svc}: {_short(ver)}")


def _evidence(inc: dict) -> str:
    return _short(inc.get("evidence") or {})


def _shortfall(tr: dict) -> str:
    """Why a trained candidate does not clear its gate, in words for the escalation."""
    if tr.get("gate") != "not_worse":
        return "is not better than the champion by the margin and beyond chance"
    if not tr.get("learnt", True):
        return ("learnt nothing its features explain: it does not beat the constant predictor "
                "(majority class or mean) beyond chance")
    return "is worse than the champion"


def _issues(val: dict) -> str:
    issues = val.get("issues") or []
    return "; ".join(
        f"{i.get('check')} {i.get('feature', '')}={i.get('value')}" for i in issues[:4]
    ) or "window flagged"


def _short(d: Any, limit: int = 240) -> str:
    if not isinstance(d, dict):
        return str(d)[:limit]
    keep = {k: v for k, v in d.items() if not isinstance(v, (list, dict)) or k == "issues"}
    return json.dumps(keep, default=str)[:limit]


# --- the specialists --------------------------------------------------------------------------

_VERSION = re.compile(r"\bv(?:ersion\s*)?(\d+)\b", re.I)
_PCT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_KV = re.compile(r"\b(first_id|last_id)=([0-9]+-[0-9]+)")


def _assignment(messages: Sequence[BaseMessage]) -> tuple[str, dict[str, Any], int]:
    for i, m in enumerate(messages):
        if isinstance(m, HumanMessage) and _text(m).startswith("TASK:"):
            task, _, ctx = _text(m).partition("\nCONTEXT ")
            try:
                context = json.loads(ctx) if ctx else {}
            except json.JSONDecodeError:
                context = {}
            return task.removeprefix("TASK:").strip(), context, i
    return "", {}, 0


def _report(done: list[tuple[str, dict, dict]]) -> AIMessage:
    """End the specialist's turn with the last result as its report."""
    name, _, res = done[-1]
    return say(json.dumps({"tool": name, **res}, default=str)[:3000])


def _specialist(pick: Any) -> Any:
    def policy(messages: Sequence[BaseMessage]) -> AIMessage:
        task, ctx, start = _assignment(messages)
        done = tool_results(messages, start)
        svc = ctx.get("service", "")
        nxt = pick(task.lower(), svc, ctx, done)
        if nxt is None:
            return _report(done) if done else say(f"nothing to do for task {task!r}")
        return nxt

    return policy


def _monitoring(task: str, svc: str, ctx: dict, done: list) -> AIMessage | None:
    if done:
        return None
    if "canary" in task:
        return call("run_canary_analysis", service=svc)
    if "drift" in task:
        return call("get_drift_report", service=svc)
    if "history" in task or "incident" in task:
        return call("get_incident_history", service=svc)
    m = re.findall(r"\bv(\d+)\b", task)
    if "compare" in task and len(m) >= 2:
        return call("compare_versions", service=svc, a=int(m[0]), b=int(m[1]))
    return call("get_service_health", service=svc)


def _data_steward(task: str, svc: str, ctx: dict, done: list) -> AIMessage | None:
    if "quarantine" in task:
        if last_result(done, "quarantine_window") is not None:
            return None
        # Only before the first ": ": the supervisor writes the window's ids there, and what
        # follows quotes free text (feature names in the issues) that must not redirect the
        # quarantine to another range.
        ids = dict(_KV.findall(task.split(": ", 1)[0]))
        if "first_id" not in ids:
            val = last_result(done, "validate_window")
            if val is None:
                return call("validate_window", service=svc)
            ids = {"first_id": val.get("first_id"), "last_id": val.get("last_id")}
        return call("quarantine_window", service=svc, first_id=ids["first_id"],
                    last_id=ids["last_id"], reason=task[:200])
    if "training set" in task:
        return None if done else call("build_training_set", service=svc)
    return None if done else call("validate_window", service=svc)


def _continuous_learning(task: str, svc: str, ctx: dict, done: list) -> AIMessage | None:
    if done:
        return None
    m = _VERSION.search(task)
    if "evaluate" in task and m and "train" not in task:
        return call("evaluate_candidate", service=svc, version=int(m.group(1)))
    return call("train_candidate", service=svc)


def _deployment(task: str, svc: str, ctx: dict, done: list) -> AIMessage | None:
    if done:
        return None
    m = _VERSION.search(task)
    version = int(m.group(1)) if m else None
    if "roll back" in task or "rollback" in task:
        return call("rollback", service=svc, reason=task[:200])
    if version is None:
        return say(f"the task names no version (like v3): {task!r}")
    if "promote" in task:
        return call("promote_version", service=svc, version=version, reason=task[:200])
    if "retire" in task:
        return call("retire_version", service=svc, version=version, reason=task[:200])
    if "shadow" in task:
        return call("start_shadow", service=svc, version=version, reason=task[:200])
    if "canary" in task:
        p = _PCT.search(task)
        return call("start_canary", service=svc, version=version,
                    percent=float(p.group(1)) if p else 5.0, reason=task[:200])
    return say(f"no deployment action recognised in {task!r}")


POLICIES = {
    "supervisor": supervisor,
    "monitoring": _specialist(_monitoring),
    "data_steward": _specialist(_data_steward),
    "continuous_learning": _specialist(_continuous_learning),
    "deployment": _specialist(_deployment),
}
"""Runbook policy per role (the chat grammar lives in ``supervisors/chat_grammar.py``)."""
