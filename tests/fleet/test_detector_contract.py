"""One contract for every detector in ``fleet.detectors.DETECTORS`` (river's check_estimator idea).

Each detector runs a seeded synthetic stream of ticks with one fault at a known tick and must:
not mutate its inputs, survive a JSON round-trip of its state mid-stream, repeat itself
exactly on the same seed, detect at exactly the recorded ticks, keep immutable defaults and
return frozen results.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from fleet.detectors import (
    DETECTORS,
    KS,
    PSI,
    Arm,
    Canary,
    DataQuality,
    DetectorConfig,
    ErrorRateCusum,
    QualityCounts,
    Regression,
    WindowStats,
    bin_counts,
    quantile_edges,
)

TICKS = 12
CONFIG = DetectorConfig()


@dataclass(frozen=True)
class Case:
    """A detector, the stream it watches and where it must fire."""

    name: str
    make: Callable[[], Any]
    stream: Callable[[int], list[tuple[Any, ...]]]
    """seed -> the positional arguments of ``update`` for each tick."""
    fired: Callable[[Any], list[tuple[int, ...]]]
    """result -> keys that fired (service, ...)."""
    expected: dict[tuple[int, ...], int]
    """key -> first tick it fired, on seed 0."""


def _drift_stream(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """3 services x 2 features; service 1 feature 0 shifts by 0.6 sd from tick 6."""
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(3, 3000, 2))
    edges = quantile_edges(ref, CONFIG.histogram_n_bins)
    ref_counts = bin_counts(ref, edges)
    ticks = []
    for t in range(TICKS):
        cur = rng.normal(size=(3, 500, 2))
        if t >= 6:
            cur[1, :, 0] += 0.6
        ticks.append((ref_counts, bin_counts(cur, edges)))
    return ticks


def _quality_stream(seed: int) -> list[tuple[QualityCounts]]:
    """3 services x 2 features; service 2 feature 1 gets 10 % nulls from tick 4."""
    rng = np.random.default_rng(seed)
    ticks = []
    for t in range(TICKS):
        X = rng.uniform(0.0, 1.0, size=(3, 500, 2))
        if t >= 4:
            X[2, rng.random(500) < 0.1, 1] = np.nan
        ticks.append((QualityCounts.from_window(X, low=np.zeros(2), high=np.ones(2),
                                                labelled=np.ones((3, 500), dtype=bool)),))
    return ticks


def _error_stream(seed: int) -> list[tuple[np.ndarray]]:
    """3 services, 250 labelled events a tick; service 0's errors go 0.1 -> 0.25 at event 1500."""
    rng = np.random.default_rng(seed)
    x = (rng.random((3, TICKS * 250)) < 0.1).astype(float)
    x[0, 1500:] = rng.random(TICKS * 250 - 1500) < 0.25
    return [(x[:, t * 250 : (t + 1) * 250],) for t in range(TICKS)]


def _requests(rng: np.random.Generator, n: int, slow: float = 1.0) -> WindowStats:
    lat = rng.lognormal(np.log(20.0), 0.3, size=(3, n))
    lat[1] *= slow
    return WindowStats.from_samples(lat, (rng.random((3, n)) < 0.02).astype(float))


def _regression_stream(seed: int) -> list[tuple[WindowStats, WindowStats]]:
    """3 (service, version) groups; group 1 is 50 % slower from tick 5."""
    rng = np.random.default_rng(seed)
    ref = _requests(rng, 2000)
    return [(ref, _requests(rng, 500, 1.5 if t >= 5 else 1.0)) for t in range(TICKS)]


def _canary_stream(seed: int) -> list[tuple[Arm, Arm]]:
    """Arms grow by 60 requests a tick; service 0's challenger errs 0.25 vs 0.1, service 1's is
    equal, service 2's is 40 % slower."""
    rng = np.random.default_rng(seed)
    n = TICKS * 60
    err = (rng.random((2, 3, n)) < 0.1).astype(float)
    err[1, 0] = rng.random(n) < 0.25
    lat = rng.lognormal(np.log(20.0), 0.3, size=(2, 3, n))
    lat[1, 2] *= 1.4
    return [tuple(Arm.from_samples(err[a, :, : (t + 1) * 60], lat[a, :, : (t + 1) * 60])
                  for a in (0, 1)) for t in range(TICKS)]


def _cells(mask: np.ndarray) -> list[tuple[int, ...]]:
    return [tuple(int(i) for i in ix) for ix in zip(*np.nonzero(mask), strict=True)]


