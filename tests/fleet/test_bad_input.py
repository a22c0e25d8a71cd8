"""Bad input to the gateway and the event checks: judged per row, dead-lettered with a reason.

One Infinity in a 100-row batch costs that row only: the other 99 are answered and recorded. The
limits (time window, request-id pattern, finite numbers, versions, classes) each refuse the values
the issue found accepted silently.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.dummy import DummyClassifier, DummyRegressor

from fleet.errors import InvalidInput
from fleet.gateway import Gateway
from fleet.gateway.app import create_gateway_app
from fleet.gateway.limits import ServiceLimits
from fleet.registry import ArtifactStore, Registry
from fleet.schema import FeatureSchema, LabelSpec
from fleet.telemetry import TelemetryBuffer, TelemetryReader, TelemetryWriter
from fleet.telemetry.events import validate_label, validate_prediction
from fleet.telemetry.limits import TS_AHEAD_S, TS_MIN, Limits

NOW = 1_700_000_000.0
SCHEMA = FeatureSchema.numeric(["a", "b"])
ROW = {"a": 1.0, "b": 2.0}


def _const(value: int) -> DummyClassifier:
    """A binary classifier (classes 0 and 1) that always answers ``value``."""
    return DummyClassifier(strategy="constant", constant=value).fit(np.zeros((2, 2)), [0, 1])


@pytest.fixture()
def gw(r, keys, clock, artifacts_dir: Path) -> Iterator[Gateway]:
    """Service ``svc`` (binary classification) with version 1 as champion."""
    registry = Registry(r, keys, ArtifactStore(artifacts_dir), clock=clock)
    registry.register_service("svc", task="classification", schema=SCHEMA)
    registry.add_version("svc", _const(1), created_by="t")
    registry.promote("svc", 1, actor="t", reason="first")
    buf = TelemetryBuffer(TelemetryWriter(r, keys, clock=clock), background=False)
    yield Gateway(registry, buf, clock=clock, refresh_interval=0.0)
    buf.close()


def _post(client: TestClient, path: str, text: str) -> tuple[int, dict]:
    """POST raw JSON text: Python reads ``Infinity`` and ``NaN``, httpx would not send them."""
    res = client.post(path, content=text, headers={"content-type": "application/json"})
    return res.status_code, res.json()


# --- limits, one value at a time --------------------------------------------------------------
GOOD_EVENT = {"ts": NOW, "request_id": "r1", "version": 1, "features": [1.0, None],
              "prediction": 1, "latency_ms": 2.0}
LIMITS = Limits(now=NOW, versions=frozenset({1, 2}), classes=frozenset({0.0, 1.0}))


@pytest.mark.parametrize(("change", "field", "says"), [
    ({"ts": -1e300}, "ts", "outside the accepted window"),
    ({"ts": 1e18}, "ts", "outside the accepted window"),
    ({"ts": TS_MIN - 1}, "ts", "2000-01-01"),
    ({"ts": NOW + TS_AHEAD_S + 1}, "ts", "now + 86400 s"),
    ({"version": 7}, "version", "version 7 does not exist; known versions: [1, 2]"),
    ({"latency_ms": 1e300}, "latency_ms", "expected 0 to 3600000 ms"),
    ({"latency_ms": -1.0}, "latency_ms", "expected 0 to 3600000 ms"),
    ({"latency_ms": math.nan}, "latency_ms", "expected a finite number"),
    ({"prediction": 2}, "prediction", "not one of the service's classes [0, 1]"),
    ({"prediction": math.inf}, "prediction", "expected a finite number or null, got inf"),
    ({"features": [math.inf, 1.0]}, "features[0]", "expected a finite number or null"),
    ({"request_id": "x" * 10_000}, "request_id", "got string of 10000 chars"),
    ({"request_id": "a b"}, "request_id", "matching"),
])
def test_each_limit_refuses_a_prediction_event_naming_field_value_and_rule(
        change: dict, field: str, says: str) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_prediction({**GOOD_EVENT, **change}, 2, LIMITS)
    assert str(err.value).startswith(f"{field}: ") and says in str(err.value)


def test_the_window_edges_and_key_like_ids_are_accepted() -> None:
    for ts in (TS_MIN, NOW + TS_AHEAD_S):
        assert validate_prediction({**GOOD_EVENT, "ts": ts}, 2, LIMITS).ts == ts
    ev = validate_prediction({**GOOD_EVENT, "request_id": "open:x:y"}, 2, LIMITS)
    assert ev.request_id == "open:x:y"  # an id is data, never a key: any id matching is fine


@pytest.mark.parametrize(("label", "says"), [
    (-1e300, "-1e+300 is not one of the service's classes [0, 1]"),
    (0.5, "not one of the service's classes"),
    (math.nan, "expected a finite number, got nan"),
    (10**400, "expected a finite number, got an integer of 401 digits"),
    ("1", "expected a finite number, got string '1'"),
])
def test_labels_outside_a_binary_task_are_refused(label: object, says: str) -> None:
    with pytest.raises(InvalidInput, match=r"^label: ") as err:
        validate_label({"request_id": "r1", "label": label}, LIMITS)
    assert says in str(err.value)


def test_a_declared_label_range_bounds_a_regression_label() -> None:
    lim = Limits(now=NOW, label_min=0.0, label_max=100.0)
    assert validate_label({"request_id": "r", "label": 99.5}, lim).label == 99.5
    with pytest.raises(InvalidInput, match="outside the declared range"):
        validate_label({"request_id": "r", "label": -1e300}, lim)


# --- the gateway: one bad row costs that row only ---------------------------------------------
def test_one_infinity_in_a_100_row_batch_loses_only_that_row(gw: Gateway, r, keys) -> None:
    client = TestClient(create_gateway_app(gw))
    rows = [json.dumps({"a": float(i), "b": 1.0}) for i in range(100)]
    rows[37] = '{"a": Infinity, "b": 1.0}'
    rows[80] = '{"a": 1.0, "b": NaN}'
    ids = json.dumps([f"q{i}" for i in range(100)])
    status, body = _post(client, "/v1/models/svc/predict",
                         f'{{"instances": [{",".join(rows)}], "request_ids": {ids}}}')
    assert status == 200, body
    served = [p for p in body["predictions"] if p["version"] is not None]
    assert len(body["predictions"]) == 100 and len(served) == 98
    assert all(p["prediction"] == 1.0 and p["error"] is None for p in served)
    assert body["errors"] == [
        {"index": 37, "request_id": "q37", "reason": "instances[37].a: expected a finite number "
                                                      "(null for a missing value), got inf"},
        {"index": 80, "request_id": "q80", "reason": "instances[80].b: expected a finite number "
                                                      "(null for a missing value), got nan"}]
    assert body["predictions"][37] == {"request_id": "q37", "version": None, "prediction": None,
                                       "error": "rejected: " + body["errors"][0]["reason"]}
    gw.flush()
    recorded = [e.request_id for _, e in TelemetryReader(r, keys).recent_predictions("svc", 200)]
    assert sorted(recorded) == sorted(f"q{i}" for i in range(100) if i not in (37, 80))
    dead = gw.writer.dead_letters()
    assert [(d["kind"], d["index"], d["field"]) for d in dead] == [
        ("request", "37", "instances[37].a"), ("request", "80", "instances[80].b")]
    assert dead[0]["reason"].startswith("[37] instances[37].a: expected a finite number")
    assert json.loads(dead[0]["raw"]) == {"request_id": "q37", "features": {"a": math.inf,
                                                                            "b": 1.0}}


def test_a_single_bad_row_is_a_422_and_a_dead_letter(gw: Gateway) -> None:
    client = TestClient(create_gateway_app(gw))
    status, body = _post(client, "/v1/models/svc/predict", '{"features": {"a": -Infinity, '
                                                            '"b": 1}}')
    assert status == 422 and body["detail"].startswith("features.a: expected a finite number")
    status, body = _post(client, "/v1/models/svc/predict",
                         json.dumps({"features": ROW, "request_id": "k" * 10_000}))
    assert status == 422 and "request_id: expected 1-128 characters" in body["detail"]
    assert [(d["kind"], d["index"], d["field"]) for d in gw.writer.dead_letters()] == [
        ("request", "", "features.a"), ("request", "", "request_id")]


def test_bad_ids_in_a_batch_are_rejected_per_row(gw: Gateway) -> None:
    got = gw.predict("svc", [ROW, ROW, ROW], ["ok-1", "x" * 10_000, 5])
    assert [p.rejected for p in got] == [False, True, True]
    assert got[1].request_id is None and "request_ids[1]: expected 1-128" in (got[1].error or "")
    assert "request_ids[2]: expected" in (got[2].error or "")


def test_feedback_judges_each_label_against_the_models_classes(gw: Gateway) -> None:
    client = TestClient(create_gateway_app(gw))
    labels = [{"request_id": "a", "label": 1}, "not an object", [1, 2],
              {"request_id": "b", "label": -1e300}, {"request_id": "c", "label": 3},
              {"request_id": "d", "label": 0}]
    status, body = _post(client, "/v1/models/svc/feedback", json.dumps({"labels": labels}))
    assert status == 200, body
    assert (body["accepted"], body["rejected"]) == (2, 4)
    assert body["errors"][0] == {"index": 1, "reason": "label: expected an object, got string "
                                                       "'not an object'"}
    assert [e["index"] for e in body["errors"]] == [1, 2, 3, 4]
    assert body["errors"][2]["reason"] == ("label: -1e+300 is not one of the service's classes "
                                           "[0, 1]")
    dead = gw.writer.dead_letters()
    assert [(d["kind"], d["index"]) for d in dead] == [("label", "1"), ("label", "2"),
                                                       ("label", "3"), ("label", "4")]
    status, body = _post(client, "/v1/models/svc/feedback",
                         '{"request_id": "e", "label": Infinity}')
    assert status == 422 and body["detail"] == "label: expected a finite number, got inf"
    assert gw.writer.dead_letters()[-1]["reason"] == "[0] label: expected a finite number, got inf"


def test_a_declared_label_spec_wins_over_the_models_classes(r, keys, clock, artifacts_dir) -> None:
    registry = Registry(r, keys, ArtifactStore(artifacts_dir), clock=clock)
    schema = SCHEMA.model_copy(update={"label": LabelSpec(classes=(0.0, 1.0, 2.0))})
    registry.register_service("tri", task="classification", schema=schema)
    registry.add_version("tri", _const(1), created_by="t")
    registry.promote("tri", 1, actor="t", reason="first")
    lim = ServiceLimits(registry, clock=clock)("tri")
    assert lim.classes == {0.0, 1.0, 2.0} and lim.versions == {1}


def test_a_model_answering_infinity_is_an_error_not_a_500(r, keys, clock, artifacts_dir) -> None:
    """A regressor that answers inf: the row gets a model error, the event stores null."""
    registry = Registry(r, keys, ArtifactStore(artifacts_dir), clock=clock)
    registry.register_service("reg", task="regression", schema=SCHEMA)
    # Hand-made: sklearn refuses to fit an infinite constant, so it is set after fitting.
    inf_model = DummyRegressor().fit(np.zeros((2, 2)), [0.0, 1.0])
    inf_model.constant_ = np.array([[math.inf]])
    registry.add_version("reg", inf_model, created_by="t")
    registry.promote("reg", 1, actor="t", reason="first")
    buf = TelemetryBuffer(TelemetryWriter(r, keys, clock=clock), background=False)
    gw = Gateway(registry, buf, clock=clock, refresh_interval=0.0)
    status, body = _post(TestClient(create_gateway_app(gw)), "/v1/models/reg/predict",
                         json.dumps({"instances": [ROW]}))
    assert status == 200 and body["predictions"][0]["error"] == (
        "model error: non-finite prediction")
    gw.flush()
    ev = TelemetryReader(r, keys).recent_predictions("reg", 1)[0][1]
    assert ev.prediction is None and ev.error == "model error: non-finite prediction"
