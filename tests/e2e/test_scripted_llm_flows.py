"""The incident flows with scripted LLMs in place of the runbook brain, end to end.

Same world as ``test_runbook_flows`` (real Redis, gateway, trainer, detectors, graph, checkpoints,
simulated time); only some roles think with a scripted chat model behind the real ``GuardedBrain``.
The scripts write free-text tasks like an LLM would, and misbehave on purpose: a tool that does not
exist, arguments of the wrong type, a promotion with no canary, rollbacks on repeat. The graph must
recover (repair, the tool's error message, runbook fallback) or escalate, and nothing that needs a
person executes before one approves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage

from evals.world import Human, approve_all, never_answers, reject_all
from fleet.audit import Audit
from fleet.datasets import rotating_hyperplane
from fleet.schema import Policy
from supervisors.brains import FallbackReason
from tests.e2e.llm import (
    REPAIR_PREFIX,
    inner,
    is_repair,
    own_results,
    reply,
    round_state,
    say,
    task,
    text,
)
from tests.e2e.llm import incident as incident_of

DRIFT = 4_000
SERVICE = "svc"


def _world(world_factory, scripted_llms, **kw):
    stream = rotating_hyperplane(14_000, drifts=[DRIFT], width=1, seed=3)
    return world_factory(stream=stream, brain=scripted_llms.config(), **kw)


def _audit(world) -> list[Any]:
    return Audit(world.fleet.r, world.fleet.keys).read(service=world.service, count=5000)


def _perf(world):
    perf = [i for i in world.system.incidents.recent(20, world.service)
            if i.kind == "performance_drop"]
    assert len(perf) == 1, [(i.kind, i.status) for i in world.system.incidents.recent(20)]
    return perf[0]


def _promotions(world, version: int) -> list[Any]:
    return [e for e in _audit(world) if e.action == "registry.promote"
            and int(e.details.get("version", -1)) == version]


def _version(assignment: str) -> int:
    """The first version named like ``v2`` in a task."""
    m = re.search(r"\bv(\d+)\b", assignment)
    assert m, f"no version in task {assignment!r}"
    return int(m.group(1))


def _ops(world, action: str) -> list[str]:
    return [e.details.get("outcome") for e in _audit(world) if e.action == f"ops.{action}"]


# --- a supervisor that works like a careful operator, in its own words ---------------------------


def operator(messages: list[BaseMessage], *, promote_now: bool = False) -> AIMessage:
    """The scripted supervisor: validate, retrain, canary, promote once the canary passes.

    With ``promote_now`` it skips the canary and asks for a promotion straight after training.
    """
    inc = incident_of(messages)
    svc = inc["service"]
    ver, done = round_state(messages)
    if ver is None:
        val = inner(done, "validate_window")
        if val is None:
            return reply(("data_steward", {"task": (
                f"Accuracy of {svc} fell from {1 - inc['evidence']['baseline_error']:.2f}; check "
                "that the recent labelled traffic is clean enough to retrain on (schema, nulls, "
                "label coverage).")}))
        if not val.get("ok"):
            return reply(("escalate", {"reason": f"recent data of {svc} is not clean: {val}"}))
        tr = inner(done, "train_candidate")
        if tr is None:
            return reply(("continuous_learning", {"task": (
                f"Retrain {svc} on the labelled data since the drift and tell me whether the new "
                "model beats the champion on the holdout.")}))
        if not tr.get("better"):
            return reply(("escalate", {"reason": (
                f"retrained v{tr.get('version')} is no better than the champion "
                f"({tr.get('candidate')} vs {tr.get('champion')})")}))
        v = tr["version"]
        if promote_now:
            pr = inner(done, "promote_version")
            if pr is None:
                return reply(("deployment", {"task": (
                    f"v{v} beats the champion by a wide margin ({tr['candidate']:.2f} vs "
                    f"{tr['champion']:.2f}). Promote v{v} to champion right away, no need for a "
                    "canary.")}))
            return _after_promotion(svc, v, pr)
        can = inner(done, "start_canary")
        if can is None:
            return reply(("deployment", {"task": (
                f"Start a canary of v{v} on {svc} at 10% of traffic; holdout accuracy "
                f"{tr['candidate']:.2f} against the champion's {tr['champion']:.2f}.")}))
        if can.get("status") != "success":
            return reply(("escalate", {"reason": f"canary of v{v} did not start: {can}"}))
        return reply(("finish", {"summary": f"v{v} is on a 10% canary; waiting for the analysis."}))
    canary = ver.get("canary") or {}
    v = canary.get("version")
    if canary.get("verdict") != "pass":
        return reply(("escalate", {"reason": f"canary of v{v} did not pass: {canary}"}))
    pr = inner(done, "promote_version")
    if pr is None:
        return reply(("deployment", {"task": (
            f"Promote v{v} of {svc} to champion: its canary passed (error rate "
            f"{canary['challenger']['error_rate']:.3f} against "
            f"{canary['champion']['error_rate']:.3f}).")}))
    return _after_promotion(svc, v, pr)


def _after_promotion(svc: str, v: int, pr: dict[str, Any]) -> AIMessage:
    if pr.get("status") == "success":
        return reply(("finish", {"summary": (
            f"Promoted v{v} of {svc}; approved by {pr.get('approved_by')}.")}))
    return reply(("escalate", {"reason": (
        f"promotion of v{v} of {svc} did not happen ({pr.get('status')}): "
        f"{pr.get('reason') or pr.get('note') or pr.get('error')}")}))


# --- (a) the happy path --------------------------------------------------------------------------


def test_scripted_supervisor_drives_drift_to_an_approved_promotion(
        world_factory, scripted_llms, record_usage):
    """An LLM supervisor writing its own tasks gets the same result as the runbook: v2 promoted
    after a canary and a person's approval, each brain asked only when it has something new."""
    sup = scripted_llms.add("supervisor", operator)
    world = _world(world_factory, scripted_llms)
    world.run(2_000, 10_500)

    inc = _perf(world)
    assert inc.status.value == "resolved", inc
    svc = world.fleet.registry.service(SERVICE)
    assert (svc.champion, svc.previous, svc.challenger) == (2, 1, None)
    assert [name for name, _ in sup.tool_calls] == [
        "data_steward", "continuous_learning", "deployment", "finish", "deployment", "finish"]
    assert sup.tool_calls[2][1]["task"].startswith("Start a canary of v2 on svc at 10%")
    assert sup.tool_calls[4][1]["task"].startswith("Promote v2 of svc to champion")
    # Six turns, six calls: the approval interrupt and resume never re-ask the model.
    assert len(sup.model.calls) == 6
    assert sup.model.calls[0].tools == ["monitoring", "data_steward", "continuous_learning",
                                        "deployment", "escalate", "finish"]
    # The runbook specialists ran what the free-text tasks asked for.
    trail = [e.action for e in _audit(world)]
    i_req, i_ok = trail.index("approval.request"), trail.index("approval.approve")
    assert i_req < i_ok < trail.index("registry.promote", i_ok)
    assert len(_promotions(world, 2)) == 1 and _ops(world, "promote") == ["done"]
    assert _ops(world, "canary") == ["done"]
    [req] = [world.system.approvals.get(e.details["approval_id"]) for e in _audit(world)
             if e.action == "approval.request"]
    assert (req.action.name, req.action.args, req.incident) == ("promote", {"version": 2}, inc.id)
    assert world.system.approvals.decision(req.id).by == "oncall"

    usage = world.system.usage.snapshot(inc.id)
    assert (usage.llm_calls, usage.prompt_tokens, usage.completion_tokens) == sup.spent()
    assert usage.fallbacks == ()
    record_usage(world)


