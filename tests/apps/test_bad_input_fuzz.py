"""Bad input over every HTTP endpoint of both apps: no 5xx, every rejection dead-lettered.

The two apps are the API of ``flywheel serve`` (auth on, the gateway's model routes included)
and the gateway app of ``flywheel serve-gateway``. Schemathesis generates requests for every
operation of each from its OpenAPI document (bounded: :data:`MAX_EXAMPLES` per operation); the
hand-made cases send what generators do not (``Infinity``, ``NaN``, numbers beyond float range,
unknown classes and versions, key-like ids, 10 kB ids, labels that are not objects) as raw JSON.

The oracle per request: the status is below 500, and the dead-letter stream grew by exactly the
rejections the response reports (``errors`` of a predict batch, ``rejected`` of feedback and
ingest, one for a single row or label refused with a 422). The mixed batches also check that their
good rows were answered and are in the telemetry stream.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.config import SchemathesisConfig

from apps.api import create_api
from fleet.gateway import Gateway
from fleet.gateway.app import create_gateway_app
from fleet.telemetry import TelemetryBuffer, TelemetryReader
from tests.apps.api_world import (
    SERVICE,
    World,
    bearer,
    build_world,
    spec_only_api,
    spec_only_gateway_app,
)

MAX_EXAMPLES = 15
"""Generated requests per operation and phase; keeps both runs well under a minute."""
ALICE = bearer("tok-alice")
SENT: Counter[str] = Counter()


class Forward:
    """An ASGI app forwarding to ``target``.

    Schemathesis loads the spec at import; the test's app (over its Redis prefix) exists only
    inside the test.
    """

    def __init__(self, target: FastAPI):
        self.target = target

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.target(scope, receive, send)


def _config(headers: dict[str, str]) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict({
        "seed": 15,
        "headers": headers,
        "generation": {"max-examples": MAX_EXAMPLES},
        "phases": {"stateful": {"enabled": False}},
        "parameters": {"svc": SERVICE},
    })


SPEC_API = spec_only_api()
SPEC_GATEWAY = spec_only_gateway_app()
API = Forward(SPEC_API)
GATEWAY = Forward(SPEC_GATEWAY)
api_schema = schemathesis.openapi.from_asgi("/openapi.json", API, config=_config(ALICE))
gateway_schema = schemathesis.openapi.from_asgi("/openapi.json", GATEWAY, config=_config({}))


@dataclass
class Apps:
    """Both apps over one fleet world, and the gateways whose telemetry buffers they fill."""

    world: World
    api: FastAPI
    gateway_app: FastAPI
    gateways: list[Gateway]

    def dead(self) -> int:
        return self.world.r.xlen(self.world.keys.dlq)

    def flush(self) -> None:
        for gw in self.gateways:
            gw.flush()


def hand_written_chat(thread_id: str, message: str, user: str) -> Iterator[str]:
    """A hand-written stand-in for the supervisor chat: echoes the message."""
    yield f"{user}: {message}"


@pytest.fixture()
def apps(r, keys, clock, artifacts_dir) -> Iterator[Apps]:
    for world in build_world(r, keys, clock, artifacts_dir):
        gws = [Gateway(world.registry, TelemetryBuffer(world.writer, background=False),
                       clock=clock, refresh_interval=0.0) for _ in range(2)]
        api = create_api(registry=world.registry, incidents=world.incidents,
                         approvals=world.approvals, writer=world.writer, gateway=gws[0],
                         usage=world.usage, chat=hand_written_chat, tokens={"tok-alice": "alice"},
                         metrics=world.metrics)
        out = Apps(world, api, create_gateway_app(gws[1]), gws)
        API.target, GATEWAY.target = out.api, out.gateway_app
        yield out
        API.target, GATEWAY.target = SPEC_API, SPEC_GATEWAY
        for gw in gws:
            gw.buffer.close()


def reported_rejections(path: str, status: int, body: Any) -> int | None:
    """How many rejections a response reports (None: the route rejects no events)."""
    if not path.endswith(("/predict", "/feedback", "/predictions", "/labels")):
        return None
    if status == 200 and isinstance(body, dict):
        if "errors" in body and "predictions" in body:
            return len(body["errors"])
        if "rejected" in body:
            return int(body["rejected"])
        return 0
    return None


def check(apps: Apps, path: str, status: int, body: Any, dead_before: int, run: str) -> None:
    """The oracle shared by generated and hand-made requests."""
    SENT[f"{run} {status}"] += 1
    assert status < 500, f"{path}: {status} {str(body)[:300]}"
    grew = apps.dead() - dead_before
    expected = reported_rejections(path, status, body)
    if expected is not None:
        assert grew == expected, f"{path}: reported {expected} rejections, dead-lettered {grew}"
    else:  # a refused single row/label is one dead letter; a malformed request none
        assert grew in (0, 1) and (grew == 0 or status == 422), (path, status, grew)


SHARED = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print(f"\nbad-input fuzz: {sum(SENT.values())} requests; by run and status: "
          f"{dict(sorted(SENT.items()))}")


def _run_case(apps: Apps, case: Case, run: str) -> None:
    before = apps.dead()
    response = case.call()
    try:
        body = response.json()
    except ValueError:
        body = response.text
    check(apps, case.formatted_path, response.status_code, body, before, run)


@pytest.mark.slow
@api_schema.parametrize()
@SHARED
def test_generated_requests_to_the_api_never_fail_and_dead_letter_every_rejection(
        case: Case, apps: Apps) -> None:
    _run_case(apps, case, "api")


@pytest.mark.slow
@gateway_schema.parametrize()
@SHARED
def test_generated_requests_to_the_gateway_never_fail_and_dead_letter_every_rejection(
        case: Case, apps: Apps) -> None:
    _run_case(apps, case, "gateway")


# --- hand-made cases ------------------------------------------------------------------------------
NOW = 1_700_000_000.0
"""The world's manual clock."""
GOOD_EVENT = {"ts": NOW, "request_id": "e-good", "version": 1, "features": [0.5, 1.5],
              "prediction": 1, "latency_ms": 2.0}
