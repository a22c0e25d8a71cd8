"""The HTTP API on a real loopback server: key-like ids get a clear 4xx (never a 5xx, never
Redis), and a decision is a strict boolean."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from apps.serving import http_server
from tests.apps.api_world import SERVICE, World, bearer, build_world

ALICE = bearer("tok-alice")


@pytest.fixture()
def world(r, keys, clock, artifacts_dir) -> Iterator[World]:
    yield from build_world(r, keys, clock, artifacts_dir)


@pytest.fixture()
def http(world: World) -> Iterator[httpx.Client]:
    with http_server(world.api(gateway=True)) as url, \
            httpx.Client(base_url=url, headers=ALICE, timeout=10) as client:
        yield client


def test_key_like_ids_get_a_clear_4xx_and_reach_no_key(http: httpx.Client, world: World) -> None:
    req = world.request_promotion()
    inc = world.signal()
    pointer = f"open:inc-1:{req.action_digest}"
    fingerprint = f"fp:{{{SERVICE}}}:performance_drop"
    assert world.r.type(world.keys.approval(pointer)) == "string"
    assert world.r.type(world.keys.incident(fingerprint)) == "string"
    decision = {"approve": True, "reason": "", "digest": req.action_digest}
    cases = [
        ("GET", f"/v1/approvals/{pointer}", None, "invalid approval id"),
        ("POST", f"/v1/approvals/{pointer}/decision", decision, "invalid approval id"),
        ("GET", f"/v1/approvals/{quote('pending')}x:y", None, "invalid approval id"),
        ("GET", f"/v1/incidents/{quote(fingerprint)}", None, "invalid incident id"),
        ("GET", f"/v1/incidents/closed:{quote('{elec}')}:performance_drop", None,
         "invalid incident id"),
        ("POST", f"/v1/models/{quote('x}:y')}/predict", {"features": {"a": 1.0, "b": 2.0}},
         "invalid service name"),
        ("POST", f"/v1/models/{quote('{elec}')}/feedback",
         {"request_id": "r1", "label": 1}, "invalid service name"),
        ("GET", f"/v1/approvals/{'a' * 10_000}", None, None),
    ]
    for method, path, body, detail in cases:
        resp = http.request(method, path, json=body)
        assert 400 <= resp.status_code < 500, (path, resp.status_code, resp.text[:200])
        if detail is not None:
            assert resp.status_code == 404, (path, resp.text[:200])
            assert detail in resp.json()["detail"], (path, resp.text[:200])
    # Nothing was decided, nothing overwritten, and the real ids still answer.
    assert world.r.type(world.keys.approval(pointer)) == "string"
    assert world.r.type(world.keys.incident(fingerprint)) == "string"
    assert http.get(f"/v1/approvals/{req.id}").json()["status"] == "pending"
    assert http.get(f"/v1/incidents/{inc.id}").status_code == 200


@pytest.mark.parametrize("approve", ["yes", 1, "true", 1.0, None, [True]])
def test_a_truthy_non_boolean_is_422_and_never_an_approval(http: httpx.Client, world: World,
                                                          approve: object) -> None:
    req = world.request_promotion()
    resp = http.post(f"/v1/approvals/{req.id}/decision",
                     json={"approve": approve, "reason": "", "digest": req.action_digest})
    assert resp.status_code == 422, resp.text
    assert "approve" in resp.text
    assert world.approvals.decision(req.id) is None
    assert http.get(f"/v1/approvals/{req.id}").json()["status"] == "pending"
    ok = http.post(f"/v1/approvals/{req.id}/decision",
                   json={"approve": True, "reason": "", "digest": req.action_digest})
    assert ok.status_code == 200 and ok.json()["status"] == "approved"
