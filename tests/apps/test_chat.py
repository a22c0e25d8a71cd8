"""Chat with the supervisor, runbook brain: every grammar command, approvals, persistent threads.

Each test runs :class:`apps.chat.ChatService` over a system on the session's real Redis (a
simulated world from ``evals.world``: service ``svc`` trained on a stationary stream, v1
promoted), and asserts the reply and what changed in Redis: versions, champions, approval
records and their decisions, checkpointed chat messages. ``alice`` is the service's approver,
``mallory`` is not.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from apps.chat import ChatService
from apps.cli import app
from apps.runtime import build_fleet
from apps.system import build_system
from evals.world import World, make_world
from fleet.actions import ActionContext, ActionSpec
from fleet.approvals import ApprovalRequest
from fleet.datasets.synthetic import stationary
from fleet.errors import InvalidInput, PolicyViolation
from fleet.incidents import Signal
from fleet.keys import Keys
from fleet.schema import Policy
from supervisors.runbook.chat_policy import GRAMMAR

POLICY = Policy(approvers=("alice",))
NEEDS_LLM = "Free-text requests need an LLM: set FLYWHEEL_MODEL."


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    """Training in a thread: these tests check the chat, not the trainer's process pool."""
    with ThreadPoolExecutor(max_workers=1) as ex:
        yield ex


@pytest.fixture()
def world(r: redis.Redis, keys: Keys, redis_url: str, tmp_path: Path,
          pool: ThreadPoolExecutor) -> Iterator[World]:
    """``svc`` with v1 champion (trained on rows 0-1000), approvers ``alice``."""
    w = make_world(r, redis_url, prefix=keys.prefix, artifacts=tmp_path / "artifacts",
                   stream=stationary(4_000, seed=1), train_rows=1_000, policy=POLICY,
                   executor=pool)
    yield w
    w.close()


@pytest.fixture()
def chat(world: World) -> ChatService:
    return ChatService(world.system)


def _v2(world: World) -> int:
    """Train and register a second version (not promoted)."""
    res = world.system.trainer.train_from_dataset(world.service, world.stream, 1_000, 2_000,
                                                  created_by="test")
    return res.version.number


def _request_promotion(world: World, version: int, incident: str = "inc-svc-1") -> ApprovalRequest:
    """A pending approval of an incident's promotion, as the deployment agent asks for it."""
    return world.system.approvals.request(
        ActionSpec(name="promote", service=world.service, args={"version": version}),
        ActionContext(incident=incident, actor="agent:deployment", reason="canary passed",
                      thread_id=incident),
        POLICY, risk="high")


# --- read commands ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    text: str
    reply: str


@pytest.mark.parametrize("case", [
    Case("help", GRAMMAR),
    Case("status", "svc: champion v1, mode full, 0 open incident(s)\npending approvals: 0"),
    Case("approvals", "no pending approvals"),
    Case("incidents", "open:\n  none\nrecently closed:\n  none"),
    Case("reject apr-1", "a rejection needs a reason: reject apr-1 because ..."),
], ids=lambda c: c.text)
def test_read_commands_on_a_quiet_fleet(chat: ChatService, case: Case) -> None:
    assert chat.reply("t", case.text, user="alice") == case.reply


def test_free_text_says_it_needs_an_llm(chat: ChatService) -> None:
    reply = chat.reply("t", "why is accuracy down today?", user="alice")
    assert reply.startswith("I did not understand 'why is accuracy down today?'. " + NEEDS_LLM)
    assert reply.endswith(GRAMMAR)


def test_status_of_one_service_shows_its_health(chat: ChatService, world: World) -> None:
    world.run(1_000, 1_500)  # some labelled traffic for the health window
    reply = chat.reply("t", "status svc", user="alice")
    for part in ('"service": "svc"', '"champion": 1', '"challenger": null', '"mode": "full"',
                 '"labelled": 500'):
        assert part in reply, reply


def test_status_of_an_unknown_service_names_the_known_ones(chat: ChatService) -> None:
    assert chat.reply("t", "status nope", user="alice").startswith("error: unknown service 'nope'")


def test_incidents_lists_open_ones(chat: ChatService, world: World) -> None:
    inc = world.system.incidents.observe(Signal(
        service="svc", kind="latency_regression", severity="critical", detector="test",
        evidence={"p95_ms": 900.0}, at=world.clock.now()))
    assert inc is not None
    assert chat.reply("t", "incidents", user="alice") == (
        f"open:\n{inc.id} latency_regression critical [open]\nrecently closed:\n  none")
    assert chat.reply("t", "status", user="alice").startswith(
        "svc: champion v1, mode full, 1 open incident(s)")