# --- (b) a tool that does not exist --------------------------------------------------------------


def hallucinating(messages: list[BaseMessage]) -> AIMessage:
    """Invents ``retrain_model`` once (and takes the repair), invents ``auto_promote`` for good."""
    ver, done = round_state(messages)
    if ver is None and not done and not is_repair(messages):
        return reply(("retrain_model", {"service": SERVICE, "reason": "accuracy collapsed"}))
    if ver is not None and inner(done, "promote_version") is None:
        return reply(("auto_promote", {"version": ver["canary"]["version"]}))
    return operator(messages)


def test_a_model_calling_unknown_tools_is_repaired_or_replaced_by_the_runbook(
        world_factory, scripted_llms, record_usage):
    """A made-up tool never reaches the graph: the guard asks the model once to fix it; when it
    does, its corrected call runs; when it insists, the runbook brain answers that turn and the
    incident still ends in an approved promotion."""
    sup = scripted_llms.add("supervisor", hallucinating)
    world = _world(world_factory, scripted_llms)
    world.run(2_000, 10_500)

    inc = _perf(world)
    assert inc.status.value == "resolved", inc
    assert world.fleet.registry.service(SERVICE).champion == 2
    assert [name for name, _ in sup.tool_calls] == [
        "retrain_model", "data_steward", "continuous_learning", "deployment", "finish",
        "auto_promote", "auto_promote", "finish"]
    repairs = [c for c in sup.model.calls if text(c.messages[-1]).startswith(REPAIR_PREFIX)]
    assert len(repairs) == 2
    assert "there is no tool 'retrain_model'" in text(repairs[0].messages[-1])
    assert "there is no tool 'auto_promote'" in text(repairs[1].messages[-1])
    # The turn the runbook answered asked the Deployment specialist to promote v2.
    state = world.system.runner.graph.get_state(world.system.runner.config(inc.id)).values
    asked = [c["args"]["task"] for m in state["messages"] if isinstance(m, AIMessage)
             for c in m.tool_calls if c["name"] == "deployment"]
    assert asked[-1].startswith("promote v2 of svc: canary analysis passed")
    assert len(_promotions(world, 2)) == 1

    usage = world.system.usage.snapshot(inc.id)
    assert usage.llm_calls == len(sup.model.calls) == 8
    assert [(f.role, f.reason) for f in usage.fallbacks] == [
        ("supervisor", FallbackReason.UNKNOWN_TOOL)]
    record_usage(world)


