"""Pure model-building maths: which sklearn pipeline to train, how to fit it, how to score it.

No I/O and no clock; everything here is deterministic given ``seed``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from fleet.errors import InvalidInput
from fleet.schema import Task

MIN_ROWS = 50
"""Fewest labelled rows a model is fitted on (the holdout comes on top)."""

MODELS: dict[str, tuple[str, ...]] = {
    "classification": ("hgb", "logreg"),
    "regression": ("hgb", "ridge"),
}
"""Model families per task; the first is the default. ``hgb`` tolerates NaN natively, the linear
ones impute the median first."""

METRIC: dict[str, str] = {"classification": "accuracy", "regression": "mae"}
"""The holdout metric each task is judged by."""


def metric_name(task: Task) -> str:
    """Return the holdout metric of ``task``: ``accuracy`` or ``mae``.

    >>> metric_name("regression")
    'mae'
    """
    return METRIC[task]


def gain(task: Task, candidate: float, champion: float) -> float:
    """How much better ``candidate`` is than ``champion`` in metric units (positive = better).

    Accuracy is better higher, mean absolute error lower.

    >>> round(gain("classification", 0.9, 0.8), 6), round(gain("regression", 1.5, 2.0), 6)
    (0.1, 0.5)
    """
    return candidate - champion if task == "classification" else champion - candidate


def build_pipeline(task: Task, params: Mapping[str, Any] | None = None, seed: int = 0) -> Pipeline:
    """Return an unfitted sklearn pipeline for ``task``.

    Args:
        task: ``classification`` or ``regression``.
        params: ``model`` picks the family (see :data:`MODELS`; default ``hgb``); every other key
            is passed to the estimator, e.g. ``{"model": "hgb", "max_iter": 50}``.
        seed: the estimator's ``random_state`` where it has one.

    Raises:
        InvalidInput: unknown task, model family or estimator parameter.

    >>> build_pipeline("classification", {"model": "logreg", "C": 0.5}).steps[-1][1].C
    0.5
    """
    if task not in MODELS:
        raise InvalidInput(f"unknown task {task!r}; allowed: {sorted(MODELS)}")
    opts = dict(params or {})
    family = opts.pop("model", MODELS[task][0])
    if family not in MODELS[task]:
        raise InvalidInput(
            f"params.model {family!r} is not available for {task}; allowed: {list(MODELS[task])}"
        )
    estimator = _estimator(task, family, seed)
    unknown = sorted(set(opts) - set(estimator.get_params(deep=False)))
    if unknown:
        raise InvalidInput(
            f"params {unknown} are not parameters of {type(estimator).__name__}; "
            f"allowed: {sorted(estimator.get_params(deep=False))}"
        )
    estimator.set_params(**opts)
    if family == "hgb":
        return Pipeline([("model", estimator)])
    return Pipeline([
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("scale", StandardScaler()),
        ("model", estimator),
    ])


def _estimator(task: Task, family: str, seed: int) -> Any:
    if family == "hgb":
        cls = HistGradientBoostingClassifier if task == "classification" else (
            HistGradientBoostingRegressor
        )
        return cls(random_state=seed)
    if family == "logreg":
        return LogisticRegression(max_iter=1000, random_state=seed)
    return Ridge(random_state=seed)


def labelled(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop the rows whose label is missing (NaN or None); keep time order.

    >>> X, y = labelled(np.zeros((3, 1)), np.array([1.0, np.nan, 0.0]))
    >>> X.shape, y.tolist()
    ((2, 1), [1.0, 0.0])
    """
    y = np.asarray(y)
    if y.dtype == object:
        y = np.array([np.nan if v is None else v for v in y], dtype=np.float64)
    if y.dtype.kind == "f":
        keep = ~np.isnan(y)
        X, y = X[keep], y[keep]
    return np.asarray(X, dtype=np.float64), y


def fit(
    X: np.ndarray,
    y: np.ndarray,
    *,
    task: Task,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    what: str = "training rows",
) -> Pipeline:
    """Build and fit a pipeline on the labelled rows of ``X, y`` (rows without a label are dropped).

    Args:
        X: features, NaN for nulls.
        y: labels, NaN where missing.
        task: ``classification`` or ``regression``.
        params: see :func:`build_pipeline`.
        seed: the estimator's ``random_state``.
        what: names the rows in error messages.

    Raises:
        InvalidInput: fewer than :data:`MIN_ROWS` labelled rows, a single class, or bad params.
    """
    X, y = labelled(X, y)
    check_trainable(y, task=task, what=what)
    if task == "classification":
        y = _class_labels(y)
    return build_pipeline(task, params, seed).fit(X, y)


