"""Replayer: reproducible streams, faults on exactly the scheduled rows, delayed labels, serving
faults in real Redis, and the HTTP wire format."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pydantic
import pytest
import redis
import yaml
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.testclient import TestClient

from fleet.clock import ManualClock
from fleet.datasets import sea
from fleet.errors import InvalidInput
from fleet.replay import (
    Batch,
    BatchReport,
    Fault,
    FaultSchedule,
    HttpTarget,
    RedisFaultSink,
    Replayer,
    Served,
    ServingFault,
    serving_faults,
)
from fleet.replay.fault_store import clear_serving_fault, set_serving_fault

STREAM = sea(3000, drifts=(1500,), seed=11)
NAMES = STREAM.feature_names


class RecordingTarget:
    """In-process stand-in for a gateway: answers with SEA's first concept and logs every call."""

    def __init__(self, on_predict: Any = None, fail_at: int | None = None):
        self.calls: list[tuple[str, list[str]]] = []
        self.labels: list[tuple[str, Any]] = []
        self.on_predict = on_predict
        self.fail_at = fail_at

    def predict(self, service: str, rows: list[dict], request_ids: list[str]) -> list[Served]:
        if self.fail_at is not None and f"sea-0-{self.fail_at}" in request_ids:
            raise ConnectionError("gateway went away")
        if self.on_predict is not None:
            self.on_predict(request_ids)
        self.calls.append(("predict", request_ids))
        out: list[Served] = []
        for rid, row in zip(request_ids, rows, strict=True):
            if row["x1"] is None or row["x2"] is None:
                out.append(Served(request_id=rid, version=1, prediction=None, error="null"))
            else:
                pred = float(row["x1"] + row["x2"] <= 8.0)
                out.append(Served(request_id=rid, version=1, prediction=pred, error=None))
        return out

    def feedback(self, service: str, labels: list[tuple[str, Any]]) -> int:
        self.calls.append(("feedback", [rid for rid, _ in labels]))
        self.labels.extend(labels)
        return len(labels)


def _flat(batches: list[Batch]) -> tuple[list[str], np.ndarray, np.ndarray]:
    ids = [rid for b in batches for rid in b.request_ids]
    rows = [r for b in batches for r in b.rows]
    X = np.array([[np.nan if r[n] is None else r[n] for n in NAMES] for r in rows])
    y = np.array([v for b in batches for v in b.labels])
    return ids, X, y


def _row(rid: str) -> int:
    return int(rid.rsplit("-", 1)[1])


def _schedule(*faults: dict[str, Any]) -> FaultSchedule:
    return FaultSchedule.model_validate({"faults": list(faults)})


RANDOM_FAULTS = _schedule(
    {"kind": "nulls", "start": 100, "stop": 900, "feature": "x2", "params": {"p": 0.3}},
    {"kind": "concept_change", "start": 500, "params": {"p": 0.5}},
)


def test_same_seed_same_stream_other_seed_differs_batch_size_does_not_matter() -> None:
    def batches(seed: int, batch_size: int = 50) -> list[Batch]:
        rep = Replayer(RecordingTarget(), clock=ManualClock(), seed=seed, batch_size=batch_size,
                       faults=RANDOM_FAULTS)
        return list(rep.iter_batches("sea", STREAM, 0, 1000))

    a, b, c = batches(3), batches(3), batches(4)
    assert a == b
    assert a[0].request_ids[:2] == ["sea-3-0", "sea-3-1"]
    ids_a, Xa, ya = _flat(a)
    ids_c, Xc, yc = _flat(c)
    assert ids_c[0] == "sea-4-0"
    assert not np.array_equal(np.isnan(Xa), np.isnan(Xc))
    assert not np.array_equal(ya, yc)
    ids_d, Xd, yd = _flat(batches(3, batch_size=37))
    assert ids_d == ids_a
    np.testing.assert_array_equal(Xd, Xa)
    np.testing.assert_array_equal(yd, ya)


@dataclass(frozen=True)
class Case:
    fault: dict[str, Any]
    expect_X: Any  # (X_original_slice) -> expected X slice
    expect_y: Any  # (y_original_slice) -> expected y slice