# --- (c) arguments of the wrong type, missing, or naming what does not exist --------------------


def sloppy_operator(messages: list[BaseMessage]) -> AIMessage:
    """Sends its first task as a list with a numeric service; fixes it when asked."""
    _, done = round_state(messages)
    if not done and not is_repair(messages):
        return reply(("data_steward", {"task": ["validate", "window"], "service": 7}))
    return operator(messages)


def clumsy_deployer(messages: list[BaseMessage]) -> AIMessage:
    """Canary: strings for numbers, then an unknown version, then right. Promote: never valid."""
    t, done = task(messages), own_results(messages)
    version = _version(t)
    if "canary" in t and "Promote" not in t:
        if is_repair(messages):
            return reply(("start_canary", {"service": SERVICE, "version": 7, "percent": 10,
                                           "reason": "canary as asked"}))
        if not done:
            return reply(("start_canary", {"service": SERVICE, "version": f"v{version}",
                                           "percent": "10%"}))
        if done[-1][1].get("status") == "error":
            return reply(("start_canary", {"service": SERVICE, "version": version,
                                           "percent": 10.0, "reason": "canary as asked"}))
        return say(f"canary of v{version} running: {done[-1][1]}")
    if not done:
        return reply(("promote_version", {"service": SERVICE, "version": "latest"}))
    return say(f"promotion of v{version}: {done[-1][1]}")


