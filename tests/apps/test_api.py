"""HTTP API on real Redis: bearer auth (on and off), approvals decided by the token's identity,
incidents, services, telemetry ingest with dead-lettering, chat (whole and streamed), metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from apps.api import ANONYMOUS, create_api
from fleet.embedded_redis import free_port
from fleet.errors import InvalidInput, UnknownService
from fleet.keys import Keys
from fleet.registry import ArtifactStore, Registry
from tests.apps.api_world import SERVICE, TOKENS, World, bearer, build_world

ALICE, BOB, CAROL = bearer("tok-alice"), bearer("tok-bob"), bearer("tok-carol")


@pytest.fixture()
def world(r, keys, clock, artifacts_dir) -> Iterator[World]:
    yield from build_world(r, keys, clock, artifacts_dir)


@pytest.fixture()
def client(world: World) -> TestClient:
    return TestClient(world.api(gateway=True))


# --- auth ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuthCase:
    name: str
    headers: dict[str, str | bytes]
    status: int
    challenge: str | None


AUTH_CASES = [
    AuthCase("no header", {}, 401, "Bearer"),
    AuthCase("unknown token", bearer("tok-mallory"), 401, 'Bearer error="invalid_token"'),
    AuthCase("token differs by one character", bearer("tok-alicf"), 401,
             'Bearer error="invalid_token"'),
    AuthCase("basic scheme", {"Authorization": "Basic YWxpY2U6eA=="}, 401, "Bearer"),
    AuthCase("latin-1 token", {"Authorization": "Bearer t\u00f6k".encode("latin-1")}, 401,
             'Bearer error="invalid_token"'),
    AuthCase("known token", ALICE, 200, None),
]


@pytest.mark.parametrize("case", AUTH_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("path", ["/v1/services", "/v1/incidents", "/v1/approvals",
                                  f"/v1/models/{SERVICE}"])
def test_v1_routes_need_a_known_bearer_token(client: TestClient, case: AuthCase, path: str) -> None:
    resp = client.get(path, headers=case.headers)
    assert resp.status_code == case.status, resp.text
    assert resp.headers.get("www-authenticate") == case.challenge
    if case.status == 401:
        assert "bearer token" in resp.json()["detail"]


def test_health_and_metrics_need_no_token(client: TestClient) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "version": health.json()["version"], "redis": "ok",
                             "trainer": None, "trainers": {}}
    assert client.get("/metrics").status_code == 200


def test_auth_on_without_tokens_refuses_to_build(world: World) -> None:
    with pytest.raises(InvalidInput, match="auth on but no tokens: set FLYWHEEL_API_TOKENS"):
        world.api(tokens={})


def test_auth_off_lets_everyone_in_as_anonymous_who_cannot_decide(world: World) -> None:
    """With auth off, identity is 'anonymous': reads work, decisions only if a policy lists it."""
    client = TestClient(world.api(auth=False, tokens=None))
    assert client.get("/v1/services").status_code == 200
    req = world.request_promotion()
    resp = client.post(f"/v1/approvals/{req.id}/decision",
                       json={"approve": True, "digest": req.action_digest},
                       headers=bearer("ignored-when-auth-is-off"))
    assert resp.status_code == 403
    assert resp.json()["detail"].startswith(f"{ANONYMOUS!r} may not decide approval {req.id!r}")

    listed = world.request_promotion(incident="inc-2", approvers=(ANONYMOUS,))
    resp = client.post(f"/v1/approvals/{listed.id}/decision",
                       json={"approve": True, "digest": listed.action_digest})
    assert resp.status_code == 200
    assert resp.json()["decision"]["by"] == ANONYMOUS


# --- approvals ----------------------------------------------------------------------------------
def test_pending_approvals_are_listed_with_their_request(client: TestClient, world: World) -> None:
    req = world.request_promotion()
    body = client.get("/v1/approvals", headers=BOB).json()
    assert body == {"approvals": [{"request": json.loads(req.model_dump_json()),
                                   "status": "pending", "decision": None}]}
    one = client.get(f"/v1/approvals/{req.id}", headers=BOB).json()
    assert one["status"] == "pending" and one["request"]["id"] == req.id


def test_an_approver_decides_as_their_token_identity(client: TestClient, world: World) -> None:
    req = world.request_promotion()
    resp = client.post(f"/v1/approvals/{req.id}/decision", headers=ALICE,
                       json={"approve": True, "reason": "numbers look right",
                             "digest": req.action_digest})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "approved"
    assert (body["decision"]["by"], body["decision"]["reason"]) == ("alice", "numbers look right")
    assert world.approvals.decision(req.id).by == "alice"
    [entry] = world.audit.read(action_prefix="approval.approve")
    assert (entry.actor, entry.details["approval_id"]) == ("alice", req.id)
    assert client.get("/v1/approvals", headers=ALICE).json() == {"approvals": []}


def test_the_body_cannot_name_the_decider(client: TestClient, world: World) -> None:
    req = world.request_promotion()
    resp = client.post(f"/v1/approvals/{req.id}/decision", headers=CAROL,
                       json={"approve": True, "digest": req.action_digest, "by": "alice"})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "by"]
    assert world.approvals.decision(req.id) is None


@dataclass(frozen=True)
class Refusal:
    name: str
    headers: dict[str, str]
    body: dict[str, object]
    status: int
    detail: str


REFUSALS = [
    Refusal("non-approver", CAROL, {"approve": True}, 403,
            "'carol' may not decide approval 'APR' (promote 'elec' version=2); allowed approvers: "
            "'alice', 'bob'"),
    Refusal("digest of another action", ALICE, {"approve": True, "digest": "0" * 64}, 403,
            "cannot approve a different action"),
    Refusal("reject without a reason", ALICE, {"approve": False, "reason": "  "}, 422,
            "rejecting approval 'APR' needs a reason; it is sent back to the agent"),
]


@pytest.mark.parametrize("case", REFUSALS, ids=lambda c: c.name)
def test_refused_decisions(client: TestClient, world: World, case: Refusal) -> None:
    req = world.request_promotion()
    body = {"digest": req.action_digest, **case.body}
    resp = client.post(f"/v1/approvals/{req.id}/decision", headers=case.headers, json=body)
    assert resp.status_code == case.status
    assert case.detail.replace("APR", req.id) in resp.json()["detail"]
    assert world.approvals.decision(req.id) is None


def test_the_first_decision_wins_and_the_second_is_told_who_decided(
    client: TestClient, world: World
) -> None:
    req = world.request_promotion()
    first = client.post(f"/v1/approvals/{req.id}/decision", headers=BOB,
                        json={"approve": False, "reason": "too risky", "digest": req.action_digest})
    assert first.status_code == 200 and first.json()["status"] == "rejected"
    second = client.post(f"/v1/approvals/{req.id}/decision", headers=ALICE,
                         json={"approve": True, "digest": req.action_digest})
    assert second.status_code == 409
    assert second.json()["detail"].startswith(
        f"approval {req.id!r} was already rejected by 'bob' at ")
    assert "(too risky); the first decision is final" in second.json()["detail"]
    assert world.approvals.decision(req.id).by == "bob"


def test_unknown_approval_is_404_naming_it(client: TestClient) -> None:
    resp = client.get("/v1/approvals/apr-nope", headers=ALICE)
    assert resp.status_code == 404
    assert resp.json()["detail"].startswith("unknown approval 'apr-nope'")


def test_an_overdue_request_shows_as_expired_and_cannot_be_decided(
    client: TestClient, world: World
) -> None:
    req = world.request_promotion()
    world.clock.advance(901)
    assert client.get(f"/v1/approvals/{req.id}", headers=ALICE).json()["status"] == "expired"
    resp = client.post(f"/v1/approvals/{req.id}/decision", headers=ALICE,
                       json={"approve": True, "digest": req.action_digest})
    assert resp.status_code == 403 and "expired at" in resp.json()["detail"]


# --- incidents ----------------------------------------------------------------------------------
def test_incidents_open_all_by_service_and_one(client: TestClient, world: World) -> None:
    drop = world.signal("performance_drop")
    world.clock.advance(10)
    drift = world.signal("covariate_drift", severity="critical")
    world.incidents.transition(drop.id, "resolved", actor="agent:supervisor", reason="fixed")

    open_now = client.get("/v1/incidents", headers=ALICE).json()["incidents"]
    assert [i["id"] for i in open_now] == [drift.id]
    everything = client.get("/v1/incidents?status=all", headers=ALICE).json()["incidents"]
    assert [(i["id"], i["status"]) for i in everything] == [(drift.id, "open"),
                                                            (drop.id, "resolved")]
    other = client.get("/v1/incidents?status=all&service=other", headers=ALICE).json()
    assert other == {"incidents": []}
    one = client.get(f"/v1/incidents/{drift.id}", headers=ALICE).json()
    assert (one["kind"], one["severity"], one["evidence"]) == (
        "covariate_drift", "critical", {"statistic": 9.1, "threshold": 8.0})


@pytest.mark.parametrize(("query", "field"), [("status=closed", "status"),
                                              ("service=Bad%20Name", "service"),
                                              ("status=all&limit=0", "limit")])
def test_bad_incident_queries_are_422_naming_the_field(client: TestClient, query: str,
                                                       field: str) -> None:
    resp = client.get(f"/v1/incidents?{query}", headers=ALICE)
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["query", field]


def test_unknown_incident_is_404(client: TestClient) -> None:
    resp = client.get("/v1/incidents/inc-nope", headers=ALICE)
    assert resp.status_code == 404 and resp.json()["detail"].startswith("no incident 'inc-nope'")


# --- services -----------------------------------------------------------------------------------
def test_services_list_and_detail(client: TestClient) -> None:
    listed = client.get("/v1/services", headers=ALICE).json()
    assert listed == {"services": [{
        "name": SERVICE, "task": "classification", "owner": "grid-team", "champion": 1,
        "challenger": None, "mode": "full", "split": 0.0, "generation": 1, "versions": 2}]}
    detail = client.get(f"/v1/services/{SERVICE}", headers=ALICE).json()
    assert [f["name"] for f in detail["features"]] == ["a", "b"]
    assert detail["policy"]["approvers"] == ["alice", "bob"]
    assert [(v["number"], v["status"], v["metrics"], v["parent"]) for v in detail["versions"]] == [
        (1, "production", {"holdout_accuracy": 0.8}, None),
        (2, "candidate", {"holdout_accuracy": 0.9}, 1)]


def test_unknown_service_is_404_naming_the_known_ones(client: TestClient) -> None:
    resp = client.get("/v1/services/gas", headers=ALICE)
    assert resp.status_code == 404
    assert resp.json()["detail"] == ("unknown service 'gas'; known services: elec. "
                                     "Run: flywheel services")


def test_gateway_routes_are_served_behind_the_same_auth(client: TestClient, world: World) -> None:
    row = {"features": {"a": 1.0, "b": 2.0}, "request_id": "r1"}
    assert client.post(f"/v1/models/{SERVICE}/predict", json=row).status_code == 401
    resp = client.post(f"/v1/models/{SERVICE}/predict", json=row, headers=ALICE)
    assert resp.json() == {"request_id": "r1", "version": 1, "prediction": 0.0}
    bad = client.post(f"/v1/models/{SERVICE}/predict", headers=ALICE,
                      json={"features": {"a": 1.0, "b": None}})
    assert bad.status_code == 422 and "null is not allowed" in bad.json()["detail"]
    huge = client.post(f"/v1/models/{SERVICE}/predict", headers=ALICE,
                       json={"features": {"a": 10**400, "b": 1}})
    assert huge.status_code == 422
    assert huge.json()["detail"] == ("features.a: expected a number within float range, got a "
                                     "larger integer")


# --- telemetry ----------------------------------------------------------------------------------
def test_prediction_ingest_keeps_the_good_and_dead_letters_the_bad(
    client: TestClient, world: World
) -> None:
    good = {"ts": world.clock.now(), "request_id": "r1", "version": 1, "features": [0.5, 1.5],
            "prediction": 1.0, "latency_ms": 2.0}
    events = [good, {**good, "features": [0.5]}, "not an object", {**good, "version": -1}]
    resp = client.post(f"/v1/telemetry/{SERVICE}/predictions", json={"events": events},
                       headers=ALICE)
    assert resp.status_code == 200
    assert resp.json() == {"accepted": 1, "rejected": 3, "reasons": [
        "[1] features: expected a list of 2 values, got 1 values",
        "[2] event: expected an object, got string 'not an object'",
        "[3] version: expected a non-negative integer, got -1"]}
    assert world.r.xlen(world.keys.telemetry(SERVICE)) == 1
    dead = world.writer.dead_letters()
    assert [(d["service"], d["kind"], d["reason"]) for d in dead] == [
        (SERVICE, "prediction", "[1] features: expected a list of 2 values, got 1 values"),
        (SERVICE, "prediction", "[2] event: expected an object, got string 'not an object'"),
        (SERVICE, "prediction", "[3] version: expected a non-negative integer, got -1")]


def test_label_ingest_and_numbers_too_large_for_a_float(client: TestClient, world: World) -> None:
    """A JSON integer beyond float range is a bad event (dead-lettered), not a server error."""
    labels = [{"request_id": "r1", "label": 1}, {"request_id": "r2", "label": 10**400},
              {"request_id": "", "label": 0}]
    resp = client.post(f"/v1/telemetry/{SERVICE}/labels", json={"labels": labels}, headers=ALICE)
    assert resp.status_code == 200, resp.text
    assert (resp.json()["accepted"], resp.json()["rejected"]) == (1, 2)
    assert resp.json()["reasons"][0].startswith("[1] label: expected a finite number")
    assert world.r.xlen(world.keys.labels(SERVICE)) == 1
    assert len(world.writer.dead_letters()) == 2


def test_ingest_for_an_unknown_service_is_404_and_writes_nothing(
    client: TestClient, world: World
) -> None:
    resp = client.post("/v1/telemetry/gas/labels", headers=ALICE,
                       json={"labels": [{"request_id": "r1", "label": 1}]})
    assert resp.status_code == 404
    assert world.r.xlen(world.keys.labels("gas")) == 0 and world.writer.dead_letters() == []


# --- chat ---------------------------------------------------------------------------------------
class EchoChat:
    """Hand-written stand-in for the supervisor chat: echoes in two pieces, records every call."""

    def __init__(self, fail_after_first: bool = False):
        self.calls: list[tuple[str, str, str]] = []
        self.fail_after_first = fail_after_first

    def __call__(self, thread_id: str, message: str, user: str) -> Iterator[str]:
        self.calls.append((thread_id, message, user))
        if message == "status gas":
            raise UnknownService("gas", ["elec"])
        yield f"{user} said: "
        if self.fail_after_first:
            raise RuntimeError("model went away")
        yield message


def test_chat_whole_reply_as_the_token_identity(world: World) -> None:
    chat = EchoChat()
    client = TestClient(world.api(chat=chat))
    resp = client.post("/v1/chat", json={"thread_id": "t-1", "message": "status"}, headers=BOB)
    assert resp.json() == {"thread_id": "t-1", "reply": "bob said: status"}
    fresh = client.post("/v1/chat", json={"message": "help"}, headers=BOB).json()
    assert fresh["thread_id"].startswith("chat-") and fresh["reply"] == "bob said: help"
    assert chat.calls == [("t-1", "status", "bob"), (fresh["thread_id"], "help", "bob")]


def test_chat_streams_ndjson_chunks_then_done(world: World) -> None:
    client = TestClient(world.api(chat=EchoChat()))
    with client.stream("POST", "/v1/chat?stream=true", headers=ALICE,
                       json={"thread_id": "t-2", "message": "incidents"}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in resp.iter_lines() if line]
    assert lines == [
        {"thread_id": "t-2", "delta": "alice said: ", "done": False, "error": None},
        {"thread_id": "t-2", "delta": "incidents", "done": False, "error": None},
        {"thread_id": "t-2", "delta": "", "done": True, "error": None}]


def test_chat_failures_before_and_during_a_stream(world: World) -> None:
    client = TestClient(world.api(chat=EchoChat(fail_after_first=True)))
    early = client.post("/v1/chat?stream=true", headers=ALICE, json={"message": "status gas"})
    assert early.status_code == 404 and early.json()["detail"].startswith("unknown service 'gas'")
    resp = client.post("/v1/chat?stream=true", headers=ALICE,
                       json={"thread_id": "t-3", "message": "x"})
    lines = [json.loads(line) for line in resp.text.splitlines()]
    assert lines[-1] == {"thread_id": "t-3", "delta": "", "done": False,
                         "error": "the reply failed (RuntimeError); see the server log"}


def test_chat_without_a_chat_is_503_saying_how(client: TestClient) -> None:
    resp = client.post("/v1/chat", json={"message": "status"}, headers=ALICE)
    assert resp.status_code == 503
    assert resp.json()["detail"].startswith("chat is not configured in this API process")


# --- metrics ------------------------------------------------------------------------------------
def test_metrics_report_the_fleet(client: TestClient, world: World) -> None:
    world.signal("performance_drop")
    world.request_promotion()
    world.writer.ingest_labels(SERVICE, [{"request_id": "r1", "label": 1}, "bad"])
    world.audit.record("agent:deployment", "ops.rollback", service=SERVICE, reason="drop",
                       outcome="succeeded")
    world.audit.record("agent:deployment", "ops.rollback", service=SERVICE, reason="drop",
                       outcome="failed")
    world.usage.record_call("inc-1", prompt_tokens=100, completion_tokens=20)
    world.metrics.observe_detection(0.02)

    samples = _samples(client.get("/metrics").text)
    assert samples[("flywheel_open_incidents", (("kind", "performance_drop"),))] == 1
    assert samples[("flywheel_open_incidents", (("kind", "covariate_drift"),))] == 0
    assert samples[("flywheel_pending_approvals", ())] == 1
    assert samples[("flywheel_telemetry_events", (("service", SERVICE), ("stream", "labels")))] == 1
    assert samples[("flywheel_dead_letters", ())] == 1
    assert samples[("flywheel_actions_total",
                    (("action", "rollback"), ("outcome", "succeeded")))] == 1
    assert samples[("flywheel_llm_calls", ())] == 1
    assert samples[("flywheel_llm_tokens", ())] == 120
    assert samples[("flywheel_detector_seconds_count", ())] == 1

    world.audit.record("agent:deployment", "ops.rollback", service=SERVICE, reason="drop",
                       outcome="succeeded")
    again = _samples(client.get("/metrics").text)
    succeeded = ("flywheel_actions_total", (("action", "rollback"), ("outcome", "succeeded")))
    assert again[succeeded] == 2


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# --- Redis down ---------------------------------------------------------------------------------
def test_redis_down_is_503_not_500(world: World, artifacts_dir) -> None:
    dead = redis.Redis(port=free_port(), decode_responses=True, socket_connect_timeout=0.5,
                       retry=Retry(NoBackoff(), 0))
    registry = Registry(dead, Keys("down"), ArtifactStore(artifacts_dir))
    client = TestClient(create_api(registry=registry, incidents=world.incidents,
                                   approvals=world.approvals, writer=world.writer, tokens=TOKENS))
    health = client.get("/healthz")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    resp = client.get("/v1/services", headers=ALICE)
    assert resp.status_code == 503 and resp.json()["detail"].startswith("Redis is unreachable")