def _with_col(col: int, f: Any) -> Any:
    def g(X: np.ndarray) -> np.ndarray:
        X = X.copy()
        X[:, col] = f(X[:, col])
        return X
    return g


def _same(a: np.ndarray) -> np.ndarray:
    return a


CASES = {
    "covariate_shift": Case(
        {"kind": "covariate_shift", "start": 120, "stop": 260, "feature": "x3",
         "params": {"shift": 5.0, "scale": 2.0}},
        _with_col(2, lambda c: c * 2.0 + 5.0), _same,
    ),
    "unit_change": Case(
        {"kind": "unit_change", "start": 120, "stop": 260, "feature": "x1"},
        _with_col(0, lambda c: c * 1000.0), _same,
    ),
    "nulls": Case(
        {"kind": "nulls", "start": 120, "stop": 260, "feature": "x2", "params": {"p": 1.0}},
        _with_col(1, lambda c: np.full_like(c, np.nan)), _same,
    ),
    "concept_change": Case(
        {"kind": "concept_change", "start": 120, "stop": 260},
        _same, lambda y: 1 - y,
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_each_data_fault_changes_exactly_its_rows(case: Case) -> None:
    rep = Replayer(RecordingTarget(), clock=ManualClock(), faults=_schedule(case.fault))
    _, X, y = _flat(list(rep.iter_batches("sea", STREAM, 0, 400)))
    X0, y0 = STREAM.X[:400], STREAM.y[:400]
    inside = slice(120, 260)
    np.testing.assert_array_equal(X[inside], case.expect_X(X0[inside]))
    np.testing.assert_array_equal(y[inside], case.expect_y(y0[inside]))
    for outside in (slice(0, 120), slice(260, 400)):
        np.testing.assert_array_equal(X[outside], X0[outside])
        np.testing.assert_array_equal(y[outside], y0[outside])


def test_partial_nulls_hit_about_p_of_the_scheduled_rows_only() -> None:
    rep = Replayer(RecordingTarget(), clock=ManualClock(), seed=1, faults=RANDOM_FAULTS)
    _, X, _ = _flat(list(rep.iter_batches("sea", STREAM, 0, 1000)))
    nulls = np.isnan(X[:, 1])
    assert not nulls[:100].any() and not nulls[900:].any()
    assert 0.25 < nulls[100:900].mean() < 0.35
    assert not np.isnan(X[:, [0, 2]]).any()


def test_labels_are_held_back_by_label_delay_rows(clock) -> None:
    target = RecordingTarget()
    seen: list[tuple[int, int]] = []

    def check(report: BatchReport) -> None:
        sent_upto = report.batch.start + len(report.batch.rows)
        labelled = [_row(rid) for rid, _ in target.labels]
        assert labelled == list(range(max(0, sent_upto - 120)))
        seen.append((sent_upto, len(labelled)))

    rep = Replayer(target, clock=clock, batch_size=50, label_delay=120)
    stats = rep.run("sea", STREAM, 0, 500, on_batch=check)
    assert seen[:4] == [(50, 0), (100, 0), (150, 30), (200, 80)]
    # the last 120 labels arrive at the end, after the last prediction
    assert [_row(rid) for rid, _ in target.labels] == list(range(500))
    assert target.calls[-1] == ("feedback", [f"sea-0-{i}" for i in range(380, 500)])
    assert [y for _, y in target.labels] == STREAM.y[:500].tolist()
    assert (stats.labels_sent, stats.labels_accepted) == (500, 500)


def test_serving_faults_are_on_in_redis_for_exactly_their_rows(r, keys, clock) -> None:
    seen: dict[int, dict[str, ServingFault]] = {}

    def snapshot(request_ids: list[str]) -> None:
        faults = serving_faults(r, keys, "sea")
        for rid in request_ids:
            seen[_row(rid)] = faults

    schedule = _schedule(
        {"kind": "latency", "start": 200, "stop": 400, "version": 2,
         "params": {"latency_ms": 250}},
        {"kind": "errors", "start": 300, "stop": 500, "version": "challenger",
         "params": {"error_rate": 0.2}},
        {"kind": "errors", "start": 350, "stop": 450, "version": "challenger",
         "params": {"error_rate": 0.5}},
    )
    rep = Replayer(RecordingTarget(on_predict=snapshot), clock=clock, batch_size=64,
                   faults=schedule, fault_sink=RedisFaultSink(r, keys))
    rep.run("sea", STREAM, 0, 600)

    slow, bad, worse = ServingFault(latency_ms=250.0), ServingFault(error_rate=0.2), (
        ServingFault(error_rate=0.6)
    )
    expected = (
        [{}] * 200 + [{"2": slow}] * 100 + [{"2": slow, "challenger": bad}] * 50
        + [{"2": slow, "challenger": worse}] * 50 + [{"challenger": worse}] * 50
        + [{"challenger": bad}] * 50 + [{}] * 100
    )
    assert [seen[i] for i in range(600)] == expected
    assert r.exists(keys.faults("sea")) == 0


def test_serving_faults_are_cleared_when_the_replay_dies(r, keys, clock) -> None:
    schedule = _schedule(
        {"kind": "latency", "start": 0, "version": 1, "params": {"latency_ms": 100}}
    )
    rep = Replayer(RecordingTarget(fail_at=120), clock=clock, faults=schedule,
                   fault_sink=RedisFaultSink(r, keys))
    with pytest.raises(ConnectionError):
        rep.run("sea", STREAM, 0, 300)
    assert serving_faults(r, keys, "sea") == {}


def test_stats_pacing_and_rolling_accuracy(clock) -> None:
    """SEA's first concept (theta=8) holds until row 1500, so accuracy falls after it."""
    rep = Replayer(RecordingTarget(), clock=clock, rate=100.0, batch_size=50, faults=_schedule(
        {"kind": "nulls", "start": 2000, "stop": 2010, "feature": "x1", "params": {"p": 1.0}}
    ))
    t0 = clock.now()
    stats = rep.run("sea", STREAM)
    assert clock.now() - t0 == pytest.approx(29.5)  # last batch starts at row 2950, 100 rows/s
    assert (stats.rows, stats.batches, stats.errors, stats.labels_sent) == (3000, 60, 10, 3000)
    assert stats.served_by == {1: 3000}
    assert len(stats.accuracy) == 3
    assert stats.accuracy[0] > 0.85 and stats.accuracy[2] < stats.accuracy[0] - 0.03


def test_fault_schedule_loads_from_yaml_and_rejects_bad_faults() -> None:
    doc = yaml.safe_load("""
faults:
  - {kind: unit_change, start: 1000, stop: 2000, feature: nswprice, params: {factor: 1000}}
  - {kind: errors, start: 500, version: challenger, params: {error_rate: 0.3}}
""")
    s = FaultSchedule.model_validate(doc)
    assert s.faults[0].param("factor") == 1000 and s.faults[1].version == "challenger"
    bad = [
        ({"kind": "nulls", "start": 0, "feature": "x1"}, "nulls: missing required params"),
        ({"kind": "latency", "start": 0, "params": {"latency_ms": 5}}, "needs 'version'"),
        ({"kind": "unit_change", "start": 0, "feature": "x1", "params": {"fctor": 2}},
         r"unknown params \['fctor'\]; allowed: \['factor'\]"),
        ({"kind": "nulls", "start": 5, "stop": 5, "feature": "x1", "params": {"p": 1}},
         r"stop \(5\) must be greater than start \(5\)"),
        ({"kind": "errors", "start": 0, "version": 1, "params": {"error_rate": 2}},
         r"error_rate must be in \[0, 1\]"),
        ({"kind": "drift", "start": 0}, "kind"),
    ]
    for raw, msg in bad:
        with pytest.raises(pydantic.ValidationError, match=msg):
            Fault.model_validate(raw)


def test_unknown_feature_and_missing_sink_fail_early(clock) -> None:
    rep = Replayer(RecordingTarget(), clock=clock, faults=_schedule(
        {"kind": "nulls", "start": 0, "feature": "nswprice", "params": {"p": 1}}
    ))
    with pytest.raises(InvalidInput, match=r"faults\[0\] \(nulls\) names feature 'nswprice'; "
                       r"the stream has \['x1', 'x2', 'x3'\]"):
        rep.run("sea", STREAM)
    with pytest.raises(InvalidInput, match="no fault_sink"):
        Replayer(RecordingTarget(), clock=clock, faults=_schedule(
            {"kind": "errors", "start": 0, "version": 1, "params": {"error_rate": 1}}
        ))


def test_fault_store_round_trip_and_malformed_values(r, keys, redis_url) -> None:
    set_serving_fault(r, keys, "svc", 3, ServingFault(latency_ms=40.0))
    set_serving_fault(r, keys, "svc", "challenger", ServingFault(error_rate=0.1))
    r.hset(keys.faults("svc"), "9", "not json")
    assert serving_faults(r, keys, "svc") == {
        "3": ServingFault(latency_ms=40.0), "challenger": ServingFault(error_rate=0.1),
    }
    assert r.hget(keys.faults("svc"), "3") == '{"error_rate": 0.0, "latency_ms": 40.0}'
    raw = redis.Redis.from_url(redis_url)  # a gateway may read without decode_responses
    try:
        assert serving_faults(raw, keys, "svc")["3"] == ServingFault(latency_ms=40.0)
    finally:
        raw.close()
    clear_serving_fault(r, keys, "svc", 3)
    assert set(serving_faults(r, keys, "svc")) == {"challenger"}


def _stand_in_gateway() -> tuple[FastAPI, list[dict[str, Any]]]:
    """A hand-written stand-in for the real gateway: speaks its wire format and nothing more."""
    app = FastAPI()
    received: list[dict[str, Any]] = []

    @app.post("/v1/models/{svc}/predict")
    def predict(svc: str, body: dict[str, Any]) -> Any:
        received.append(body)
        if any(v is None for row in body["instances"] for v in row.values()):
            return JSONResponse({"detail": "instances[0].x2: null is not allowed"}, 422)
        return {"predictions": [
            {"request_id": rid, "version": 4, "prediction": float(row["x1"] + row["x2"] <= 8.0),
             "error": None}
            for rid, row in zip(body["request_ids"], body["instances"], strict=True)
        ]}

    @app.post("/v1/models/{svc}/feedback")
    def feedback(svc: str, body: dict[str, Any]) -> Any:
        received.append(body)
        ok = [x for x in body["labels"] if x["request_id"].startswith(f"{svc}-")]
        return {"accepted": len(ok), "rejected": len(body["labels"]) - len(ok)}

    return app, received


def test_http_target_speaks_the_gateway_wire_format(clock) -> None:
    app, received = _stand_in_gateway()
    with TestClient(app) as client:
        rep = Replayer(HttpTarget(client), clock=clock, batch_size=100, faults=_schedule(
            {"kind": "nulls", "start": 200, "stop": 250, "feature": "x2", "params": {"p": 1}}
        ))
        stats = rep.run("sea", STREAM, 0, 400)
    assert received[0]["request_ids"][:2] == ["sea-0-0", "sea-0-1"]
    assert received[0]["instances"][0] == dict(zip(NAMES, STREAM.X[0].tolist(), strict=True))
    assert received[1] == {"labels": [
        {"request_id": f"sea-0-{i}", "label": int(STREAM.y[i])} for i in range(100)
    ]}
    # the batch [200, 300) was refused as a whole: every row is an error, the replay goes on
    assert (stats.rows, stats.errors, stats.labels_sent, stats.labels_accepted) == (
        400, 100, 400, 400
    )
    assert stats.served_by == {4: 300}


def test_http_target_with_plain_httpx_client_and_refused_feedback() -> None:
    """The lead's real-HTTP runs use httpx.Client; a refused label body is a bug, so it raises."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/feedback"):
            return httpx.Response(422, json={"detail": "labels[0].label: expected number"})
        body = json.loads(request.content)
        return httpx.Response(200, json={"predictions": [
            {"request_id": rid, "version": 2, "prediction": 1.0, "error": None}
            for rid in body["request_ids"]
        ]})

    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://gw") as client:
        target = HttpTarget(client)
        assert target.predict("s", [{"x1": 1.0}], ["s-0-0"]) == [
            {"request_id": "s-0-0", "version": 2, "prediction": 1.0, "error": None}
        ]
        with pytest.raises(httpx.HTTPStatusError, match="422"):
            target.feedback("s", [("s-0-0", np.int64(1))])
