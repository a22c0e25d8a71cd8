"""Slack app: signed requests only, only approvers decide, the first decision wins and locks the
prompt, rejections carry a reason from a modal, retries are harmless, mentions and DMs chat.

Requests are signed with Slack's v0 scheme (HMAC-SHA256 of ``v0:{ts}:{body}``, written out here
rather than taken from the library under test) and posted through the app's FastAPI route. The
app's Web API calls go to a hand-written stand-in of Slack's Web API on loopback.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from apps.serving import http_server
from apps.settings import Settings
from apps.slack import (
    build_slack_app,
    mount,
    notify_incident,
    post_approval,
    slack_app_from_settings,
    socket_mode_handler,
)
from apps.slack.blocks import APPROVE_ACTION, REJECT_ACTION, REJECT_VIEW
from fleet.actions import ActionContext, ActionSpec
from fleet.approvals import ApprovalRequest, ApprovalStore
from fleet.errors import InvalidInput
from fleet.incidents import Incident, Signal
from fleet.schema import Policy

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-test-token"
CHANNEL = "CAPPROVALS"
# Slack user ids: alice and bob are approvers; carol is mapped but not listed in the policy.
APPROVERS = {"UALICE": "alice", "UBOB": "bob", "UCAROL": "carol"}
POLICY = Policy(approvers=("alice", "bob"), approval_ttl_s=900.0)
PROMOTE = ActionSpec(name="promote", service="elec", args={"version": 3})
CTX = ActionContext(incident="inc-elec-performance_drop-1", actor="agent:deployment",
                    reason="canary beat the champion", thread_id="inc-elec-performance_drop-1")
EVIDENCE = {"holdout_accuracy": 0.912345, "champion_accuracy": 0.8713, "canary_samples": 412}
WAIT_S = 10.0


# --- a hand-written stand-in of Slack's Web API -------------------------------------------------
@dataclass
class Call:
    method: str
    params: dict[str, Any]
    token: str


@dataclass
class SlackWebAPIStandIn:
    """Hand-written stand-in of Slack's Web API (not Slack's code): records each call and answers
    ``{"ok": true, ...}`` shaped like Slack's documented responses for the methods the app uses."""

    calls: list[Call] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    ts: Iterator[int] = field(default_factory=lambda: itertools.count(100))

    def app(self) -> FastAPI:
        api = FastAPI()

        @api.post("/api/{method}")
        async def call(method: str, request: Request) -> dict[str, Any]:
            raw = (await request.body()).decode()
            if "json" in request.headers.get("content-type", ""):
                params = json.loads(raw or "{}")
            else:
                params = {k: v[0] for k, v in parse_qs(raw).items()}
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            with self.changed:
                self.calls.append(Call(method, params, token))
                self.changed.notify_all()
            return self.answer(method, params)

        return api

    def answer(self, method: str, p: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "url": "https://flywheel.slack.com/", "team": "Flywheel",
                    "user": "flywheel", "team_id": "T1", "user_id": "UBOT", "bot_id": "BBOT",
                    "is_enterprise_install": False}
        if method == "chat.postMessage":
            ts = f"1700000000.{next(self.ts):06d}"
            return {"ok": True, "channel": p["channel"], "ts": ts,
                    "message": {"type": "message", "text": p.get("text"), "ts": ts,
                                "bot_id": "BBOT"}}
        if method == "chat.update":
            return {"ok": True, "channel": p["channel"], "ts": p["ts"], "text": p.get("text")}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": f"1700000000.{next(self.ts):06d}"}
        if method == "views.open":
            return {"ok": True, "view": {**p["view"], "id": "VREASON1", "hash": "h1"}}
        return {"ok": False, "error": "unknown_method"}

    def made(self, method: str) -> list[Call]:
        with self.changed:
            return [c for c in self.calls if c.method == method]

    def wait(self, method: str, count: int = 1) -> list[Call]:
        """Block until ``count`` calls of ``method`` arrived (lazy listeners run in threads)."""
        with self.changed:
            ok = self.changed.wait_for(lambda: len(self.made(method)) >= count, timeout=WAIT_S)
        assert ok, f"expected {count} {method} call(s) within {WAIT_S} s; got {self.calls}"
        return self.made(method)


