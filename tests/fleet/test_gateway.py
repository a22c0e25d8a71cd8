"""Gateway: split proportions, stickiness, shadow, reload on pointer change, 4xx on bad bodies."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sklearn.dummy import DummyClassifier

from fleet.embedded_redis import free_port
from fleet.gateway import Gateway
from fleet.gateway.app import create_gateway_app
from fleet.registry import ArtifactStore, Registry
from fleet.schema import FeatureSchema, FeatureSpec
from fleet.telemetry import TelemetryBuffer, TelemetryReader, TelemetryWriter

SCHEMA = FeatureSchema(features=(FeatureSpec(name="a"), FeatureSpec(name="b", nullable=False),
                                 FeatureSpec(name="flag", dtype="bool")))


def _const(value: int) -> DummyClassifier:
    """A model that always answers ``value``, so the answering version is visible."""
    return DummyClassifier(strategy="constant", constant=value).fit(np.zeros((2, 3)), [0, 1])


@pytest.fixture()
def setup(r, keys, clock, artifacts_dir: Path) -> Iterator[tuple[Registry, Gateway]]:
    registry = Registry(r, keys, ArtifactStore(artifacts_dir), clock=clock)
    registry.register_service("svc", task="classification", schema=SCHEMA)
    registry.add_version("svc", _const(0), created_by="t")
    registry.add_version("svc", _const(1), created_by="t")
    registry.promote("svc", 1, actor="t", reason="first")
    buf = TelemetryBuffer(TelemetryWriter(r, keys, clock=clock), background=False)
    gw = Gateway(registry, buf, clock=clock, refresh_interval=0.0)
    yield registry, gw
    buf.close()


ROW = {"a": 1.0, "b": 2.0, "flag": True}


def test_canary_split_is_close_to_the_weight_over_10000_requests(setup) -> None:
    registry, gw = setup
    registry.start_canary("svc", 2, 0.1, actor="t", reason="canary")
    rids = [f"req-{i}" for i in range(10_000)]
    got = gw.predict("svc", [ROW] * 10_000, rids)
    share = Counter(p.version for p in got)[2] / 10_000
    # Binomial sd at p=0.1, n=10k is 0.003; allow 3.3 sd.
    assert abs(share - 0.1) < 0.01
    assert all(p.prediction == (1.0 if p.version == 2 else 0.0) for p in got)


def test_routing_is_sticky_per_request_id(setup) -> None:
    registry, gw = setup
    registry.start_canary("svc", 2, 0.5, actor="t", reason="canary")
    first = {p.request_id: p.version for p in gw.predict("svc", [ROW] * 200,
                                                         [f"x{i}" for i in range(200)])}
    assert set(first.values()) == {1, 2}
    for i in range(0, 200, 7):
        again = gw.predict("svc", [ROW], [f"x{i}"])[0]
        assert again.version == first[f"x{i}"]


def test_shadow_answers_with_the_champion_and_logs_the_challenger(setup, r, keys) -> None:
    registry, gw = setup
    registry.start_shadow("svc", 2, actor="t", reason="shadow")
    got = gw.predict("svc", [ROW] * 50, [f"s{i}" for i in range(50)])
    assert {p.version for p in got} == {1} and {p.prediction for p in got} == {0.0}
    gw.flush()
    events = [e for _, e in TelemetryReader(r, keys).recent_predictions("svc", 1000)]
    assert sum(1 for e in events if e.shadow and e.version == 2 and e.prediction == 1.0) == 50
    assert sum(1 for e in events if not e.shadow and e.version == 1) == 50


def test_gateway_reloads_when_pointers_change(setup) -> None:
    registry, gw = setup
    assert gw.predict("svc", [ROW], ["a"])[0].version == 1
    registry.promote("svc", 2, actor="t", reason="better")
    assert gw.predict("svc", [ROW], ["a"])[0].version == 2
    registry.rollback("svc", actor="t", reason="worse")
    assert gw.predict("svc", [ROW], ["a"])[0].version == 1


def test_nulls_are_served_and_recorded_as_null(setup, r, keys) -> None:
    _, gw = setup
    p = gw.predict("svc", [{"a": None, "b": 1.0, "flag": False}], ["n1"])[0]
    assert p.error is None
    gw.flush()
    ev = TelemetryReader(r, keys).recent_predictions("svc", 1)[0][1]
    assert ev.features == (None, 1.0, 0.0)


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"features": {"a": 1.0, "flag": True}}, 422, "features.b: missing"),
        ({"features": {"a": "x", "b": 1.0, "flag": True}}, 422,
         "features.a: expected number, got string 'x'"),
        ({"features": {"a": 1.0, "b": None, "flag": True}}, 422, "features.b: null is not allowed"),
        ({"features": {"a": 1.0, "b": 1.0, "flag": 1}}, 422,
         "features.flag: expected boolean, got int 1"),
        ({"features": dict(ROW, zz=1)}, 422, "unknown feature(s) ['zz']"),
        ({"features": ROW, "request_id": "x" * 10_000}, 422, "request_id: expected 1-128"),
        ({"instances": [ROW], "request_ids": ["a", "b"]}, 422, "request_ids: expected 1 ids"),
        ({"instances": []}, 422, "instances: expected at least one row"),
        ({"features": ROW, "instances": [ROW]}, 422, "exactly one of 'features'"),
        ({"featurez": ROW}, 422, "featurez"),
    ],
)
def test_bad_bodies_get_4xx_naming_the_field(setup, body, status, detail) -> None:
    _, gw = setup
    client = TestClient(create_gateway_app(gw))
    res = client.post("/v1/models/svc/predict", json=body)
    assert res.status_code == status
    assert detail in str(res.json()["detail"])


def test_unknown_service_and_malformed_json(setup) -> None:
    _, gw = setup
    client = TestClient(create_gateway_app(gw))
    res = client.post("/v1/models/nope/predict", json={"features": ROW})
    assert res.status_code == 404 and "unknown service 'nope'; known services: svc" in res.text
    res = client.post("/v1/models/svc/predict", content=b"{not json",
                      headers={"content-type": "application/json"})
    assert res.status_code == 422
    res = client.post("/v1/models/svc/feedback", json={"labels": [{"request_id": "x"}]})
    assert res.status_code == 200 and res.json()["rejected"] == 1


@pytest.fixture()
def live_server(setup) -> Iterator[str]:
    """The gateway app under a real uvicorn server on a loopback port."""
    _, gw = setup
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_gateway_app(gw), host="127.0.0.1", port=port,
                                           log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(timeout=5)


def test_real_http_predict_feedback_and_info(live_server, setup, r, keys) -> None:
    _, gw = setup
    with httpx.Client(base_url=live_server) as c:
        one = c.post("/v1/models/svc/predict", json={"features": ROW, "request_id": "h1"}).json()
        assert one == {"request_id": "h1", "version": 1, "prediction": 0.0}
        many = c.post("/v1/models/svc/predict",
                      json={"instances": [ROW, ROW], "request_ids": ["h2", "h3"]}).json()
        assert [p["request_id"] for p in many["predictions"]] == ["h2", "h3"]
        fb = c.post("/v1/models/svc/feedback",
                    json={"labels": [{"request_id": "h1", "label": 1}]}).json()
        assert fb["accepted"] == 1
        info = c.get("/v1/models/svc").json()
        assert info["champion"] == 1 and [v["number"] for v in info["versions"]] == [1, 2]
    gw.flush()
    win = TelemetryReader(r, keys).labelled_window("svc", 10)
    assert win.request_ids == ("h1",) and win.y.tolist() == [1.0]
