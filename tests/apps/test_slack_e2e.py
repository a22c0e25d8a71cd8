"""Slack end to end: real ``flywheel serve`` and ``flywheel run`` processes, one real Redis, and
Slack's Web API replaced by a hand-written loopback stand-in (``SlackWebAPIStandIn``).

Two services whose policy gates rollbacks open a latency incident each; the runbook pauses on
the rollback approval. The loop (and serve: both own Slack) posts each prompt once; a click
signed with Slack's v0 scheme, POSTed to serve's ``/slack/events``, decides one (the prompt is
locked once, the rollback runs once); the CLI decides the other (the loop locks its prompt); a
Slack retry of the click, delivered to a second serve process, does nothing more. A promotion
asked for in chat is prompted with the holdout scores and, once clicked, run once by the one
executor of approved chat requests. Waits are bounded polls; nothing asserts timing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from apps.serving import http_server
from apps.slack.blocks import APPROVE_ACTION, REJECT_ACTION
from fleet.approvals import ApprovalRequest, ApprovalStore
from fleet.clock import SystemClock
from fleet.incidents import IncidentStore
from tests.apps.test_loop import (
    GATED,
    Worker,
    _audit,
    _const,
    _env,
    _fleet,
    _latency,
    _register,
    _wait,
)
from tests.apps.test_slack import Call, SlackWebAPIStandIn

ROOT = Path(__file__).resolve().parents[2]
SECRET = "e2e-signing-secret-0123456789abcdef"
BOT_TOKEN = "xoxb-e2e-token"
CHANNEL = "CFLYWHEEL"
API_TOKEN = "e2e-api-token"
FLYWHEEL = [str(Path(sys.executable).parent / "flywheel")]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sign(body: str, stamp: str) -> str:
    """Slack's v0 request signature, written out here (not the library's code)."""
    mac = hmac.new(SECRET.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256)
    return f"v0={mac.hexdigest()}"


def _prompts(api: SlackWebAPIStandIn, approval_id: str) -> list[Call]:
    """``chat.postMessage`` calls carrying Approve/Reject buttons for ``approval_id``."""
    out = []
    for c in api.made("chat.postMessage"):
        for b in c.params.get("blocks") or []:
            if b.get("type") == "actions" and any(
                    json.loads(e["value"])["id"] == approval_id for e in b["elements"]):
                out.append(c)
    return out


def _updates(api: SlackWebAPIStandIn, ts: str) -> list[Call]:
    return [c for c in api.made("chat.update") if c.params.get("ts") == ts]


class StandIn(SlackWebAPIStandIn):
    """The hand-written stand-in of tests/apps/test_slack.py, also remembering the ``ts`` it
    answered for each posted message (keyed by the call's params object)."""

    def __init__(self) -> None:
        super().__init__()
        self.answered: dict[int, str] = {}

    def answer(self, method: str, p: dict[str, Any]) -> dict[str, Any]:
        out = super().answer(method, p)
        if method == "chat.postMessage":
            with self.changed:
                self.answered[id(p)] = out["ts"]
        return out

    def ts_of(self, call: Call) -> str:
        with self.changed:
            return self.answered[id(call.params)]


@pytest.fixture()
def web_api() -> Iterator[tuple[StandIn, str]]:
    stand_in = StandIn()
    with http_server(stand_in.app()) as url:
        yield stand_in, f"{url}/api/"


@pytest.fixture()
def procs(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start processes; any still alive at teardown are stopped."""
    started: list[Worker] = []

    def start(name: str, cmd: list[str], env: dict[str, str]) -> Worker:
        log = tmp_path / f"{name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        w = Worker(name, proc, log)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.proc.terminate()
            try:
                w.proc.wait(20)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(10)


def _click(serve_url: str, req: ApprovalRequest, prompt: Call, ts: str, *,
           retry: int = 0, body: str | None = None,
           action_ts: str = "1700000001.000001") -> tuple[httpx.Response, str]:
    """POST a signed ``block_actions`` click on the prompt's Approve button to serve."""
    if body is None:
        [buttons] = [b for b in prompt.params["blocks"] if b["type"] == "actions"]
        [button] = [e for e in buttons["elements"] if e["action_id"] == APPROVE_ACTION]
        payload = {
            "type": "block_actions", "team": {"id": "T1", "domain": "flywheel"},
            "user": {"id": "UONCALL", "team_id": "T1"}, "api_app_id": "A1",
            "trigger_id": "trigger-e2e-1",
            "container": {"type": "message", "message_ts": ts, "channel_id": CHANNEL,
                          "is_ephemeral": False},
            "channel": {"id": CHANNEL, "name": "flywheel"},
            "message": {"type": "message", "ts": ts, "blocks": prompt.params["blocks"]},
            "actions": [{"type": "button", "action_id": APPROVE_ACTION,
                         "block_id": buttons["block_id"], "value": button["value"],
                         "action_ts": action_ts}],
        }
        body = urlencode({"payload": json.dumps(payload)})
    stamp = str(int(time.time()))
    headers = {"content-type": "application/x-www-form-urlencoded",
               "x-slack-request-timestamp": stamp, "x-slack-signature": _sign(body, stamp)}
    if retry:
        headers |= {"x-slack-retry-num": str(retry), "x-slack-retry-reason": "http_timeout"}
    return httpx.post(f"{serve_url}/slack/events", content=body, headers=headers,
                      timeout=30), body


def test_slack_prompts_are_posted_once_decided_by_click_or_cli_and_locked_once(
        r, keys, redis_url, tmp_path, web_api, procs):
    api, api_url = web_api
    fleet = _fleet(r, keys, redis_url, tmp_path / "artifacts", SystemClock())
    for svc in ("slk-click", "slk-cli"):
        _register(fleet, svc, GATED)
    _register(fleet, "slk-chat")
    fleet.registry.add_version("slk-chat", _const(1), created_by="test",
                               metrics={"holdout_accuracy": 0.9125,
                                        "champion_holdout_accuracy": 0.8675})
    port = _free_port()
    serve_url = f"http://127.0.0.1:{port}"
    env = _env(REDIS_URL=redis_url, FLYWHEEL_PREFIX=keys.prefix, FLYWHEEL_HOME=str(tmp_path),
               FLYWHEEL_SLACK_BOT_TOKEN=BOT_TOKEN, FLYWHEEL_SLACK_SIGNING_SECRET=SECRET,
               FLYWHEEL_SLACK_CHANNEL=CHANNEL, FLYWHEEL_SLACK_API_URL=api_url,
               FLYWHEEL_SLACK_APPROVERS="UONCALL=oncall",
               FLYWHEEL_API_TOKENS=f"{API_TOKEN}=oncall")
    # A second serve behind the same Slack app (as behind a load balancer): a retry may land
    # there, and must still be recognised.
    port2 = _free_port()
    serve2_url = f"http://127.0.0.1:{port2}"
    serve = procs("serve", [*FLYWHEEL, "serve", "--port", str(port)], env)
    serve2 = procs("serve2", [*FLYWHEEL, "serve", "--port", str(port2)], env)
    loop = procs("run", [*FLYWHEEL, "run", "--shards", "4", "--interval", "0.2"], env)
    both = [serve, serve2, loop]

    def up(url: str) -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    _wait("serve to answer", lambda: up(serve_url) and up(serve2_url), both)
    store = IncidentStore(r, keys, fleet.clock, fleet.audit)
    approvals = ApprovalStore(r, keys, fleet.clock, fleet.audit)
    incs = {svc: _latency(store, svc, fleet.clock.now()).id for svc in ("slk-click", "slk-cli")}

    def pending_for(svc: str) -> ApprovalRequest | None:
        return next((a for a in approvals.pending() if a.incident == incs[svc]), None)

    reqs = {svc: _wait(f"{svc}'s rollback approval", lambda s=svc: pending_for(s), both)
            for svc in incs}
    prompts: dict[str, Call] = {}
    for svc, req in reqs.items():
        assert isinstance(req, ApprovalRequest)
        _wait(f"{svc}'s prompt in Slack", lambda q=req: _prompts(api, q.id), both)
        [prompts[svc]] = _prompts(api, req.id)

    # The prompt: in the channel, with the facts and both buttons bound to the request.
    click_req, cli_req = reqs["slk-click"], reqs["slk-cli"]
    assert isinstance(click_req, ApprovalRequest) and isinstance(cli_req, ApprovalRequest)
    prompt = prompts["slk-click"]
    assert (prompt.params["channel"], prompt.token) == (CHANNEL, BOT_TOKEN)
    shown = prompt.params["text"] + json.dumps(prompt.params["blocks"])
    for fact in ("rollback 'slk-click'", "Expires", "*Evidence*", "champion: `2`",
                 click_req.id):
        assert fact in shown, fact
    [buttons] = [b for b in prompt.params["blocks"] if b["type"] == "actions"]
    assert [e["action_id"] for e in buttons["elements"]] == [APPROVE_ACTION, REJECT_ACTION]
    ts = api.ts_of(prompt)

    # A click signed with Slack's scheme: decided once, locked once, rolled back once.
    resp, body = _click(serve_url, click_req, prompt, ts)
    assert resp.status_code == 200, resp.text
    _wait("the clicked incident to resolve",
          lambda: store.get(incs["slk-click"]).status.terminal, both)
    d = approvals.decision(click_req.id)
    assert d is not None and (d.approved, d.by) == (True, "oncall")
    _wait("the clicked prompt to be locked", lambda: _updates(api, ts), both)

    # Slack retries the click, to the other serve process: acknowledged, nothing more happens
    # (it would otherwise meet the decision and post an "already approved" note + an update).
    again, _ = _click(serve2_url, click_req, prompt, ts, retry=1, body=body)
    assert again.status_code == 200

    # The CLI decides the other one: the loop locks its prompt.
    cli_ts = api.ts_of(prompts["slk-cli"])
    out = subprocess.run([*FLYWHEEL, "approvals", "approve", cli_req.id, "--user", "oncall"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    _wait("the CLI-approved prompt to be locked", lambda: _updates(api, cli_ts), both)
    _wait("the CLI-approved incident to resolve",
          lambda: store.get(incs["slk-cli"]).status.terminal, both)

    assert {svc: store.get(i).status.value for svc, i in incs.items()} == {
        "slk-click": "resolved", "slk-cli": "resolved"}
    rollbacks = [e.service for e in _audit(r, keys, "registry.rollback")]
    assert sorted(rollbacks) == ["slk-cli", "slk-click"]  # each ran exactly once
    for svc, req in reqs.items():
        assert isinstance(req, ApprovalRequest)
        assert len(_prompts(api, req.id)) == 1, svc  # posted once, by one of three processes
    [locked] = _updates(api, ts)
    assert "Approved* by oncall" in json.dumps(locked.params["blocks"])
    assert not [b for b in locked.params["blocks"] if b["type"] == "actions"]
    [cli_locked] = _updates(api, cli_ts)
    assert "Approved* by oncall" in json.dumps(cli_locked.params["blocks"])
    assert api.made("chat.postEphemeral") == []  # the retry told nobody anything
    # A promotion asked for in chat (HTTP API): prompted in Slack with the holdout scores,
    # approved by a click, executed once by the one executor (serve runs it at once; the
    # loop's sweep finds it already done).
    said = httpx.post(f"{serve_url}/v1/chat", json={"message": "promote slk-chat v3"},
                      headers={"authorization": f"Bearer {API_TOKEN}"}, timeout=60)
    assert said.status_code == 200, said.text
    chat_req = _wait("the chat-made promotion request",
                     lambda: next((a for a in approvals.pending()
                                   if a.action.service == "slk-chat"), None), both)
    assert isinstance(chat_req, ApprovalRequest) and chat_req.incident.startswith("chat-")
    _wait("the chat request's prompt", lambda: _prompts(api, chat_req.id), both)
    [chat_prompt] = _prompts(api, chat_req.id)
    assert "*Holdout accuracy*: candidate `0.9125` · champion `0.8675`" in json.dumps(
        chat_prompt.params["blocks"], ensure_ascii=False)
    chat_ts = api.ts_of(chat_prompt)
    resp, _ = _click(serve_url, chat_req, chat_prompt, chat_ts, action_ts="1700000002.000001")
    assert resp.status_code == 200
    _wait("slk-chat v3 to be champion",
          lambda: fleet.registry.service("slk-chat").champion == 3, both)
    _wait("the loop's sweep to see it done", lambda: not r.sismember(keys.approvals_chat,
                                                                     chat_req.id), both)
    assert [e.details.get("version") for e in _audit(r, keys, "registry.promote")
            if e.service == "slk-chat"] == [1, 2, 3]  # setup v1, v2; the approved v3 once
    assert len(_updates(api, chat_ts)) == 1

    # Each incident got its thread, opened and then closed with the outcome.
    for svc, inc in incs.items():
        _wait(f"{svc}'s incident thread to close", lambda i=inc: _closing(api, i), both)
    loop.proc.terminate()
    assert loop.proc.wait(30) == 0, loop.tail()


def _closing(api: SlackWebAPIStandIn, incident_id: str) -> list[Call]:
    """Replies in an incident thread saying it was resolved."""
    return [c for c in api.made("chat.postMessage")
            if c.params.get("thread_ts") and f"Incident {incident_id} resolved"
            in c.params.get("text", "")]