def eventually(check: Any, what: str) -> None:
    """Poll ``check()`` until true, for at most WAIT_S (a lazy listener's last step)."""
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {WAIT_S} s"
        time.sleep(0.01)


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def web_api() -> Iterator[tuple[SlackWebAPIStandIn, str]]:
    stand_in = SlackWebAPIStandIn()
    with http_server(stand_in.app()) as url:
        yield stand_in, f"{url}/api/"


@pytest.fixture()
def slack_api(web_api) -> SlackWebAPIStandIn:
    stand_in, _ = web_api
    with stand_in.changed:
        stand_in.calls.clear()
    return stand_in


@pytest.fixture()
def store(r, keys, clock) -> ApprovalStore:
    counter = itertools.count(1)
    return ApprovalStore(r, keys, clock, new_id=lambda: f"apr-{next(counter)}")


@dataclass
class Harness:
    """The app behind its FastAPI route, and what its hooks saw."""

    http: TestClient
    api: SlackWebAPIStandIn
    client: Any
    decided: list[str]
    chats: list[tuple[str, str]]
    events: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def post(self, body: str, content_type: str, *, ts: int | None = None,
             secret: str = SECRET, headers: dict[str, str] | None = None) -> Any:
        stamp = str(int(time.time()) if ts is None else ts)
        digest = hmac.new(secret.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256)
        return self.http.post("/slack/events", content=body, headers={
            "content-type": content_type, "x-slack-request-timestamp": stamp,
            "x-slack-signature": f"v0={digest.hexdigest()}", **(headers or {})})

    def interact(self, payload: dict[str, Any], **kw: Any) -> Any:
        body = urlencode({"payload": json.dumps(payload)})
        return self.post(body, "application/x-www-form-urlencoded", **kw)

    def prompt(self, req: ApprovalRequest) -> str:
        """Post the approval prompt through the app's client; return its ts."""
        return post_approval(self.client, CHANNEL, req, now=req.created_at,
                             slack_ids={"alice": "UALICE", "bob": "UBOB"})

    def click(self, action_id: str, user: str, message_ts: str, *, n: int | None = None,
              value: str | None = None, **kw: Any) -> Any:
        """Press a button of the posted prompt; ``n`` repeats an earlier click's delivery;
        ``value`` forges the button's value."""
        [posted] = [c for c in self.api.made("chat.postMessage") if c.params.get("blocks")]
        [buttons] = [b for b in posted.params["blocks"] if b["type"] == "actions"]
        [button] = [e for e in buttons["elements"] if e["action_id"] == action_id]
        n = next(self.events) if n is None else n
        return self.interact({
            "type": "block_actions", "team": {"id": "T1", "domain": "flywheel"},
            "user": {"id": user, "team_id": "T1"}, "api_app_id": "A1",
            "trigger_id": f"trigger-{n}",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": CHANNEL,
                          "is_ephemeral": False},
            "channel": {"id": CHANNEL, "name": "approvals"},
            "message": {"type": "message", "ts": message_ts, "blocks": posted.params["blocks"]},
            "actions": [{"type": "button", "action_id": action_id,
                         "block_id": buttons["block_id"], "value": value or button["value"],
                         "action_ts": f"1700000001.{n:06d}"}],
        }, **kw)

    def submit_reason(self, user: str, reason: str, view: dict[str, Any]) -> Any:
        return self.interact({
            "type": "view_submission", "team": {"id": "T1"}, "user": {"id": user},
            "api_app_id": "A1", "trigger_id": "trigger-submit",
            "view": {**view, "id": "VREASON1", "hash": "h1", "state": {"values": {
                "reason": {"reason_input": {"type": "plain_text_input", "value": reason}}}}},
        })

    def event(self, event: dict[str, Any], *, event_id: str | None = None, **kw: Any) -> Any:
        body = json.dumps({
            "token": "legacy", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
            "event": event, "event_id": event_id or f"Ev{next(self.events):04d}",
            "event_time": 1700000100,
        })
        return self.post(body, "application/json", **kw)


@pytest.fixture()
def slack(store: ApprovalStore, slack_api, web_api) -> Iterator[Harness]:
    decided: list[str] = []
    chats: list[tuple[str, str]] = []

    def chat(key: str, text: str) -> str:
        chats.append((key, text))
        return f"runbook: {text}"

    app = build_slack_app(approvals=store, signing_secret=SECRET, bot_token=BOT_TOKEN,
                          approvers=APPROVERS, on_decision=decided.append, chat=chat,
                          api_url=web_api[1])
    with TestClient(mount(FastAPI(), app)) as http:
        yield Harness(http, slack_api, app.client, decided, chats)


