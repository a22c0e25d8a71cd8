"""The Slack notifier and the executor of approved chat-made requests, in process.

Real Redis, real HTTP: the Web API is the hand-written loopback stand-in of
tests/apps/test_slack.py, here able to answer 429 (with ``Retry-After``) or 5xx on demand. Two
notifiers on the same Redis stand for two processes that both own Slack.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from apps.serving import http_server
from apps.slack import build_slack_app, mount
from apps.slack.blocks import APPROVE_ACTION
from apps.slack.notifier import SlackNotifier, retrying_client
from apps.slack.records import SlackRecords
from apps.system import System, build_system
from fleet.actions import ActionContext
from fleet.errors import ApprovalRequired
from fleet.incidents import Signal
from fleet.operations.approved import ApprovedRequests
from fleet.schema import Policy
from tests.apps.test_loop import _audit, _fleet, _register
from tests.apps.test_slack import SECRET, Call, Harness, SlackWebAPIStandIn

CHANNEL = "CDEFAULT"


class FlakyStandIn(SlackWebAPIStandIn):
    """The hand-written stand-in, which first answers ``failures`` (status codes) to posts."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[int] = []
        self.answered: dict[int, str] = {}

    def answer(self, method: str, p: dict[str, Any]) -> dict[str, Any]:
        out = super().answer(method, p)
        if method == "chat.postMessage":
            self.answered[id(p)] = out["ts"]
        return out

    def answered_ts(self, call: Call) -> str:
        """The ts this stand-in gave the message posted by ``call``."""
        return self.answered[id(call.params)]

    def app(self) -> FastAPI:
        api = super().app()

        @api.middleware("http")
        async def flaky(request: Request, call_next: Any) -> Any:
            if request.url.path.endswith("/chat.postMessage") and self.failures:
                status = self.failures.pop(0)
                with self.changed:
                    self.calls.append(Call(f"failed:{status}", {}, ""))
                headers = {"Retry-After": "0"} if status == 429 else {}
                return JSONResponse({"ok": False, "error": "ratelimited"}, status_code=status,
                                    headers=headers)
            return await call_next(request)

        return api


@pytest.fixture()
def web_api() -> Iterator[tuple[FlakyStandIn, str]]:
    stand_in = FlakyStandIn()
    with http_server(stand_in.app()) as url:
        yield stand_in, f"{url}/api/"


@pytest.fixture()
def system(r, keys, redis_url, artifacts_dir: Path, clock) -> Iterator[System]:
    fleet = _fleet(r, keys, redis_url, artifacts_dir, clock)
    _register(fleet, "svc")
    _register(fleet, "own", Policy(slack_channel="COWN"))
    fleet.registry.add_version("svc", _model(), created_by="test",
                               metrics={"holdout_accuracy": 0.91234,
                                        "champion_holdout_accuracy": 0.8712})
    s = build_system(fleet)
    yield s
    s.close()


def _model() -> Any:
    from tests.apps.test_loop import _const

    return _const(1)


def _notifier(system: System, url: str, owner: str) -> SlackNotifier:
    f = system.fleet
    return SlackNotifier(retrying_client("xoxb-test", url), SlackRecords(f.r, f.keys, owner),
                         approvals=system.approvals, incidents=system.incidents,
                         registry=f.registry, audit=f.audit, clock=f.clock, channel=CHANNEL,
                         slack_ids={"oncall": "UONCALL"})


_steps = itertools.count(1)


def _ask_promotion(system: System, service: str = "svc", version: int = 3) -> Any:
    """A promotion asked for in chat: returns the pending request."""
    ctx = ActionContext(incident="chat-t1", actor="human:oncall", reason="asked in chat",
                        thread_id="chat-t1", step=f"call-{next(_steps)}")
    with pytest.raises(ApprovalRequired) as exc:
        system.ops.promote(service, version, ctx)
    return exc.value.request


def _prompts(api: SlackWebAPIStandIn) -> list[Call]:
    return [c for c in api.made("chat.postMessage")
            if any(b.get("type") == "actions" for b in c.params.get("blocks") or [])]


