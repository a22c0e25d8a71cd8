"""Where a drift's new concept starts: the incident graph trains only on rows after it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fleet.monitor.settle import Settling, back_to_baseline, settled_start, stopgap_due
from fleet.schema import Policy


def _errors(rates: np.ndarray, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(len(rates)) < rates).astype(float)


@pytest.mark.parametrize("seed", range(5))
def test_an_abrupt_change_is_settled_within_a_few_blocks_of_its_onset(seed: int) -> None:
    errors = _errors(np.full(1_500, 0.35), seed)
    start = settled_start(errors, need=1_000, min_effect=0.02)
    assert start is not None and start <= 300, start


@pytest.mark.parametrize("seed", range(5))
def test_a_ramp_is_not_settled_until_it_ends_and_then_starts_near_its_end(seed: int) -> None:
    """An incremental drift: the error climbs 0.1 -> 0.5 over rows 0..2000, then stays."""
    rates = np.clip(0.1 + 0.4 * np.arange(4_000) / 2_000, 0.1, 0.5)
    errors = _errors(rates, seed)
    assert settled_start(errors[:1_600], need=1_000, min_effect=0.02) is None
    start = settled_start(errors, need=1_000, min_effect=0.02)
    assert start is not None and 1_000 <= start <= 2_000, start


def test_too_few_rows_are_never_settled() -> None:
    assert settled_start(np.zeros(999), need=1_000, min_effect=0.02) is None


def test_a_rise_below_the_minimum_effect_does_not_hold_training_back() -> None:
    rates = np.r_[np.full(1_000, 0.20), np.full(1_000, 0.21)]
    assert settled_start(_errors(rates, 3), need=1_000, min_effect=0.05) is not None


def _incident(**evidence: float) -> SimpleNamespace:
    """Just the part of an Incident that ``back_to_baseline`` reads (hand-written fixture)."""
    return SimpleNamespace(evidence=evidence)


@pytest.mark.parametrize(("error", "recovered"), [(0.21, True), (0.219, True), (0.23, False)])
def test_an_error_within_the_minimum_effect_of_the_pre_drift_error_counts_as_back_to_baseline(
        error: float, recovered: bool) -> None:
    st = Settling(rows=1_500, since=1.0, rising=False, error=error)
    policy = Policy(thresholds={"performance_min_effect": 0.02})
    assert back_to_baseline(_incident(baseline_error=0.2), st, policy) is recovered


def test_recovery_is_never_claimed_without_settled_rows_or_a_baseline() -> None:
    policy = Policy()
    unsettled = Settling(rows=800, since=None, rising=True)
    settled = Settling(rows=1_500, since=1.0, rising=False, error=0.1)
    assert not back_to_baseline(_incident(baseline_error=0.2), unsettled, policy)
    assert not back_to_baseline(_incident(baseline_error=0.2), None, policy)
    assert not back_to_baseline(_incident(), settled, policy)


@pytest.mark.parametrize(("rows", "due"), [(999, False), (1_000, True)])
def test_a_stopgap_waits_for_all_the_rows_it_trains_on(rows: int, due: bool) -> None:
    """Half the rows used to be enough; an abrupt change caught early then got a stopgap."""
    policy = Policy(min_rows_after_drift=1_000, stopgap_min_rise=0.05)
    st = Settling(rows=rows, since=None, rising=True)
    inc = SimpleNamespace(evidence={"statistic": 0.08})  # hand-written: the part read
    assert stopgap_due(inc, st, policy) is due
    assert stopgap_due(SimpleNamespace(evidence={"statistic": 0.04}), st, policy) is False