@pytest.fixture()
def request_(store: ApprovalStore) -> ApprovalRequest:
    return store.request(PROMOTE, CTX, POLICY, risk="high", evidence=EVIDENCE)


def _text(call: Call) -> str:
    return call.params["text"] + json.dumps(call.params.get("blocks", []))


# --- signatures ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SigCase:
    name: str
    secret: str = SECRET
    age_s: int = 0
    status: int = 200


@pytest.mark.parametrize("case", [
    SigCase("valid"),
    SigCase("valid, 4 min old", age_s=240),
    SigCase("wrong secret", secret="not-the-secret", status=401),
    SigCase("stale: 6 min old", age_s=360, status=401),
    SigCase("from the future: 6 min ahead", age_s=-360, status=401),
], ids=lambda c: c.name)
def test_only_freshly_signed_requests_are_accepted(slack: Harness, case: SigCase) -> None:
    """Slack's v0 signature over the exact body, at most 5 minutes old, or 401 (replays)."""
    body = json.dumps({"token": "legacy", "challenge": "c-123", "type": "url_verification"})
    resp = slack.post(body, "application/json", ts=int(time.time()) - case.age_s,
                      secret=case.secret)
    assert resp.status_code == case.status
    if case.status == 200:
        assert resp.json() == {"challenge": "c-123"}