CASES = [
    Case("psi", lambda: PSI(**CONFIG.kwargs("psi")), _drift_stream,
         lambda r: _cells(r.drifted), {(1, 0): 6}),
    Case("ks", lambda: KS(**CONFIG.kwargs("ks")), _drift_stream,
         lambda r: _cells(r.drifted), {(1, 0): 6}),
    Case("quality", lambda: DataQuality(**CONFIG.kwargs("quality")), _quality_stream,
         lambda r: _cells(r.nulls), {(2, 1): 4}),
    Case("performance", lambda: ErrorRateCusum(3, **CONFIG.kwargs("performance")), _error_stream,
         lambda r: [(int(s), int(r.alarm_at[s]), int(r.onset[s])) for s in np.flatnonzero(r.alarm)],
         {(0, 1767, 1564): 7}),
    Case("regression", lambda: Regression(**CONFIG.kwargs("regression")), _regression_stream,
         lambda r: _cells(r.latency), {(1, 0): 5, (1, 1): 5, (1, 2): 5}),
    Case("canary", lambda: Canary(**CONFIG.kwargs("canary")), _canary_stream,
         lambda r: [(i, v) for i, v in enumerate(r.verdict.tolist()) if v != "inconclusive"],
         # The default minimum sample is 150: reached at tick 2 (180 requests an arm).
         {(0, "fail"): 2, (1, "pass"): 2, (2, "fail"): 2}),
]
IDS = [c.name for c in CASES]


def run(det: Any, ticks: list[tuple[Any, ...]], case: Case) -> dict[tuple[int, ...], int]:
    first: dict[tuple[int, ...], int] = {}
    for t, args in enumerate(ticks):
        for key in case.fired(det.update(*args).result):
            first.setdefault(key, t)
    return first


def test_every_detector_has_a_case():
    made = {type(case.make()) for case in CASES}
    assert made == set(DETECTORS)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_detects_at_exactly_the_recorded_ticks(case: Case):
    assert run(case.make(), case.stream(0), case) == case.expected


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_same_seed_same_results(case: Case):
    a, b = case.make(), case.make()
    for args_a, args_b in zip(case.stream(3), case.stream(3), strict=True):
        ra, rb = a.update(*args_a).result, b.update(*args_b).result
        assert _plain(ra) == _plain(rb)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_update_does_not_mutate_its_inputs(case: Case):
    det = case.make()
    for args in case.stream(1):
        before = copy.deepcopy(args)
        _freeze(args)  # an in-place write now raises instead of passing silently
        det.update(*args)
        assert _plain(args) == _plain(before)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_survives_a_json_round_trip_mid_stream(case: Case):
    """Save after half the ticks, restore from JSON, and the rest of the stream gives the same
    results as the detector that never stopped."""
    ticks = case.stream(2)
    live = case.make()
    for args in ticks[: TICKS // 2]:
        live.update(*args)
    saved = json.loads(json.dumps(live.to_dict()))
    restored = type(live).from_dict(saved)
    assert restored.to_dict() == live.to_dict()
    for args in ticks[TICKS // 2 :]:
        assert _plain(restored.update(*args).result) == _plain(live.update(*args).result)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_defaults_are_immutable_and_match_the_config(case: Case):
    det = case.make()
    sig = inspect.signature(type(det))
    for name, param in sig.parameters.items():
        default = param.default
        if isinstance(default, np.ndarray):
            assert not default.flags.writeable, name
        else:
            assert isinstance(default, (int, float, bool, str, tuple, type(None))) or \
                default is inspect.Parameter.empty, name
        assert hasattr(det, name), f"hyperparameter {name!r} is not stored under its name"
    prefix = case.name
    for key, value in CONFIG.kwargs(prefix).items():
        assert sig.parameters[key].default == value, f"{prefix}_{key} differs from the default"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_results_are_frozen_and_documented(case: Case):
    det = case.make()
    assert det.result is None
    result = det.update(*case.stream(0)[0]).result
    field = dataclasses.fields(result)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(result, field, None)
    assert inspect.getdoc(type(det)) and inspect.getdoc(type(result))
    assert inspect.getdoc(type(det).update)


def _freeze(obj: Any) -> None:
    if isinstance(obj, np.ndarray):
        obj.setflags(write=False)
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            _freeze(item)
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            _freeze(getattr(obj, f.name))


def _plain(obj: Any) -> Any:
    """Arrays and dataclasses as nested lists, so == compares values (NaN-safe via repr)."""
    if isinstance(obj, np.ndarray):
        return repr(obj.tolist())
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_plain(o) for o in obj]
    return obj