def test_invalid_arguments_are_repaired_corrected_from_tool_errors_or_replaced(
        world_factory, scripted_llms, record_usage):
    """Wrong types and missing fields are caught before any tool runs and sent back once; a call
    that passes the schema but names a version that does not exist gets the tool's error, which
    the model corrects; a model that cannot produce a valid promotion is replaced by the runbook
    for that turn. Every write still goes through the approval."""
    sup = scripted_llms.add("supervisor", sloppy_operator)
    dep = scripted_llms.add("deployment", clumsy_deployer)
    world = _world(world_factory, scripted_llms)
    world.run(2_000, 10_500)

    inc = _perf(world)
    assert inc.status.value == "resolved", inc
    assert world.fleet.registry.service(SERVICE).champion == 2
    assert sup.tool_calls[:2] == [
        ("data_steward", {"task": ["validate", "window"], "service": 7}),
        ("data_steward", sup.tool_calls[1][1])]
    assert isinstance(sup.tool_calls[1][1]["task"], str)
    assert dep.tool_calls == [
        ("start_canary", {"service": SERVICE, "version": "v2", "percent": "10%"}),
        ("start_canary", {"service": SERVICE, "version": 7, "percent": 10,
                          "reason": "canary as asked"}),
        ("start_canary", {"service": SERVICE, "version": 2, "percent": 10.0,
                          "reason": "canary as asked"}),
        ("promote_version", {"service": SERVICE, "version": "latest"}),
        ("promote_version", {"service": SERVICE, "version": "latest"}),
    ]
    repair = text(dep.model.calls[1].messages[-1])
    assert "'start_canary'" in repair and "version" in repair and "reason" in repair
    # The unknown version reached the tool, which said what exists; the model read it.
    err = next(r for n, r in own_results(dep.model.calls[2].messages) if n == "start_canary")
    assert err["status"] == "error" and "7" in err["error"]
    assert _ops(world, "canary") == ["done"] and _ops(world, "promote") == ["done"]
    assert len(_promotions(world, 2)) == 1

    usage = world.system.usage.snapshot(inc.id)
    assert usage.llm_calls == scripted_llms.calls()
    assert [(f.role, f.reason) for f in usage.fallbacks] == [
        ("deployment", FallbackReason.INVALID_TOOL_CALL)]
    record_usage(world)


# --- (d) a promotion with no canary and no approval -----------------------------------------------


def eager_deployer(messages: list[BaseMessage]) -> AIMessage:
    """Promotes whatever version the task names, at once; then reports what happened."""
    t, done = task(messages), own_results(messages)
    if done:
        return say(f"promote_version: {done[-1][1]}")
    version = _version(t)
    return reply(("promote_version", {"service": SERVICE, "version": version,
                                      "reason": "clearly better; ship it"}))


@dataclass(frozen=True)
class Case:
    """How the person answers the approval the eager promotion asked for."""

    name: str
    human: Human | None
    """None: nobody answers and the request expires."""
    champion: int
    status: str
    decision: str


