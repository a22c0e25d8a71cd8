"""Telemetry streams: round trips, capping, dead-lettering of malformed events, joins."""

from __future__ import annotations

import math

import pytest

from fleet.clock import ManualClock
from fleet.telemetry import (
    LabelEvent,
    PredictionEvent,
    TelemetryBuffer,
    TelemetryReader,
    TelemetryWriter,
)
from fleet.telemetry.reader import stream_id_key


def _ev(i: int, version: int = 1, *, shadow: bool = False, x0: float | None = 1.0):
    return PredictionEvent(
        ts=1000.0 + i, request_id=f"r{i}", version=version, features=(x0, float(i)),
        prediction=float(i % 2), latency_ms=0.5, shadow=shadow,
    )


def test_prediction_round_trip_keeps_nulls_and_nan_as_null(r, keys) -> None:
    w = TelemetryWriter(r, keys)
    w.write_predictions("s", [_ev(0, x0=None), _ev(1, x0=math.nan), _ev(2)])
    got = [e for _, e in TelemetryReader(r, keys).recent_predictions("s", 10)]
    assert [e.request_id for e in got] == ["r0", "r1", "r2"]
    assert got[0].features == (None, 0.0)
    assert got[1].features == (None, 1.0)
    assert got[2] == _ev(2)


def test_streams_are_capped(r, keys) -> None:
    w = TelemetryWriter(r, keys, maxlen=1_000)
    w.write_predictions("s", (_ev(i) for i in range(20_000)))
    n = r.xlen(keys.telemetry("s"))
    # MAXLEN ~ trims whole macro-nodes, so the length stays near (not exactly at) the cap.
    assert 1_000 <= n < 1_000 + 200


T = 1.7e9
"""An event time inside the accepted window."""


def test_malformed_events_go_to_the_dead_letter_stream_and_the_rest_are_kept(r, keys) -> None:
    w = TelemetryWriter(r, keys, clock=ManualClock(T))
    good = {"ts": T, "request_id": "ok1", "version": 1, "features": [1.0, None],
            "prediction": 1, "latency_ms": 2.0}
    batch = [
        good,
        {"ts": T, "request_id": "b1", "version": 1, "features": [1.0]},
        {"ts": T, "request_id": "b2", "version": "one", "features": [1.0, 2.0]},
        "not an object",
        {"ts": T, "request_id": "", "version": 1, "features": [1.0, 2.0]},
        {"ts": T, "request_id": "b4", "version": 1, "features": [1.0, "x"]},
        dict(good, request_id="ok2"),
    ]
    res = w.ingest_predictions("s", batch, n_features=2)
    assert (res.accepted, res.rejected) == (2, 5)
    dlq = w.dead_letters()
    assert [d["service"] for d in dlq] == ["s"] * 5
    reasons = [d["reason"] for d in dlq]
    assert reasons[0] == "[1] features: expected a list of 2 values, got 1 values"
    assert reasons[1].startswith("[2] version: expected a non-negative integer")
    assert reasons[2] == "[3] event: expected an object, got string 'not an object'"
    assert "request_id" in reasons[3]
    assert reasons[4] == "[5] features[1]: expected a finite number or null, got string 'x'"
    assert [d["index"] for d in dlq] == ["1", "2", "3", "4", "5"]
    assert [d["field"] for d in dlq] == ["features", "version", "event", "request_id",
                                         "features[1]"]
    assert '"b2"' in dlq[1]["raw"]
    kept = [e.request_id for _, e in TelemetryReader(r, keys).recent_predictions("s", 10)]
    assert kept == ["ok1", "ok2"]


def test_bad_labels_are_dead_lettered(r, keys, clock) -> None:
    w = TelemetryWriter(r, keys, clock=clock)
    res = w.ingest_labels("s", [{"request_id": "a", "label": 1}, {"request_id": "b"},
                                {"request_id": "c", "label": "yes"}])
    assert (res.accepted, res.rejected) == (1, 2)
    assert TelemetryReader(r, keys).label_map("s", 10) == {"a": 1.0}


def test_labelled_window_joins_filters_and_excludes(r, keys) -> None:
    w = TelemetryWriter(r, keys)
    w.write_predictions("s", [_ev(i, version=1 if i < 50 else 2) for i in range(100)])
    w.write_predictions("s", [_ev(1000 + i, version=3, shadow=True) for i in range(10)])
    w.write_labels("s", [LabelEvent(0.0, f"r{i}", float(i % 3 == 0)) for i in range(0, 100, 2)])
    reader = TelemetryReader(r, keys)
    win = reader.labelled_window("s", 10, feature_names=("a", "b"))
    assert list(win.request_ids) == [f"r{i}" for i in range(80, 100, 2)]
    assert win.X[:, 1].tolist() == [float(i) for i in range(80, 100, 2)]
    assert win.y.tolist() == [float(i % 3 == 0) for i in range(80, 100, 2)]
    assert set(win.versions.tolist()) == {2}
    assert win.bounds["rows"] == 10
    assert stream_id_key(win.first_id) < stream_id_key(win.last_id)

    v1 = reader.labelled_window("s", 1000, version=1)
    assert len(v1) == 25 and set(v1.versions.tolist()) == {1}

    # Quarantine a stretch of the stream: those rows are never returned again.
    ids = [sid for sid, _ in reader.recent_predictions("s", 200)]
    bad = (ids[60], ids[79])
    win2 = reader.labelled_window("s", 1000, exclude=[bad])
    assert len(win2) == 50 - 10
    assert not any(f"r{i}" in win2.request_ids for i in range(60, 80))


@pytest.mark.parametrize("background", [False, True])
def test_buffer_flushes_everything(r, keys, background: bool) -> None:
    w = TelemetryWriter(r, keys)
    buf = TelemetryBuffer(w, max_batch=100, background=background, flush_interval=0.01)
    for i in range(1_050):
        buf.add(keys.telemetry("s" if i % 2 else "t"), _ev(i).encode())
    buf.close()
    assert r.xlen(keys.telemetry("s")) + r.xlen(keys.telemetry("t")) == 1_050
    assert buf.flushed == 1_050 and buf.dropped == 0
