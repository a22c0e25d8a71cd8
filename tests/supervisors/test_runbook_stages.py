"""The runbook's two-stage performance incident: a stopgap round, then a settled round."""

from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from supervisors.runbook.policies import supervisor

INC = {"id": "inc-1", "service": "svc", "kind": "performance_drop", "version": 1,
       "champion": 1, "challenger": None, "policy": {"rollout": "shadow"}}


def _round(n: int, *, better: bool, **gate: Any) -> list[BaseMessage]:
    """A finished stretch of the runbook: validate ok, then a candidate that is or is not better
    (``gate``: extra fields of the training result, e.g. the not_worse gate's)."""
    out: list[BaseMessage] = []
    for k, (specialist, tool, result) in enumerate((
            ("data_steward", "validate_window", {"status": "success", "ok": True}),
            ("continuous_learning", "train_candidate",
             {"status": "success", "version": n, "better": better, "metric": "accuracy",
              "candidate": 0.8, "champion": 0.79, **gate}))):
        cid = f"c{n}-{k}"
        out.append(AIMessage(content="", tool_calls=[{"name": specialist, "args": {"task": "t"},
                                                      "id": cid}]))
        report = {"specialist": specialist, "report": "done",
                  "results": [{"tool": tool, "args": {}, "result": result}]}
        out.append(ToolMessage(content=json.dumps(report), tool_call_id=cid))
    return out


def _stage(stage: str, **extra: Any) -> HumanMessage:
    return HumanMessage(content="STAGE " + json.dumps({"stage": stage, **extra}))


def _next(messages: list[BaseMessage]) -> tuple[str, dict[str, Any]]:
    call = supervisor(messages).tool_calls[0]
    return call["name"], call["args"]


def test_a_stopgap_that_is_not_better_waits_for_the_drift_to_settle() -> None:
    msgs = [HumanMessage(content="INCIDENT " + json.dumps(INC)), _stage("stopgap"),
            *_round(2, better=False)]
    name, args = _next(msgs)
    assert name == "finish" and "waiting for the drift to settle" in args["summary"]


def test_the_settled_round_starts_over_and_keeps_a_live_stopgap_over_a_worse_retrain() -> None:
    head = [HumanMessage(content="INCIDENT " + json.dumps(INC)), _stage("stopgap"),
            *_round(2, better=True)]
    # The settled round ignores the stopgap round's results: it validates again first.
    name, args = _next([*head, _stage("settled", champion=2)])
    assert (name, args["task"].split()[0]) == ("data_steward", "validate")
    name, args = _next([*head, _stage("settled", champion=2), *_round(3, better=False)])
    assert name == "finish" and "keeping the stopgap v2" in args["summary"]


def test_a_settled_retrain_that_is_not_better_escalates_when_no_stopgap_is_live() -> None:
    msgs = [HumanMessage(content="INCIDENT " + json.dumps(INC)), _stage("stopgap"),
            *_round(2, better=False), _stage("settled", champion=1), *_round(3, better=False)]
    name, args = _next(msgs)
    assert name == "escalate" and "not better than the champion" in args["reason"]


def test_an_escalation_names_the_gate_the_candidate_missed() -> None:
    """Under ``not_worse`` a candidate is held back for being worse than the champion, or for
    having learnt nothing (it ties a champion that now serves noise); the reason says which."""
    head = [HumanMessage(content="INCIDENT " + json.dumps(INC))]
    reasons = {learnt: _next([*head, *_round(2, better=False, gate="not_worse",
                                             learnt=learnt)])[1]["reason"]
               for learnt in (True, False)}
    assert "candidate v2 of svc is worse than the champion (holdout" in reasons[True]
    assert "does not beat the constant predictor" in reasons[False]
    assert "worse than the champion" not in reasons[False]


def test_each_round_asks_for_its_own_retrain() -> None:
    """The runbook brain's tool call ids derive from the conversation a specialist sees (its
    task); with the same task text in both rounds, the action ledger would hand the settled round
    the stopgap round's candidate instead of training a new one."""
    with_validation = _round(2, better=False)[:2]  # the window is validated, nothing trained yet
    head = [HumanMessage(content="INCIDENT " + json.dumps(INC)), _stage("stopgap"),
            *with_validation]
    first = _next(head)
    second = _next([*head, *_round(2, better=False)[2:], _stage("settled", champion=1),
                    *with_validation])
    assert first[0] == second[0] == "continuous_learning"
    assert first[1]["task"] != second[1]["task"]
    assert "stopgap round" in first[1]["task"] and "settled round" in second[1]["task"]