def test_why_explains_promotions_and_rollbacks_from_the_audit(chat: ChatService,
                                                              world: World) -> None:
    reg = world.fleet.registry
    reg.promote("svc", _v2(world), actor="human:alice", reason="better on the recent holdout")
    reg.rollback("svc", actor="human:bob", reason="p95 latency doubled")

    reply = chat.reply("t", "why svc", user="alice")
    lines = reply.splitlines()
    assert lines[0] == "svc runs v1."
    assert lines[1:] == [
        "- registry.promote v1 by eval: initial model",
        "- registry.promote v2 by human:alice: better on the recent holdout",
        "- registry.rollback v1 by human:bob: p95 latency doubled",
    ]


def test_approvals_lists_pending_requests(chat: ChatService, world: World) -> None:
    req = _request_promotion(world, _v2(world))
    assert chat.reply("t", "approvals", user="alice") == (
        f"{req.id}: promote 'svc' version=2 (risk high, approvers alice)")


# --- deciding approvals ----------------------------------------------------------------------


def test_approve_by_an_approver_records_the_decision(chat: ChatService, world: World) -> None:
    req = _request_promotion(world, _v2(world))
    reply = chat.reply("t", f"approve {req.id}", user="alice")
    assert reply == (f"{req.id} approved by alice. incident inc-svc-1 resumes on the loop's "
                     "next pass")
    d = world.system.approvals.decision(req.id)
    assert d is not None and (d.approved, d.by) == (True, "alice")
    assert world.fleet.registry.service("svc").champion == 1  # the incident's thread promotes


def test_approve_by_a_non_approver_is_refused(chat: ChatService, world: World) -> None:
    req = _request_promotion(world, _v2(world))
    reply = chat.reply("t", f"approve {req.id}", user="mallory")
    assert reply.startswith(f"error: 'mallory' may not decide approval {req.id!r}"), reply
    assert "allowed approvers: 'alice'" in reply
    assert world.system.approvals.decision(req.id) is None
    assert [p.id for p in world.system.approvals.pending()] == [req.id]


def test_reject_with_a_reason_stores_the_reason(chat: ChatService, world: World) -> None:
    req = _request_promotion(world, _v2(world))
    reply = chat.reply("t", f"reject {req.id} because the trading freeze starts at noon",
                       user="alice")
    assert reply.startswith(f"{req.id} rejected by alice."), reply
    d = world.system.approvals.decision(req.id)
    assert d is not None
    assert (d.approved, d.by, d.reason) == (False, "alice", "the trading freeze starts at noon")
    assert world.system.approvals.pending() == []


# --- action requests ----------------------------------------------------------------------


def test_retrain_registers_a_new_candidate(chat: ChatService, world: World) -> None:
    world.run(1_000, 3_000)  # labelled traffic to train on
    reply = chat.reply("t", "retrain svc", user="alice")
    assert '"version": 2' in reply and '"parent": 1' in reply, reply
    v2 = world.fleet.registry.version("svc", 2)
    assert (v2.status.value, v2.parent, v2.created_by) == ("candidate", 1, "human:alice")
    assert world.fleet.registry.service("svc").champion == 1  # trained, not deployed


def test_rollback_restores_the_previous_champion(chat: ChatService, world: World) -> None:
    reg = world.fleet.registry
    reg.promote("svc", _v2(world), actor="test", reason="second version")
    reply = chat.reply("t", "rollback svc", user="alice")
    assert '"action": "rollback"' in reply and '"champion": 1' in reply, reply
    assert reg.service("svc").champion == 1
    [entry] = world.fleet.audit.read(service="svc", action_prefix="registry.rollback")
    assert entry.actor == "human:alice"
    assert entry.reason == "rollback requested in chat by alice"


