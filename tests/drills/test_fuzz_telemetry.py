"""10,000 fuzzed telemetry events: no crash, every bad one dead-lettered, every good one stored.

Telemetry from outside the gateway is untrusted (DESIGN §7). Hypothesis builds batches that mix
valid events with events broken in exactly one way (wrong types, missing fields, NaN/inf, huge
integers, times outside the window, latencies beyond an hour, nested junk, unicode and very long
request ids), each tagged with what it should be, and the
batches go through ``TelemetryWriter.ingest_predictions`` / ``ingest_labels`` as the HTTP API
sends them. The oracle is the tag, not the validator: each valid event must appear in its stream,
in order, and each invalid one in the dead-letter stream, with a reason naming its index. Then the
monitor and the read facade the agents use must digest whatever was accepted.

Deterministic: ``derandomize=True`` and no example database, so every run sees the same events.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.runtime import build_fleet
from apps.system import build_system
from fleet.telemetry.events import MAX_RID, MAX_VERSION, LabelEvent, PredictionEvent
from fleet.telemetry.limits import MAX_LATENCY_MS, REQUEST_ID_PATTERN, TS_MIN
from tests.drills.harness import Case, seed_case, tiny_model

BATCHES = 200
BATCH = 50
"""200 hypothesis examples of exactly 50 events: 10,000 events."""
N_FEATURES = 2
SERVICE = "fz"


@dataclass(frozen=True)
class Event:
    """One fuzzed item: what to send, whether it is valid, and what is wrong with it if not."""

    kind: str
    """``prediction`` or ``label``."""
    raw: Any
    valid: bool
    defect: str = ""


NAN, INF = math.nan, math.inf
HUGE = 10**400
"""An integer JSON can carry but no float can hold."""

scalar_junk = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
junk = st.recursive(
    scalar_junk,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                  max_size=3),
    max_leaves=4,
)
not_object = scalar_junk | st.lists(junk, max_size=3)
"""Anything JSON can carry except an object."""
long_text = st.integers(MAX_RID + 1, 50_000).map(lambda n: "é" * n)
"""Very long strings, cheap for hypothesis to draw (one integer)."""
finite = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53)
big_but_finite = st.integers(2**64, int(1e300))
"""Integers beyond int64 that still fit a float: valid times, labels and feature values."""
number = finite | big_but_finite
rid = st.from_regex(REQUEST_ID_PATTERN, fullmatch=True) | st.integers(1, MAX_RID).map(
    lambda n: "k" * n)
bad_rid = st.just("") | long_text | st.sampled_from(
    ["open:x y", "é", "-lead", "a\nb", "trailing\n", "k" * (MAX_RID + 1)])
ts = st.floats(TS_MIN, 1.7e9) | st.integers(int(TS_MIN), 1_700_000_000)
"""Event times inside the window: after 2000-01-01, not past the clock (plus a day)."""
bad_ts = st.sampled_from([-1e300, 1e18, 0.0, TS_MIN - 1, 4e9])
feature = number | st.none()
"""Features are nullable: null is stored as null; NaN and the infinities are rejected."""
not_a_number = st.sampled_from([NAN, INF, -INF, True, "1.0", HUGE, -HUGE]) | st.lists(
    st.integers(), max_size=2) | st.dictionaries(st.text(max_size=3), junk, max_size=2)

valid_prediction = st.fixed_dictionaries(
    {"ts": ts, "request_id": rid, "version": st.integers(0, MAX_VERSION),
     "features": st.lists(feature, min_size=N_FEATURES, max_size=N_FEATURES)},
    optional={"prediction": feature,
              "latency_ms": st.floats(0, MAX_LATENCY_MS) | st.integers(0, 10**6),
              "error": st.none() | st.text(max_size=20) | long_text, "shadow": st.booleans(),
              "extra": junk},
)
valid_label = st.fixed_dictionaries({"request_id": rid, "label": number},
                                    optional={"note": junk | long_text})


def _break_prediction(draw: st.DrawFn, ev: dict[str, Any]) -> tuple[Any, str]:
    """Break a valid prediction event in exactly one way; return it and the defect."""
    defect = draw(st.sampled_from([
        "not_object", "missing", "ts", "version", "features_len", "features_type",
        "feature_value", "request_id", "latency", "error", "prediction", "shadow"]))
    bad = dict(ev)
    if defect == "not_object":
        return draw(not_object), defect
    if defect == "missing":
        del bad[draw(st.sampled_from(["ts", "request_id", "version", "features"]))]
    elif defect == "ts":
        bad["ts"] = draw(not_a_number | st.none() | bad_ts)
    elif defect == "version":
        bad["version"] = draw(st.integers(max_value=-1) | st.integers(min_value=MAX_VERSION + 1)
                              | st.sampled_from([True, 1.0, "2", None, [1]]))
    elif defect == "features_len":
        n = draw(st.sampled_from([0, 1, 3, 7]))
        bad["features"] = draw(st.lists(feature, min_size=n, max_size=n))
    elif defect == "features_type":
        bad["features"] = draw(st.sampled_from([None, "1,2", 3]) | st.dictionaries(
            st.text(max_size=3), junk, max_size=2))
    elif defect == "feature_value":
        i = draw(st.integers(0, N_FEATURES - 1))
        bad["features"] = list(bad["features"])
        bad["features"][i] = draw(st.sampled_from([True, "0.5", HUGE, NAN, INF, -INF]) | st.lists(
            st.integers(), min_size=1, max_size=2))
    elif defect == "request_id":
        bad["request_id"] = draw(bad_rid | st.integers() | st.none()
                                 | st.lists(st.text(max_size=3), max_size=2))
    elif defect == "latency":
        bad["latency_ms"] = draw(st.floats(max_value=-1e-9, allow_nan=False)
                                 | st.sampled_from([NAN, INF, "fast", None, HUGE, 1e300,
                                                   MAX_LATENCY_MS * 2]))
    elif defect == "error":
        bad["error"] = draw(st.integers() | st.lists(st.text(max_size=3), min_size=1,
                                                     max_size=2) | st.booleans())
    elif defect == "prediction":
        bad["prediction"] = draw(st.sampled_from([True, "yes", HUGE, [1], {"p": 1}, NAN, INF]))
    else:
        bad["shadow"] = draw(st.sampled_from(["false", 0, 1, None, [True]]))
    return bad, defect


def _break_label(draw: st.DrawFn, ev: dict[str, Any]) -> tuple[Any, str]:
    defect = draw(st.sampled_from(["not_object", "missing", "label", "request_id"]))
    bad = dict(ev)
    if defect == "not_object":
        return draw(not_object), defect
    if defect == "missing":
        del bad[draw(st.sampled_from(["request_id", "label"]))]
    elif defect == "label":
        bad["label"] = draw(not_a_number | st.none())
    else:
        bad["request_id"] = draw(bad_rid | st.integers() | st.none())
    return bad, defect


@st.composite
def events(draw: st.DrawFn) -> Event:
    """One event, valid or broken in one way, prediction or label."""
    kind = draw(st.sampled_from(["prediction", "label"]))
    ev = draw(valid_prediction if kind == "prediction" else valid_label)
    if draw(st.booleans()):
        return Event(kind, ev, True)
    bad, defect = (_break_prediction if kind == "prediction" else _break_label)(draw, ev)
    return Event(kind, bad, False, defect)


@pytest.mark.slow
def test_ten_thousand_fuzzed_events_are_stored_or_dead_lettered_exactly_and_crash_nothing(
        r, keys, redis_url: str, tmp_path: Path):
    """A validator that lets one bad event through can poison every later monitor tick; one that
    rejects a good event loses data. The counts must add up to the event."""
    fleet = build_fleet(r, redis_url, prefix=keys.prefix, artifacts=tmp_path / "artifacts")
    system = build_system(fleet)
    seed_case(fleet, Case(SERVICE, "watch_drift"), tiny_model())
    writer, tel, lab, dlq = fleet.writer, keys.telemetry(SERVICE), keys.labels(SERVICE), keys.dlq
    seen: Counter[str] = Counter()

    @settings(max_examples=BATCHES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(events(), min_size=BATCH, max_size=BATCH))
    def ingest(batch: list[Event]) -> None:
        for kind in ("prediction", "label"):
            mine = [e for e in batch if e.kind == kind]
            last = {k: (r.xrevrange(k, count=1) or [("0-0", {})])[0][0] for k in (tel, lab, dlq)}
            if kind == "prediction":
                res = writer.ingest_predictions(SERVICE, [e.raw for e in mine], N_FEATURES)
            else:
                res = writer.ingest_labels(SERVICE, [e.raw for e in mine])
            good = [i for i, e in enumerate(mine) if e.valid]
            bad = [i for i, e in enumerate(mine) if not e.valid]
            assert (res.accepted, res.rejected) == (len(good), len(bad)), _disagreement(mine)
            stream = tel if kind == "prediction" else lab
            stored = r.xrange(stream, min=f"({last[stream]}")
            decode = PredictionEvent.decode if kind == "prediction" else LabelEvent.decode
            assert [decode(f["d"]).request_id for _, f in stored] == [
                mine[i].raw["request_id"] for i in good]
            dead = r.xrange(dlq, min=f"({last[dlq]}")
            assert [f["reason"].split("]")[0] for _, f in dead] == [f"[{i}" for i in bad]
            for (_, f), i in zip(dead, bad, strict=True):
                assert f["kind"] == kind and f["service"] == SERVICE and len(f["reason"]) > 4
                assert f["raw"], f"dead letter [{i}] kept nothing of the event"
            seen.update({f"{kind}:valid": len(good), f"{kind}:invalid": len(bad)})
            seen.update(f"defect:{e.defect}" for e in mine if not e.valid)

    ingest()

    total = sum(v for k, v in seen.items() if not k.startswith("defect:"))
    invalid = seen["prediction:invalid"] + seen["label:invalid"]
    print(f"\nfuzz drill: {total} events, {invalid} dead-lettered; {dict(sorted(seen.items()))}")
    assert total == BATCHES * BATCH
    assert r.xlen(tel) == seen["prediction:valid"] and r.xlen(lab) == seen["label:valid"]
    assert r.xlen(dlq) == invalid
    assert min(seen["prediction:valid"], seen["label:valid"], seen["prediction:invalid"],
               seen["label:invalid"]) > 1_000, seen

    # Whatever was accepted must not break the monitor or the tools' read facade.
    tick = system.monitor.tick()
    assert tick.events == seen["prediction:valid"], tick
    for read in (system.monitor_service.health, system.monitor_service.drift_report,
                 system.monitor_service.validate_window, system.monitor_service.metric_window,
                 system.monitor_service.canary_analysis):
        json.dumps(read(SERVICE), allow_nan=True, default=str)


def _disagreement(batch: list[Event]) -> list[tuple[bool, str, Any]]:
    """For the failure message: the events whose fate differed from their tag."""
    from fleet.errors import InvalidInput
    from fleet.telemetry.events import validate_label, validate_prediction
    from fleet.telemetry.limits import Limits

    out = []
    for e in batch:
        try:
            if e.kind == "prediction":
                validate_prediction(e.raw, N_FEATURES, Limits(now=1.7e9))
            else:
                validate_label(e.raw, Limits(now=1.7e9))
            ok = True
        except (InvalidInput, ValueError, TypeError):
            ok = False
        if ok != e.valid:
            out.append((e.valid, e.defect, repr(e.raw)[:200]))
    return out