K10 = "k" * 10_000


def _event(**change: Any) -> str:
    return json.dumps({**GOOD_EVENT, **change})


PREDICT = f"/v1/models/{SERVICE}/predict"
FEEDBACK = f"/v1/models/{SERVICE}/feedback"
HAND_MADE: list[tuple[str, str, str, int]] = [
    # (path, raw JSON body, what it is, expected status)
    (PREDICT, '{"features": {"a": Infinity, "b": 1}}', "Infinity in a single row", 422),
    (PREDICT, '{"features": {"a": NaN, "b": 1}}', "NaN in a single row", 422),
    (PREDICT, '{"features": {"a": 1e999, "b": 1}}', "a float literal beyond range", 422),
    (PREDICT, '{"features": {"a": 1' + "0" * 400 + ', "b": 1}}', "an integer beyond float", 422),
    (PREDICT, json.dumps({"features": {"a": 1, "b": 1}, "request_id": K10}), "10 kB id", 422),
    (PREDICT, json.dumps({"features": {"a": 1, "b": 1}, "request_id": "open:x:y"}),
     "a key-like id (just data)", 200),
    (PREDICT, '{"instances": [{"a": 1, "b": 1}, {"a": -Infinity, "b": 1}, 7, {"a": 2, "b": 2}],'
              ' "request_ids": ["m1", "m2", "m3", "' + K10 + '"]}', "a mixed batch", 200),
    ("/v1/models/open:x:y/predict", '{"features": {"a": 1, "b": 1}}', "a key-like service", 404),
    (FEEDBACK, '{"labels": [{"request_id": "f1", "label": 1}, "x", [1], null, '
               '{"request_id": "f2", "label": -1e300}, {"request_id": "f3", "label": 7}, '
               '{"request_id": "f4", "label": NaN}, {"request_id": "' + K10 + '", "label": 0}]}',
     "labels that are not objects, off-class, non-finite, 10 kB id", 200),
    (FEEDBACK, '{"request_id": "f5", "label": {"y": 1}}', "a single non-object label", 422),
    (FEEDBACK, '{"request_id": "f6", "label": Infinity}', "a single infinite label", 422),
    (FEEDBACK, '{"labels": "not a list"}', "labels not a list", 422),
    (f"/v1/telemetry/{SERVICE}/predictions",
     '{"events": [' + ",".join([
         _event(request_id="t-good"), _event(ts=-1e300), _event(ts=1e18), _event(version=9),
         _event(latency_ms=1e300), _event(latency_ms=-1), _event(prediction=5),
         _event(request_id=K10), _event(request_id="open:x:y"),
         _event().replace("[0.5, 1.5]", "[Infinity, 1.5]"), '"junk"']) + "]}",
     "events: bad times, version, latency, class, ids, Infinity", 200),
    (f"/v1/telemetry/{SERVICE}/labels",
     '{"labels": [{"request_id": "l1", "label": 0}, {"request_id": "l2", "label": -1e300}, '
     '{"request_id": "l3", "label": 2}, 5, {"request_id": "l4", "label": NaN}]}',
     "labels: off-class, non-finite, not objects", 200),
    ("/v1/approvals/open:x:y", "", "a key-like approval id", -1),
    ("/v1/incidents/open:x:y", "", "a key-like incident id", -1),
]