def test_promote_ends_in_an_approval_prompt_then_an_approver_executes_it(
        chat: ChatService, world: World) -> None:
    """The issue's action request: ``promote svc v2`` asks for approval; ``approve ID`` runs it."""
    v2 = _v2(world)
    prompt = chat.reply("t", f"promote svc v{v2}", user="mallory")
    [req] = world.system.approvals.pending()
    assert prompt == (f"needs approval {req.id} (promote 'svc' version=2); approvers: alice. "
                      f"An approver says: approve {req.id}")
    assert (req.action.name, req.action.args, req.incident, req.requested_by) == (
        "promote", {"version": 2}, "chat-t", "human:mallory")
    assert world.fleet.registry.service("svc").champion == 1  # nothing ran yet

    done = chat.reply("t", f"approve {req.id}", user="alice")
    assert done.startswith(f"{req.id} approved by alice. "), done
    assert '"status": "done"' in done, done
    svc = world.fleet.registry.service("svc")
    assert (svc.champion, svc.previous) == (2, 1)
    promotes = world.fleet.audit.read(service="svc", action_prefix="registry.promote")
    assert promotes[-1].details["version"] == 2
    assert world.system.approvals.pending() == []


# --- threads ------------------------------------------------------------------------------


def test_a_thread_persists_in_redis_across_service_instances(
        r: redis.Redis, keys: Keys, redis_url: str, tmp_path: Path, world: World) -> None:
    """A second ChatService on its own system (another process, say) continues the thread."""
    first = ChatService(world.system)
    assert first.reply("ops-1", "status", user="alice").startswith("svc: champion v1")
    cfg = {"configurable": {"thread_id": "chat-ops-1"}}
    before = first.graph.get_state(cfg).values["messages"]

    world.fleet.registry.promote("svc", _v2(world), actor="test", reason="second version")
    other = build_system(build_fleet(r, redis_url, prefix=keys.prefix,
                                     artifacts=tmp_path / "artifacts", clock=world.clock))
    try:
        second = ChatService(other)
        # The same command again in the same thread reads the fleet afresh (no stale answer).
        assert second.reply("ops-1", "status", user="alice").startswith(
            "svc: champion v2, mode full")
        after = second.graph.get_state(cfg).values["messages"]
    finally:
        other.close()
    assert [m.content for m in after[: len(before)]] == [m.content for m in before]
    assert len(after) > len(before)
    assert [m.content for m in after if m.type == "human"] == ["status", "status"]


def test_cli_chat_message_prints_the_status(world: World, keys: Keys, redis_url: str,
                                            tmp_path: Path) -> None:
    """``flywheel chat -m status`` against the test's Redis and prefix."""
    res = CliRunner().invoke(app, ["chat", "-m", "status"], env={
        "REDIS_URL": redis_url, "FLYWHEEL_PREFIX": keys.prefix,
        "FLYWHEEL_HOME": str(tmp_path), "FLYWHEEL_MODEL": None})
    assert res.exit_code == 0, res.output
    assert res.output == "svc: champion v1, mode full, 0 open incident(s)\npending approvals: 0\n"


def test_cli_ack_closes_an_escalated_incident_for_an_approver_only(
        world: World, keys: Keys, redis_url: str, tmp_path: Path) -> None:
    """``flywheel ack ID``: a non-approver gets one line and changes nothing; alice closes it."""
    incidents = world.system.incidents
    inc = incidents.observe(Signal(service=world.service, kind="performance_drop",
                                   severity="critical", detector="error_rate_cusum",
                                   at=world.clock.now(), evidence={"rise": 0.1}))
    assert inc is not None
    env = {"REDIS_URL": redis_url, "FLYWHEEL_PREFIX": keys.prefix,
           "FLYWHEEL_HOME": str(tmp_path), "FLYWHEEL_MODEL": None}
    # (the console entry point, apps.cli.main, prints these domain errors as one line)
    res = CliRunner().invoke(app, ["ack", inc.id, "--user", "alice"], env=env)
    assert isinstance(res.exception, InvalidInput)
    assert "is open, not escalated" in str(res.exception)
    incidents.transition(inc.id, "escalated", actor="agent:supervisor", reason="not better")
    res = CliRunner().invoke(app, ["ack", inc.id, "--user", "mallory"], env=env)
    assert isinstance(res.exception, PolicyViolation)
    assert "'mallory' may not acknowledge" in str(res.exception)
    assert incidents.get(inc.id).status.value == "escalated"
    res = CliRunner().invoke(app, ["ack", inc.id, "--user", "alice", "--accept"], env=env)
    assert res.exit_code == 0, res.output
    assert res.output == f"{inc.id} acknowledged by alice: resolved\n"
    assert world.fleet.registry.service(world.service).accepted_at > 0  # the CLI's own clock
