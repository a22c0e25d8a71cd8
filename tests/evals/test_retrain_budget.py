"""The hindsight retrain bound picks the schedule a brute-force search picks."""

from __future__ import annotations

import itertools

import numpy as np

from evals.retrain_budget import best_by_budget


def _brute(points: list[int], C: np.ndarray, start: int, k: int) -> float:
    best = 0.0
    for chosen in itertools.combinations(range(len(points)), k):
        served = C[0].copy()
        for i in chosen:  # a later retrain replaces the earlier model from its point on
            served[points[i] - start:] = C[i + 1, points[i] - start:]
        best = max(best, float(served.mean()))
    return best if k else float(C[0].mean())


def test_dynamic_programme_matches_brute_force_on_random_models() -> None:
    rng = np.random.default_rng(4)
    start, rows = 100, 60
    points = [100, 110, 120, 130, 140, 150]
    C = rng.random((len(points) + 1, rows)) < rng.uniform(0.3, 0.9, size=(len(points) + 1, 1))
    for i, p in enumerate(points):
        C[i + 1, : p - start] = False  # a model does not exist before its point
    got = best_by_budget(points, C, start, most=4)
    for k in range(5):
        assert abs(got[k] - _brute(points, C, start, k)) < 1e-12, k
