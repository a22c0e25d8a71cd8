"""The best accuracy ANY schedule of N retrains could reach on a scenario: a hindsight bound.

Fits one model at every ``step`` rows (on the last ``train_window`` rows, the baselines' recipe),
then dynamic programming picks the N retrain points that maximise prequential accuracy, each
retrain deployed at once. No causal policy can beat it; the gap to it says how much of a goal is
about knowing *when* to retrain. Slow (one fit per step): ``python -m evals.retrain_budget elec``.
"""

from __future__ import annotations

import argparse

import numpy as np

from evals import baselines
from evals.cases import load_cases


def correct_matrix(s: baselines.Setup, step: int) -> tuple[list[int], np.ndarray]:
    """Correctness of v1 and of a model trained at each point, over the served rows.

    Returns ``(points, C)``: ``C[0]`` is v1's 0/1 correctness, ``C[i]`` that of a model trained
    at ``points[i-1]`` (zeros before its point).
    """
    X, y = s.X, np.asarray(s.y).astype(np.int64)
    points = list(range(s.start, s.stop, step))
    C = np.zeros((len(points) + 1, s.stop - s.start), dtype=bool)
    first = baselines.first_model(s)
    C[0] = np.asarray(first.predict(X[s.start:s.stop])) == y[s.start:s.stop]
    for i, t in enumerate(points):
        m = s.fit(max(0, t - s.train_window), t)
        C[i + 1, t - s.start:] = np.asarray(m.predict(X[t:s.stop])) == y[t:s.stop]
    return points, C


def best_by_budget(points: list[int], C: np.ndarray, start: int, most: int) -> list[float]:
    """Best accuracy with exactly ``k`` retrains (at the given points), for ``k = 0..most``."""
    n, rows = len(points), C.shape[1]
    cum = np.concatenate([np.zeros((C.shape[0], 1)), np.cumsum(C, axis=1)], axis=1)
    ends = np.array([p - start for p in points] + [rows])  # end of a segment that stops at j
    # seg[i, j]: correct rows of the model trained at points[i] over [points[i], ends[j]).
    seg = np.full((n, n + 1), -np.inf)
    for i in range(n):
        lo = points[i] - start
        seg[i, i + 1:] = cum[i + 1, ends[i + 1:]] - cum[i + 1, lo]
    best = cum[0, ends][None, :].copy()  # 0 retrains: v1 up to each end
    out = [best[0, n] / rows]
    for _ in range(most):
        nxt = np.max(best[-1][:n, None] + seg, axis=0)
        nxt[0] = -np.inf
        best = np.vstack([best, nxt])
        out.append(float(nxt[n] / rows))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("scenario", nargs="?", default="elec")
    ap.add_argument("--step", type=int, default=100, help="rows between candidate points")
    ap.add_argument("--most", type=int, default=24, help="largest retrain budget")
    args = ap.parse_args()
    case = next(c for c in load_cases() if c.name == args.scenario)
    s = baselines.setup(case, case.build_stream())
    points, C = correct_matrix(s, args.step)
    for k, acc in enumerate(best_by_budget(points, C, s.start, args.most)):
        if k % 3 == 0 or k == args.most:
            print(f"{args.scenario}: best with {k:>2} retrains (hindsight) {acc:.4f}")


if __name__ == "__main__":
    main()