def test_a_tampered_body_is_rejected(slack: Harness, request_: ApprovalRequest, store) -> None:
    """The signature covers the body: a click with a swapped user does not verify."""
    stamp = str(int(time.time()))
    signed = urlencode({"payload": json.dumps({"type": "block_actions", "user": {"id": "UX"}})})
    mac = hmac.new(SECRET.encode(), f"v0:{stamp}:{signed}".encode(), hashlib.sha256).hexdigest()
    forged = signed.replace("UX", "UALICE")
    resp = slack.http.post("/slack/events", content=forged, headers={
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": stamp, "x-slack-signature": f"v0={mac}"})
    assert resp.status_code == 401
    assert store.decision(request_.id) is None


# --- prompts ------------------------------------------------------------------------------------
def test_prompt_shows_the_facts_and_binds_buttons_to_the_digest(
    slack: Harness, request_: ApprovalRequest
) -> None:
    ts = slack.prompt(request_)
    [call] = slack.api.made("chat.postMessage")
    assert (call.params["channel"], call.token) == (CHANNEL, BOT_TOKEN)
    assert ts.startswith("1700000000.")
    text = _text(call)
    for shown in ("`elec`", "promote 'elec' version=3", ":red_circle: high",
                  "canary beat the champion", "holdout_accuracy: `0.9123`",
                  "champion_accuracy: `0.8713`", "canary_samples: `412`",
                  "<!date^1700000900^", "in 15 min", "alice (<@UALICE>)", "bob (<@UBOB>)"):
        assert shown in text, shown
    [actions] = [b for b in call.params["blocks"] if b["type"] == "actions"]
    approve, reject = actions["elements"]
    assert (approve["action_id"], approve["style"]) == (APPROVE_ACTION, "primary")
    assert (reject["action_id"], reject["style"]) == (REJECT_ACTION, "danger")
    for button in (approve, reject):
        assert json.loads(button["value"]) == {"id": request_.id,
                                               "digest": request_.action_digest}


def test_incident_notification(slack: Harness) -> None:
    signal = Signal(service="elec", kind="performance_drop", severity="critical",
                    detector="cusum", evidence={"accuracy": 0.71234, "threshold": 0.8},
                    version=2, at=1_700_000_000.0)
    incident = Incident.opened_by(signal, incident_id="inc-elec-performance_drop-1",
                                  now=1_700_000_000.0)
    notify_incident(slack.client, "CINCIDENTS", incident)
    [call] = slack.api.made("chat.postMessage")
    assert call.params["channel"] == "CINCIDENTS"
    text = _text(call)
    for shown in ("Incident inc-elec-performance_drop-1", "performance drop on elec",
                  ":rotating_light: critical", "cusum", "accuracy: `0.7123`",
                  "threshold: `0.8`", "*Version*\\n2"):
        assert shown in text, shown


# --- deciding -----------------------------------------------------------------------------------
@pytest.mark.parametrize("user", ["USTRANGER", "UCAROL"], ids=["unmapped", "not-an-approver"])
def test_non_approver_is_refused_and_nothing_is_decided(
    slack: Harness, request_: ApprovalRequest, store: ApprovalStore, user: str
) -> None:
    ts = slack.prompt(request_)
    assert slack.click(APPROVE_ACTION, user, ts).status_code == 200

    [refusal] = slack.api.wait("chat.postEphemeral")
    assert (refusal.params["channel"], refusal.params["user"]) == (CHANNEL, user)
    assert "you may not decide `apr-1`" in refusal.params["text"]
    assert "alice (<@UALICE>), bob (<@UBOB>)" in refusal.params["text"]
    assert "FLYWHEEL_SLACK_APPROVERS" in refusal.params["text"]
    assert store.decision(request_.id) is None
    assert store.pending() == [request_]
    assert slack.api.made("chat.update") == [] and slack.decided == []


def test_approve_decides_locks_the_prompt_and_resumes_once(
    slack: Harness, request_: ApprovalRequest, store: ApprovalStore
) -> None:
    """A double click: the second click finds the first decision and changes nothing."""
    ts = slack.prompt(request_)
    slack.click(APPROVE_ACTION, "UALICE", ts)
    [update] = slack.api.wait("chat.update")
    decision = store.decision(request_.id)
    assert decision is not None
    assert (decision.approved, decision.by, decision.action_digest) == (
        True, "alice", request_.action_digest)
    assert (update.params["channel"], update.params["ts"]) == (CHANNEL, ts)
    assert "Approved* by alice (<@UALICE>)" in _text(update)
    assert not [b for b in update.params["blocks"] if b["type"] == "actions"]
    eventually(lambda: slack.decided, "on_decision")  # called after the prompt is locked
    assert slack.decided == [request_.id]

    slack.click(APPROVE_ACTION, "UALICE", ts)
    [_, again] = slack.api.wait("chat.update", 2)
    [told] = slack.api.wait("chat.postEphemeral")
    assert again.params["blocks"] == update.params["blocks"]
    assert "already approved by alice (<@UALICE>)" in told.params["text"]
    assert store.decision(request_.id) == decision
    assert slack.decided == [request_.id]


def test_reject_asks_a_reason_in_a_modal_and_decides_with_it(
    slack: Harness, request_: ApprovalRequest, store: ApprovalStore
) -> None:
    ts = slack.prompt(request_)
    slack.click(REJECT_ACTION, "UBOB", ts)
    [opened] = slack.api.wait("views.open")
    view = opened.params["view"]
    assert opened.params["trigger_id"].startswith("trigger-")
    assert view["callback_id"] == REJECT_VIEW
    assert store.decision(request_.id) is None

    blank = slack.submit_reason("UBOB", "   ", view)
    assert blank.json() == {"response_action": "errors",
                            "errors": {"reason": "A reason is required; it is sent back to the "
                                                 "agent."}}
    assert store.decision(request_.id) is None

    assert slack.submit_reason("UBOB", "holdout is only 412 rows", view).status_code == 200
    [update] = slack.api.wait("chat.update")
    decision = store.decision(request_.id)
    assert decision is not None
    assert (decision.approved, decision.by, decision.reason) == (
        False, "bob", "holdout is only 412 rows")
    assert (update.params["channel"], update.params["ts"]) == (CHANNEL, ts)
    assert "Rejected* by bob (<@UBOB>)" in _text(update)
    assert "holdout is only 412 rows" in _text(update)
    eventually(lambda: slack.decided, "on_decision")
    assert slack.decided == [request_.id]


def test_approve_then_reject_keeps_the_first_decision(
    slack: Harness, request_: ApprovalRequest, store: ApprovalStore
) -> None:
    """Bob opens the reason modal, Alice approves meanwhile, then Bob submits: Alice's stands,
    the prompt shows it and Bob is told. A later Reject click gets no modal at all."""
    ts = slack.prompt(request_)
    slack.click(REJECT_ACTION, "UBOB", ts)
    [opened] = slack.api.wait("views.open")
    slack.click(APPROVE_ACTION, "UALICE", ts)
    [first] = slack.api.wait("chat.update")

    slack.submit_reason("UBOB", "too risky", opened.params["view"])
    [_, second] = slack.api.wait("chat.update", 2)
    [told] = slack.api.wait("chat.postEphemeral")
    assert second.params["blocks"] == first.params["blocks"]
    assert "Approved* by alice" in _text(second)
    assert told.params["user"] == "UBOB"
    assert "already approved by alice (<@UALICE>)" in told.params["text"]

    slack.click(REJECT_ACTION, "UBOB", ts)
    slack.api.wait("chat.postEphemeral", 2)
    assert len(slack.api.made("views.open")) == 1
    decision = store.decision(request_.id)
    assert decision is not None and (decision.approved, decision.by) == (True, "alice")
    assert slack.decided == [request_.id]


def test_expired_or_foreign_digest_is_refused(
    slack: Harness, request_: ApprovalRequest, store: ApprovalStore, clock
) -> None:
    ts = slack.prompt(request_)
    clock.advance(901)
    slack.click(APPROVE_ACTION, "UALICE", ts)
    [told] = slack.api.wait("chat.postEphemeral")
    assert "expired at 2023-11-14T22:28:20Z and can no longer be decided" in told.params["text"]
    assert store.decision(request_.id) is None and slack.decided == []


def test_a_forged_key_like_approval_id_is_refused_before_redis(
    slack: Harness, request_: ApprovalRequest, store: ApprovalStore, r, keys
) -> None:
    ts = slack.prompt(request_)
    pointer = f"open:{request_.incident}:{request_.action_digest}"
    forged = json.dumps({"id": pointer, "digest": request_.action_digest})
    assert slack.click(APPROVE_ACTION, "UALICE", ts, value=forged).status_code == 200
    [told] = slack.api.wait("chat.postEphemeral")
    assert "invalid approval id" in told.params["text"]
    assert r.type(keys.approval(pointer)) == "string"
    assert store.decision(request_.id) is None and slack.decided == []


def test_slack_retries_and_repeated_deliveries_are_harmless(
    slack: Harness, request_: ApprovalRequest, store: ApprovalStore
) -> None:
    """Slack resends an event it thinks was lost (X-Slack-Retry-Num); nothing is posted twice.

    A repeat is dropped before any listener starts, so once a later event's reply arrived, the
    repeats are known to have done nothing.
    """
    mention = {"type": "app_mention", "user": "UALICE", "text": "<@UBOT> status",
               "ts": "1700000200.000100", "channel": "CCHAT"}
    slack.event(mention, event_id="EvSAME")
    slack.api.wait("chat.postMessage")
    retry = slack.event(mention, event_id="EvSAME",
                        headers={"x-slack-retry-num": "1", "x-slack-retry-reason": "http_timeout"})
    assert retry.status_code == 200

    ts = slack.prompt(request_)
    slack.click(APPROVE_ACTION, "UALICE", ts, n=500)
    slack.api.wait("chat.update")
    # The same click delivered again (same action_ts) must not post an "already decided" reply.
    slack.click(APPROVE_ACTION, "UALICE", ts, n=500, headers={"x-slack-retry-num": "1"})

    slack.event({**mention, "ts": "1700000300.000100", "text": "<@UBOT> incidents"})
    replies = [c for c in slack.api.wait("chat.postMessage", 3) if c.params["channel"] == "CCHAT"]
    assert [c.params["text"] for c in replies] == ["runbook: status", "runbook: incidents"]
    assert [text for _, text in slack.chats] == ["status", "incidents"]
    assert slack.api.made("chat.postEphemeral") == []
    assert len(slack.api.made("chat.update")) == 1
    assert slack.decided == [request_.id]


def test_ack_does_not_wait_for_the_work(store: ApprovalStore, slack_api, web_api) -> None:
    """Slack gives up after 3 s: the HTTP answer comes while the reply is still being made."""
    started, release = threading.Event(), threading.Event()

    def slow_chat(key: str, text: str) -> str:
        started.set()
        release.wait(WAIT_S)
        return "done"

    app = build_slack_app(approvals=store, signing_secret=SECRET, bot_token=BOT_TOKEN,
                          approvers=APPROVERS, chat=slow_chat, api_url=web_api[1])
    with TestClient(mount(FastAPI(), app)) as http:
        harness = Harness(http, slack_api, app.client, [], [])
        resp = harness.event({"type": "app_mention", "user": "UALICE", "text": "<@UBOT> hi",
                              "ts": "1700000600.000100", "channel": "CCHAT"})
        assert resp.status_code == 200
        assert started.wait(WAIT_S) and slack_api.made("chat.postMessage") == []
        release.set()
        [reply] = slack_api.wait("chat.postMessage")
    assert reply.params["text"] == "done"


def test_a_failing_on_decision_hook_loses_nothing(
    store: ApprovalStore, slack_api, web_api, request_: ApprovalRequest, caplog
) -> None:
    """The decision is stored and shown; the background loop resumes the thread instead."""
    def broken(approval_id: str) -> None:
        raise RuntimeError("runner is down")

    app = build_slack_app(approvals=store, signing_secret=SECRET, bot_token=BOT_TOKEN,
                          approvers=APPROVERS, on_decision=broken, api_url=web_api[1])
    with TestClient(mount(FastAPI(), app)) as http:
        harness = Harness(http, slack_api, app.client, [], [])
        harness.click(APPROVE_ACTION, "UALICE", harness.prompt(request_))
        [update] = slack_api.wait("chat.update")
        eventually(lambda: "on_decision('apr-1') failed" in caplog.text, "the hook's error log")
    assert "Approved* by alice" in _text(update)
    decision = store.decision(request_.id)
    assert decision is not None and decision.approved


# --- chat ---------------------------------------------------------------------------------------
def test_mention_chats_in_the_slack_thread(slack: Harness) -> None:
    """One chat thread per Slack thread: the key is channel + thread ts; replies go in thread."""
    slack.event({"type": "app_mention", "user": "UALICE", "text": "<@UBOT> why elec",
                 "ts": "1700000400.000100", "channel": "CCHAT"})
    [reply] = slack.api.wait("chat.postMessage")
    slack.event({"type": "app_mention", "user": "UBOB", "text": "<@UBOT>  status elec",
                 "ts": "1700000401.000100", "thread_ts": "1700000400.000100",
                 "channel": "CCHAT"})
    [_, threaded] = slack.api.wait("chat.postMessage", 2)
    assert slack.chats == [("slack:CCHAT:1700000400.000100", "why elec"),
                           ("slack:CCHAT:1700000400.000100", "status elec")]
    for call in (reply, threaded):
        assert (call.params["channel"], call.params["thread_ts"]) == (
            "CCHAT", "1700000400.000100")
    assert threaded.params["text"] == "runbook: status elec"


def test_dm_chats_and_other_messages_are_ignored(slack: Harness) -> None:
    base = {"type": "message", "user": "UALICE", "channel": "DALICE", "channel_type": "im"}
    slack.event({**base, "text": "hi from a bot", "bot_id": "BOTHER", "ts": "1700000500.1"})
    slack.event({**base, "text": "channel chatter", "channel": "CCHAT",
                 "channel_type": "channel", "ts": "1700000500.2"})
    slack.event({**base, "text": "incidents", "ts": "1700000500.3"})
    [reply] = slack.api.wait("chat.postMessage")
    assert slack.chats == [("slack:DALICE:1700000500.3", "incidents")]
    assert (reply.params["channel"], reply.params["thread_ts"], reply.params["text"]) == (
        "DALICE", "1700000500.3", "runbook: incidents")


# --- wiring -------------------------------------------------------------------------------------
def test_settings_parse_approvers_and_build_the_app(store: ApprovalStore, web_api) -> None:
    settings = Settings(slack_bot_token=BOT_TOKEN, slack_signing_secret=SECRET,
                        slack_approvers="UALICE=alice, UBOB=bob", slack_api_url=web_api[1])
    assert settings.slack_approvers == {"UALICE": "alice", "UBOB": "bob"}
    app = slack_app_from_settings(settings, approvals=store)
    assert app.client.base_url == web_api[1]
    with pytest.raises(InvalidInput, match="set FLYWHEEL_SLACK_BOT_TOKEN"):
        slack_app_from_settings(Settings(), approvals=store)
    with pytest.raises(ValueError, match="'UALICE' is not SLACK_USER_ID=identity"):
        Settings(slack_approvers="UALICE")


def test_socket_mode_handler_is_built_on_the_app_client(store: ApprovalStore, web_api) -> None:
    app = build_slack_app(approvals=store, signing_secret=SECRET, bot_token=BOT_TOKEN,
                          approvers=APPROVERS, api_url=web_api[1])
    handler = socket_mode_handler(app, "xapp-1-test")
    try:
        assert handler.client.web_client.base_url == web_api[1]
        assert handler.app is app
    finally:
        handler.close()
    with pytest.raises(InvalidInput, match="app-level token starting with 'xapp-'"):
        socket_mode_handler(app, BOT_TOKEN)