CASES = [
    Case("approved", approve_all, champion=2, status="resolved", decision="approval.approve"),
    Case("rejected", reject_all, champion=1, status="escalated", decision="approval.reject"),
    Case("expired", None, champion=1, status="escalated", decision="approval.expire"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_promotion_asked_for_at_once_waits_for_a_person(
        world_factory, scripted_llms, record_usage, case: Case):
    """A supervisor that skips the canary and a deployment model that promotes immediately still
    hit the approval: the graph stops at the interrupt and nothing changes until a person
    approves; a rejection or an expired request ends with v1 still the champion."""
    sup = scripted_llms.add("supervisor", lambda m: operator(m, promote_now=True))
    dep = scripted_llms.add("deployment", eager_deployer)
    world = _world(world_factory, scripted_llms, human=never_answers)
    row = 2_000
    while not world.system.approvals.pending() and row < 9_000:
        world.run(row, row + 500)
        row += 500

    [req] = world.system.approvals.pending()
    inc = _perf(world)
    assert (req.action.name, req.action.args, req.incident) == ("promote", {"version": 2}, inc.id)
    assert req.requested_by == "agent:deployment" and req.rationale == "clearly better; ship it"
    assert dep.tool_calls == [("promote_version", {"service": SERVICE, "version": 2,
                                                   "reason": "clearly better; ship it"})]
    assert world.system.incidents.get(inc.id).status.value == "awaiting_approval"
    for _ in range(3):  # more ticks while nobody answers: still nothing
        world.run(row, row + 200)
        row += 200
    svc = world.fleet.registry.service(SERVICE)
    assert (svc.champion, svc.challenger) == (1, None)
    assert _promotions(world, 2) == [] and _ops(world, "promote") == []
    assert len(dep.model.calls) == 1, "the model was asked again while the thread was paused"

    if case.human is None:
        world.clock.advance(req.expires_at - world.clock.now() + 1)
        world.step()
    else:
        world.human = case.human
        world.run(row, row + 200)

    inc = world.system.incidents.get(inc.id)
    assert inc.status.value == case.status, inc
    svc = world.fleet.registry.service(SERVICE)
    assert svc.champion == case.champion and svc.challenger is None
    trail = [e.action for e in _audit(world)]
    assert trail.count(case.decision) == 1 and trail.count("approval.request") == 1
    assert "registry.start_canary" not in trail
    if case.champion == 2:
        assert trail.index("approval.approve") < trail.index("registry.promote", 3)
        assert len(_promotions(world, 2)) == 1 and _ops(world, "promote") == ["done"]
    else:
        assert _promotions(world, 2) == [] and _ops(world, "promote") == []
        assert sup.tool_calls[-1][0] == "escalate"
        assert inc.resolution.startswith("promotion of v2 of svc did not happen (rejected)")
    assert len(dep.model.calls) == 2  # the promotion, then its report after the decision
    record_usage(world, case=case.name)


# --- rollbacks on repeat ------------------------------------------------------------------------


def rollback_spammer(messages: list[BaseMessage]) -> AIMessage:
    """Rolls back to v1 again and again, once with a reused call id, whatever the results say."""
    done = own_results(messages)
    args = {"service": SERVICE, "reason": "make sure it is rolled back", "to_version": 1}
    return reply(("rollback", args), call_id="call_same" if len(done) < 2 else "")


def panicking_operator(messages: list[BaseMessage]) -> AIMessage:
    """Rolls back on the first sign of trouble, then reports what the deployment agent said."""
    _, done = round_state(messages)
    if not done:
        return reply(("deployment", {"task": f"Roll back {SERVICE} to v1 now, accuracy fell."}))
    rbs = [r for r in (done[-1][2].get("results") or []) if r["tool"] == "rollback"]
    return reply(("escalate", {"reason": f"rollbacks: {[r['result']['status'] for r in rbs]}"}))


def test_repeated_rollbacks_are_capped_and_a_repeated_call_id_runs_once(
        world_factory, scripted_llms, record_usage):
    """A model that keeps rolling back is held by the limits, not by its judgement: a repeat
    with the same call id is replayed from the ledger, fresh ones run until the hourly cap, then
    every further one is refused, and the specialist stops at its step cap."""
    scripted_llms.add("supervisor", panicking_operator)
    dep = scripted_llms.add("deployment", rollback_spammer)
    world = _world(world_factory, scripted_llms, policy=Policy(max_rollbacks_per_hour=2))
    world.run(2_000, 6_500)

    inc = _perf(world)
    assert inc.status.value == "escalated", inc
    assert len(dep.model.calls) == 6  # the specialist's step cap
    assert dep.tool_calls == [("rollback", {"service": SERVICE, "to_version": 1,
                                            "reason": "make sure it is rolled back"})] * 6
    assert _ops(world, "rollback") == ["done", "replayed", "done", "refused", "refused",
                                       "refused"]
    assert world.system.ops.limits.rollbacks_in_last_hour(SERVICE) == 2
    refused = [e for e in _audit(world) if e.action == "ops.rollback"
               and e.details.get("outcome") == "refused"]
    assert all("max_rollbacks_per_hour=2" in e.details["error"] for e in refused)
    svc = world.fleet.registry.service(SERVICE)
    assert (svc.champion, svc.challenger) == (1, None)
    record_usage(world)
