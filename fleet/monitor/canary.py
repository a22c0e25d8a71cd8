"""Canary analysis in the tick: the arms kept since a canary started, and the stacked verdicts.

Champion and challenger are compared over the same period (from ``challenger_since``) with the
two-sample tests of :class:`~fleet.detectors.Canary`, for every service running a canary at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fleet.detectors import Arm, Canary
from fleet.monitor.batch import LATENCY_SLOTS
from fleet.monitor.stacking import Case, groups, members


@dataclass
class CanaryArms:
    """Champion (arm 0) and challenger (arm 1) traffic since the canary started."""

    champion: int
    challenger: int
    since: float
    n: list[int]
    """Labelled requests per arm."""
    wrong: list[int]
    """Wrong answers among them (failed requests count as wrong)."""
    requests: list[int]
    failed: list[int]
    latency: list[list[int]]
    """Latency histogram per arm on the canary detector's bins."""

    @classmethod
    def start(cls, champion: int, challenger: int, since: float) -> CanaryArms:
        """Empty arms."""
        return cls(champion, challenger, since, [0, 0], [0, 0], [0, 0], [0, 0],
                   [[0] * LATENCY_SLOTS, [0] * LATENCY_SLOTS])


def canary(cases: Sequence[Case]) -> dict[int, dict[str, object]]:
    """Canary analysis of every service running one; per case index, its verdict and numbers."""
    live = np.array([c.agg.canary is not None for c in cases], dtype=bool)
    out: dict[int, dict[str, object]] = {}
    for cfg, idx in groups(cases, "canary", where=live):
        ids = members(idx, len(cases))
        arms = [cases[i].agg.canary for i in ids]
        champ, chall = (Arm(np.array([a.n[k] for a in arms]),  # type: ignore[union-attr]
                            np.array([a.wrong[k] for a in arms]),  # type: ignore[union-attr]
                            np.array([a.latency[k] for a in arms]))  # type: ignore[union-attr]
                        for k in (0, 1))
        r = Canary(**cfg.kwargs("canary")).update(champ, chall).result
        assert r is not None
        for j, i in enumerate(ids):
            out[i] = canary_row(r, j, cfg.canary_min_samples)
    return out


def canary_row(r: object, j: int, min_samples: int) -> dict[str, object]:
    """One service's canary verdict and evidence from a :class:`~fleet.detectors.CanaryResult`."""
    get: Callable[[str], np.ndarray] = lambda k: getattr(r, k)  # noqa: E731
    return {
        "verdict": str(get("verdict")[j]), "n_champion": int(get("n_champion")[j]),
        "n_challenger": int(get("n_challenger")[j]),
        "error_rate_champion": float(get("error_rate_champion")[j]),
        "error_rate_challenger": float(get("error_rate_challenger")[j]),
        "error_diff": float(get("error_diff")[j]),
        "error_diff_upper": float(get("error_diff_upper")[j]),
        "p_value": float(get("error_p_value")[j]),
        "latency_ratio_p50": float(get("latency_ratio")[j][0]),
        "latency_ratio_p95": float(get("latency_ratio")[j][1]),
        "latency_p_value": float(get("latency_p_value")[j]),
        "reasons": list(get("reasons")[j]), "min_samples": min_samples,
    }