@pytest.mark.parametrize("target", ["api", "gateway"])
@pytest.mark.parametrize(("path", "text", "what", "status"), HAND_MADE,
                         ids=[h[2] for h in HAND_MADE])
def test_hand_made_bad_input_gets_a_4xx_or_a_dead_letter_never_a_5xx(
        apps: Apps, target: str, path: str, text: str, what: str, status: int) -> None:
    on_gateway = target == "gateway"
    if on_gateway and not path.startswith("/v1/models/"):
        pytest.skip("the gateway app serves only /v1/models")
    client = TestClient(apps.gateway_app if on_gateway else apps.api)
    headers = {} if on_gateway else dict(ALICE)
    before = apps.dead()
    if text:
        res = client.post(path, content=text, headers={**headers,
                                                       "content-type": "application/json"})
    else:
        res = client.get(path, headers=headers)
    body = res.json()
    check(apps, path, res.status_code, body, before, f"hand-made {target}")
    if status > 0:
        assert res.status_code == status, (what, body)
    if status == 422 and path.endswith(("/predict", "/feedback")) and "[" not in text[:12]:
        single_rejected = text.startswith(('{"features"', '{"request_id"'))
        if single_rejected and "open:x:y/" not in path:
            assert apps.dead() - before == 1, what
            dead = apps.world.writer.dead_letters(1)[0]
            assert dead["reason"] and dead["field"], dead


def test_a_mixed_batch_serves_and_records_its_good_rows(apps: Apps) -> None:
    """Of four rows, two are good: both answered by the champion and in the telemetry stream."""
    client = TestClient(apps.gateway_app)
    text = ('{"instances": [{"a": 1, "b": 1}, {"a": -Infinity, "b": 1}, 7, {"a": 2, "b": 2}],'
            ' "request_ids": ["m1", "m2", "m3", "m4"]}')
    res = client.post(PREDICT, content=text, headers={"content-type": "application/json"})
    body = res.json()
    assert res.status_code == 200
    assert [p["version"] for p in body["predictions"]] == [1, None, None, 1]
    assert [(e["index"], e["request_id"]) for e in body["errors"]] == [(1, "m2"), (2, "m3")]
    assert body["errors"][1]["reason"] == "instances[2]: expected an object of features, got int"
    apps.flush()
    stored = TelemetryReader(apps.world.r, apps.world.keys).recent_predictions(SERVICE, 10)
    assert sorted(e.request_id for _, e in stored) == ["m1", "m4"]
    dead = apps.world.writer.dead_letters()
    assert [(d["kind"], d["index"], d["field"]) for d in dead] == [
        ("request", "1", "instances[1].a"), ("request", "2", "instances[2]")]


def test_ingest_dead_letters_each_bad_event_with_its_reason(apps: Apps) -> None:
    """The events of the issue: each refused for its own reason, the good ones stored."""
    text = next(h[1] for h in HAND_MADE if h[0].endswith("/predictions"))
    res = TestClient(apps.api).post(f"/v1/telemetry/{SERVICE}/predictions", content=text,
                                    headers={**ALICE, "content-type": "application/json"})
    assert res.status_code == 200 and (res.json()["accepted"], res.json()["rejected"]) == (2, 9)
    reasons = {d["index"]: d["reason"] for d in apps.world.writer.dead_letters()}
    assert "outside the accepted window" in reasons["1"] and "outside" in reasons["2"]
    assert "version 9 does not exist; known versions: [1, 2]" in reasons["3"]
    assert "expected 0 to 3600000 ms" in reasons["4"] and "expected 0 to" in reasons["5"]
    assert "5 is not one of the service's classes [0, 1]" in reasons["6"]
    assert "request_id: expected 1-128 characters" in reasons["7"]
    assert "features[0]: expected a finite number or null, got inf" in reasons["9"]
    assert "event: expected an object" in reasons["10"]
    stored = TelemetryReader(apps.world.r, apps.world.keys).recent_predictions(SERVICE, 10)
    assert sorted(e.request_id for _, e in stored) == ["open:x:y", "t-good"]