def test_two_notifiers_post_each_prompt_once_and_lock_it_once_after_any_decision(
        system: System, web_api) -> None:
    api, url = web_api
    a, b = _notifier(system, url, "a"), _notifier(system, url, "b")
    req = _ask_promotion(system)
    assert a.sync().posted == [req.id]
    assert b.sync().posted == []
    [prompt] = _prompts(api)
    text = json.dumps(prompt.params["blocks"], ensure_ascii=False)
    assert prompt.params["channel"] == CHANNEL
    for fact in ("promote 'svc' version=3", "*Holdout accuracy*: candidate `0.9123` · "
                 "champion `0.8712`", "Expires", "oncall (<@UONCALL>)"):
        assert fact in text, fact

    # Decided elsewhere (the CLI / HTTP API call the store): the next pass locks it, once.
    system.approvals.decide(req.id, approve=True, by="oncall", reason="",
                            digest=req.action_digest)
    locked = [n.sync().locked for n in (b, a, b)]
    assert locked == [[req.id], [], []]
    [update] = api.made("chat.update")
    assert (update.params["channel"], update.params["ts"]) == (CHANNEL, api.answered_ts(prompt))
    assert "Approved* by oncall (<@UONCALL>)" in json.dumps(update.params["blocks"])
    assert not [blk for blk in update.params["blocks"] if blk["type"] == "actions"]


def test_an_expired_request_is_marked_expired(system: System, web_api, clock) -> None:
    api, url = web_api
    n = _notifier(system, url, "a")
    req = _ask_promotion(system)
    n.sync()
    clock.advance(901)
    assert [x.id for x in system.approvals.expire_overdue()] == [req.id]
    assert n.sync().locked == [req.id]
    [update] = api.made("chat.update")
    assert "*Expired* (auto-denied)" in json.dumps(update.params["blocks"])


def test_a_service_policy_names_its_own_channel(system: System, web_api) -> None:
    api, url = web_api
    _notifier(system, url, "a").sync()
    req = _ask_promotion(system, "own", 1)
    _notifier(system, url, "a").sync()
    [prompt] = _prompts(api)
    assert prompt.params["channel"] == "COWN" and req.id in json.dumps(prompt.params["blocks"])


def test_rate_limits_are_retried_and_a_failed_post_is_retried_next_pass(
        system: System, web_api) -> None:
    api, url = web_api
    n = _notifier(system, url, "a")
    req = _ask_promotion(system)
    api.failures = [429]  # Retry-After: 0 -> the client waits, then posts again
    assert n.sync().posted == [req.id]
    assert [c.method for c in api.calls] == ["failed:429", "chat.postMessage"]

    other = _ask_promotion(system, "svc", 1)
    api.failures = [503, 503, 503]  # more than the client retries: this pass gives up
    rep = n.sync()
    assert rep.posted == [] and list(rep.failed) == [f"approval:{other.id}"]
    assert len(_prompts(api)) == 1
    assert n.sync().posted == [other.id]  # not lost: posted on the next pass
    assert len(_prompts(api)) == 2


def test_an_incident_gets_a_thread_with_its_steps_and_outcome(system: System, web_api,
                                                              clock) -> None:
    api, url = web_api
    n = _notifier(system, url, "a")
    inc = system.incidents.observe(Signal(
        service="svc", kind="latency_regression", severity="critical", detector="test",
        evidence={"p95_ms": 900.0}, version=2, at=clock.now()))
    assert inc is not None
    n.sync()
    [opened] = [c for c in api.made("chat.postMessage") if not c.params.get("thread_ts")]
    assert f"Incident {inc.id}" in opened.params["text"]
    system.incidents.transition(inc.id, "investigating", actor="agent:supervisor",
                                reason="picked up")
    system.incidents.transition(inc.id, "resolved", actor="agent:supervisor",
                                reason="rolled back svc")
    n.sync()
    replies = [c for c in api.made("chat.postMessage") if c.params.get("thread_ts")]
    n.sync()  # nothing new: no more replies
    assert len(api.made("chat.postMessage")) == 1 + len(replies)
    assert {c.params["thread_ts"] for c in replies} == {api.answered_ts(opened)}
    said = "\n".join(c.params["text"] for c in replies)
    assert said.index("by agent:supervisor: picked up") < said.index("rolled back svc")
    assert replies[-1].params["text"] == (f":white_check_mark: Incident {inc.id} resolved: "
                                          "rolled back svc")
    assert replies[-1].params["reply_broadcast"] in (True, "true", "1")