def check_trainable(y: np.ndarray, *, task: Task, what: str) -> None:
    """Raise :class:`InvalidInput` unless ``y`` (labelled only) can train a ``task`` model.

    Args:
        y: labels with the missing ones already dropped.
        task: ``classification`` needs at least two classes.
        what: names the rows in the message, e.g. ``"window for 'elec'"``.
    """
    if len(y) < MIN_ROWS:
        raise InvalidInput(
            f"{what}: {len(y)} labelled rows, training needs at least {MIN_ROWS}. "
            "Wait for more labels or widen the window"
        )
    if task == "classification":
        classes = np.unique(y)
        if classes.size < 2:
            raise InvalidInput(
                f"{what}: all {len(y)} labelled rows have the single class {classes[0].item()!r}; "
                "a classifier needs at least two classes"
            )


def score(model: Any, X: np.ndarray, y: np.ndarray, task: Task) -> dict[str, float]:
    """Score a fitted model on the labelled rows of ``X, y``.

    Returns:
        ``{"accuracy": .., "rows": n}`` for classification, ``{"mae": .., "rows": n}`` for
        regression; the metric is NaN when no row is labelled.
    """
    X, y = labelled(X, y)
    n = len(y)
    if n == 0:
        return {metric_name(task): float("nan"), "rows": 0.0}
    pred = np.asarray(model.predict(X))
    if task == "classification":
        value = float(np.mean(pred == _class_labels(y)))
    else:
        value = float(np.mean(np.abs(pred.astype(np.float64) - y.astype(np.float64))))
    return {metric_name(task): value, "rows": float(n)}


def paired_counts(candidate: Any, champion: Any, X: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    """``(wins, losses)`` of ``candidate`` against ``champion`` on the same labelled rows.

    A win is a row the candidate classifies right and the champion wrong; a loss the reverse.
    Rows both get right (or wrong) say nothing about which is better (McNemar's test).
    """
    X, y = labelled(X, y)
    if len(y) == 0:
        return 0, 0
    truth = _class_labels(y)
    new = np.asarray(candidate.predict(X)) == truth
    old = np.asarray(champion.predict(X)) == truth
    return int(np.sum(new & ~old)), int(np.sum(old & ~new))


def beats_constant(
    model: Any, y_train: np.ndarray, X: np.ndarray, y: np.ndarray, task: Task
) -> tuple[float, bool]:
    """``(metric of the constant, beaten)`` of the constant predictor on the rows ``X, y``.

    The constant is fitted on ``y_train`` (the majority class, or the mean); ``beaten`` says
    whether ``model`` beats it there beyond chance (paired rows, :func:`significant_gain`;
    regression: a sign test on the absolute errors). Every row is labelled (as
    :func:`labelled` returns them).

    A model that cannot beat the constant learnt nothing from its features: e.g. its labels
    were noise. Matching a degraded champion is no reason to ship it then.

    >>> X = np.arange(200, dtype=float).reshape(-1, 1); y = (X[:, 0] >= 100).astype(int)
    >>> m = fit(X, y, task="classification", params={"model": "logreg"})
    >>> beats_constant(m, y, X, y, "classification")
    (0.5, True)
    """
    no_features = np.zeros((len(y_train), 0))  # a constant needs none
    if task == "classification":
        const = DummyClassifier(strategy="most_frequent").fit(no_features, _class_labels(y_train))
        wins, losses = paired_counts(model, const, X, y)
    else:
        const = DummyRegressor(strategy="mean").fit(no_features, y_train)
        mine = np.abs(np.asarray(model.predict(X), dtype=np.float64) - y)
        base = np.abs(np.asarray(const.predict(X), dtype=np.float64) - y)
        wins, losses = int(np.sum(mine < base)), int(np.sum(base < mine))
    return score(const, X, y, task)[metric_name(task)], significant_gain(wins, losses)


def significant_gain(wins: int, losses: int, *, z: float = 1.645) -> bool:
    """Whether ``wins`` beat ``losses`` beyond chance (one-sided McNemar, normal approximation).

    Under "equally good", each discordant row is a fair coin: ``wins - losses`` has standard
    deviation ``sqrt(wins + losses)``. The default ``z`` is a 5 % one-sided test.

    >>> significant_gain(40, 10), significant_gain(14, 10), significant_gain(0, 0)
    (True, False, False)
    """
    return bool(wins > losses and wins - losses >= z * np.sqrt(wins + losses))


def _class_labels(y: np.ndarray) -> np.ndarray:
    """Whole-number float labels (as they come back from JSON) become int64 classes."""
    if y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0):
        return y.astype(np.int64)
    return y


def data_hash(X: np.ndarray, y: np.ndarray) -> str:
    """sha256 of the training data: shape, then ``X`` as C-order float64, then ``y`` as float64.

    Equal data gives the same hash whatever the input dtypes or memory layout.

    >>> data_hash(np.eye(2), np.array([0, 1])) == data_hash(np.eye(2, dtype=np.float32), [0., 1.])
    True
    """
    Xa = np.ascontiguousarray(X, dtype=np.float64)
    ya = np.ascontiguousarray(y, dtype=np.float64)
    h = hashlib.sha256()
    h.update(repr((Xa.shape, ya.shape)).encode())
    h.update(Xa.tobytes())
    h.update(ya.tobytes())
    return h.hexdigest()