def test_an_incident_that_failed_between_two_passes_still_gets_its_thread(
        system: System, web_api, clock) -> None:
    """A failure that opens and ends between passes must still reach a person; a quick
    resolution does not need a thread."""
    api, url = web_api
    n = _notifier(system, url, "a")
    ids = []
    for kind, outcome in (("latency_regression", "failed"), ("error_rate_regression", "resolved")):
        inc = system.incidents.observe(Signal(
            service="svc", kind=kind, severity="critical", detector="test",
            evidence={"p95_ms": 900.0}, version=2, at=clock.now()))
        assert inc is not None
        system.incidents.transition(inc.id, outcome, actor="loop", reason=f"{outcome} quickly")
        ids.append(inc.id)
    n.sync()
    n.sync()
    opened = [c for c in api.made("chat.postMessage") if not c.params.get("thread_ts")]
    assert len(opened) == 1 and f"Incident {ids[0]}" in opened[0].params["text"]
    replies = [c for c in api.made("chat.postMessage") if c.params.get("thread_ts")]
    assert replies and "failed" in replies[-1].params["text"]
    assert "failed quickly" in replies[-1].params["text"]


def test_an_approved_chat_request_runs_once_whichever_channel_approved_it(
        r, keys, system: System) -> None:
    req = _ask_promotion(system, "svc", 1)
    first, second = ApprovedRequests(system.ops), ApprovedRequests(system.ops)
    assert first.sweep() == {}  # pending: watched, nothing runs
    system.approvals.decide(req.id, approve=True, by="oncall", reason="",
                            digest=req.action_digest)  # e.g. the CLI or the HTTP API
    out = first.sweep()
    assert out[req.id]["status"] == "done" and not out[req.id]["replayed"]
    assert second.sweep() == {}  # nothing left to watch
    again = second.execute(req.id)  # e.g. Slack's hook, late
    assert again["status"] == "done" and again["replayed"]
    assert system.fleet.registry.service("svc").champion == 1
    promotions = [e for e in _audit(r, keys, "registry.promote") if e.details.get("version") == 1
                  and e.service == "svc"]
    assert len(promotions) == 2  # the setup's and the approved one, not a third


def test_a_slack_retry_to_another_process_is_dropped_and_the_prompt_locked_once(
        system: System, web_api) -> None:
    """Two Slack apps (two serve processes) and a notifier share their records in Redis."""
    api, url = web_api
    f = system.fleet
    apps = [build_slack_app(approvals=system.approvals, signing_secret=SECRET,
                            bot_token="xoxb-test", approvers={"UONCALL": "oncall"},
                            api_url=url, records=SlackRecords(f.r, f.keys, name))
            for name in ("serve-1", "serve-2")]
    n = _notifier(system, url, "loop")
    req = _ask_promotion(system)
    n.sync()
    [prompt] = _prompts(api)
    ts = api.answered_ts(prompt)
    with TestClient(mount(FastAPI(), apps[0])) as one, TestClient(mount(FastAPI(), apps[1])) as two:
        h1 = Harness(one, api, apps[0].client, [], [])
        h2 = Harness(two, api, apps[1].client, [], [])
        h1.click(APPROVE_ACTION, "UONCALL", ts, n=7)
        [update] = api.wait("chat.update")
        assert h2.click(APPROVE_ACTION, "UONCALL", ts, n=7,
                        headers={"x-slack-retry-num": "1"}).status_code == 200
        # A later, distinct click on the second app is handled: once it has answered, the
        # retry (dropped before any listener) is known to have done nothing.
        h2.click(APPROVE_ACTION, "UONCALL", ts, n=8)
        [told] = api.wait("chat.postEphemeral")
    assert "already approved by oncall" in told.params["text"]
    assert n.sync().locked == []  # the click's process locked it; the notifier does not again
    updates = api.made("chat.update")
    assert updates[0] is update and update.params["ts"] == ts
    assert len(updates) == 2  # the click's lock, and the later click's "already decided" view
    d = system.approvals.decision(req.id)
    assert d is not None and d.approved
