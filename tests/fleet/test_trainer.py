"""Trainer: candidates beat stale champions on drifted data, with lineage, deterministically,
without blocking the caller; hopeless windows fail early with a precise message."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from threadpoolctl import threadpool_limits

from fleet.datasets import rotating_hyperplane
from fleet.errors import InvalidInput
from fleet.registry import ArtifactStore, Registry, VersionStatus
from fleet.schema import FeatureSchema, Policy
from fleet.telemetry.window import LabelledWindow
from fleet.trainer import Trainer, TrainJob, data_hash, fit
from fleet.trainer.job import run

# A hyperplane that jumps to a new random orientation at row 2000: a champion trained before the
# drift is near chance afterwards, so a fresh candidate must beat it by a wide margin.
STREAM = rotating_hyperplane(6000, drifts=(2000,), width=1, d=5, noise=0.05, seed=3)
SCHEMA = FeatureSchema.numeric(list(STREAM.feature_names))


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    """One real spawn-context worker shared by the module (a worker start costs ~2 s)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        yield ex


@pytest.fixture()
def registry(r, keys, clock, artifacts_dir: Path) -> Registry:
    reg = Registry(r, keys, ArtifactStore(artifacts_dir), clock=clock)
    reg.register_service(
        "hp", task="classification", schema=SCHEMA, policy=Policy(min_improvement=0.05)
    )
    return reg


@pytest.fixture()
def trainer(registry: Registry, pool: ProcessPoolExecutor) -> Trainer:
    return Trainer(registry, executor=pool)


def _window(start: int, stop: int) -> LabelledWindow:
    return LabelledWindow.from_arrays(
        "hp", STREAM.X[start:stop], STREAM.y[start:stop],
        feature_names=STREAM.feature_names, start=start,
    )


def test_candidate_on_drifted_window_beats_stale_champion_with_lineage(
    trainer: Trainer, registry: Registry
) -> None:
    first = trainer.train_from_dataset("hp", STREAM, 0, 2000, seed=1, created_by="test:setup")
    assert first.champion is None and first.improvement is None and first.better
    assert first.version.training_window == {
        "from": "hyperplane_incremental:row-0", "to": "hyperplane_incremental:row-1999",
        "rows": 2000, "skipped": 0,
    }
    registry.promote("hp", first.version.number, actor="test", reason="initial model")

    window = _window(3000, 5000)
    res = trainer.train("hp", window, seed=7, created_by="agent:learning")

    assert res.metric == "accuracy"
    assert res.improvement is not None and res.improvement > 0.3
    assert res.candidate > 0.8 and res.champion is not None and res.champion < 0.55
    assert res.better
    assert (res.train_rows, res.holdout_rows) == (1600, 400)
    v = registry.version("hp", res.version.number)
    assert v == res.version
    assert v.status is VersionStatus.CANDIDATE
    assert v.parent == first.version.number
    assert v.created_by == "agent:learning"
    assert v.training_window == {"from": "row-3000", "to": "row-4999", "rows": 2000,
                                 "skipped": 0}
    assert v.data_hash == data_hash(STREAM.X[3000:5000], STREAM.y[3000:5000])
    assert v.params == {"model": "hgb", "seed": 7, "holdout_fraction": 0.2, "refit": True}
    assert v.metrics == {
        "holdout_accuracy": res.candidate,
        "champion_holdout_accuracy": res.champion,
        "improvement": res.improvement,
        "holdout_rows": 400.0,
        "train_rows": 1600.0,
        "fit_rows": 2000.0,
        # The majority class of the training rows, scored on the holdout rows.
        "constant_holdout_accuracy": float(np.mean(
            STREAM.y[4600:5000] == np.bincount(STREAM.y[3000:4600]).argmax())),
    }


def test_a_margin_on_a_few_holdout_rows_is_not_called_better() -> None:
    """McNemar on the paired holdout rows: a 2-point lead over 100 rows is chance, not skill."""
    from fleet.trainer.pipeline import paired_counts, significant_gain

    X = STREAM.X[:600]
    y = STREAM.y[:600]
    a = fit(X[:300], y[:300], task="classification", seed=1)
    b = fit(X[300:], y[300:], task="classification", seed=2)
    wins, losses = paired_counts(a, b, X, y)
    right_a = int((a.predict(X) == y).sum())
    right_b = int((b.predict(X) == y).sum())
    assert wins - losses == right_a - right_b  # rows both get right or wrong cancel out
    assert not significant_gain(12, 10) and not significant_gain(10, 12)
    assert significant_gain(60, 30) and not significant_gain(40, 30)


def test_same_seed_same_model_and_metrics(trainer: Trainer, registry: Registry) -> None:
    """Early stopping draws a random validation split, so the seed actually matters here."""
    params = {"early_stopping": True}
    a = trainer.train("hp", _window(0, 1500), params=params, seed=5)
    b = trainer.train("hp", _window(0, 1500), params=params, seed=5)
    c = trainer.train("hp", _window(0, 1500), params=params, seed=6)
    with threadpool_limits(1):  # OpenMP on a shared, busy machine is slow, not wrong
        pa, pb, pc = (
            registry.load_model("hp", x.version.number).predict_proba(STREAM.X[4000:])
            for x in (a, b, c)
        )
    np.testing.assert_array_equal(pa, pb)
    assert a.version.metrics == b.version.metrics
    assert a.version.data_hash == b.version.data_hash == c.version.data_hash
    assert not np.array_equal(pa, pc)


def _wait_for(path: str) -> None:
    """Runs in the worker: occupy it until the test creates ``path``."""
    while not Path(path).exists():
        time.sleep(0.01)


def test_submit_returns_a_pending_future_and_registers_only_when_done(
    trainer: Trainer, registry: Registry, pool: ProcessPoolExecutor, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    blocker = pool.submit(_wait_for, str(gate))  # the only worker is busy until the gate opens
    fut = trainer.submit("hp", _window(0, 1000), seed=0)
    assert not fut.done()
    assert registry.versions("hp") == []
    gate.touch()
    blocker.result(timeout=10)
    res = fut.result(timeout=30)
    assert [v.number for v in registry.versions("hp")] == [res.version.number]


def test_trainer_with_its_own_pool_trains_and_shuts_down(registry: Registry) -> None:
    with Trainer(registry) as own:
        res = own.train_from_dataset("hp", STREAM, 0, 500, params={"model": "logreg", "C": 0.5})
    assert res.version.params == {
        "model": "logreg", "C": 0.5, "seed": 0, "holdout_fraction": 0.2, "refit": True}
    assert res.candidate > 0.8
    with pytest.raises(RuntimeError, match="after shutdown"):
        own.submit("hp", _window(0, 500))


def test_a_retrain_without_params_keeps_the_champions_recipe(
    trainer: Trainer, registry: Registry
) -> None:
    """Retraining changes the data, not the model: the champion's family and estimator
    parameters carry over; the run's own seed and holdout settings do not."""
    first = trainer.train_from_dataset("hp", STREAM, 0, 2000, params={"model": "logreg",
                                                                       "C": 0.5}, seed=1)
    registry.promote("hp", first.version.number, actor="test", reason="initial model")
    again = trainer.train("hp", _window(3000, 5000), seed=7)
    assert again.version.params == {
        "model": "logreg", "C": 0.5, "seed": 7, "holdout_fraction": 0.2, "refit": True}
    model = registry.load_model("hp", again.version.number)
    assert type(model.steps[-1][1]).__name__ == "LogisticRegression"
    assert model.steps[-1][1].C == 0.5
    chosen = trainer.train("hp", _window(3000, 5000), params={"model": "hgb"}, seed=7)
    assert chosen.version.params["model"] == "hgb" and "C" not in chosen.version.params


def test_too_few_rows_fail_in_the_caller_with_the_counts(trainer: Trainer) -> None:
    y = STREAM.y[:100].astype(np.float64)
    y[:40] = np.nan  # unlabelled rows do not count
    w = LabelledWindow.from_arrays("hp", STREAM.X[:100], y, feature_names=STREAM.feature_names)
    with pytest.raises(
        InvalidInput,
        match=r"^window for 'hp' has 60 labelled rows; holding out the most recent 12 "
        r"\(holdout_fraction=0.2\) leaves 48 to train on, and training needs at least 50\.",
    ):
        trainer.submit("hp", w)


def test_single_class_and_wrong_columns_are_refused(trainer: Trainer) -> None:
    ones = np.ones(200, dtype=np.int64)
    w = LabelledWindow.from_arrays("hp", STREAM.X[:200], ones, feature_names=STREAM.feature_names)
    with pytest.raises(
        InvalidInput,
        match=r"training rows of the window for 'hp': all 160 labelled rows have the single "
        r"class 1; a classifier needs at least two classes",
    ):
        trainer.submit("hp", w)
    narrow = LabelledWindow.from_arrays("hp", STREAM.X[:200, :3], STREAM.y[:200])
    with pytest.raises(InvalidInput, match=r"shape \(200, 3\); the service's schema has 5"):
        trainer.submit("hp", narrow)


def test_holdout_is_the_most_recent_rows_not_a_shuffle() -> None:
    """The champion knows only the concept of the last 100 rows; it must win on the holdout."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 2))
    y = np.where(np.arange(500) < 400, X[:, 0] > 0, X[:, 1] > 0).astype(np.int64)
    champion = fit(X[400:], y[400:], task="classification", params={"model": "logreg"})
    out = run(TrainJob(
        service="s", task="classification", X=X, y=y, feature_names=("a", "b"),
        params={"model": "logreg"}, seed=0, holdout_fraction=0.2, champion=sio.dumps(champion),
    ))
    assert (out.train_rows, out.holdout_rows) == (400, 100)
    assert out.champion is not None and out.champion > 0.95
    assert out.candidate < 0.75


def test_refit_ships_a_model_of_the_whole_window_judged_by_the_validation_fit() -> None:
    """The holdout verdict is the same with or without refit; only the shipped model differs."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 2))
    y = np.where(np.arange(500) < 400, X[:, 0] > 0, X[:, 1] > 0).astype(np.int64)
    champion = fit(X[:400], y[:400], task="classification", params={"model": "logreg"})
    jobs = {refit: TrainJob(
        service="s", task="classification", X=X, y=y, feature_names=("a", "b"),
        params={"model": "logreg"}, seed=0, holdout_fraction=0.2, champion=sio.dumps(champion),
        refit=refit) for refit in (False, True)}
    plain, refitted = run(jobs[False]), run(jobs[True])
    assert (plain.candidate, plain.wins, plain.losses) == (
        refitted.candidate, refitted.wins, refitted.losses)
    assert (plain.train_rows, plain.fit_rows) == (400, 400)
    assert (refitted.train_rows, refitted.fit_rows) == (400, 500)
    whole = fit(X, y, task="classification", params={"model": "logreg"})
    probe = rng.normal(size=(200, 2))
    assert np.array_equal(refitted.model.predict_proba(probe), whole.predict_proba(probe))
    assert not np.array_equal(plain.model.predict_proba(probe), whole.predict_proba(probe))


def _two_concepts(n: int, change: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows before ``change`` follow ``x0 > 0``, the rest ``x1 > 0`` (hand-written fixture)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 2))
    y = np.where(np.arange(n) < change, X[:, 0] > 0, X[:, 1] > 0).astype(np.int64)
    return X, y


def test_window_search_leaves_out_the_old_concept_the_holdout_rejects() -> None:
    """The concept changed 600 rows into a 1,500-row window. Training on the whole window
    averages the two rules; the newest third of the training rows (800-1,200) holds only the
    new one, scores best on the holdout and is the window the shipped model is refitted on."""
    X, y = _two_concepts(1500, 600)
    jobs = {k: TrainJob(service="s", task="classification", X=X, y=y, feature_names=("a", "b"),
                        params={"model": "logreg"}, windows=k, refit=True) for k in (1, 3)}
    whole, searched = run(jobs[1]), run(jobs[3])
    assert whole.skipped == 0 and whole.train_rows == 1200 and whole.candidate < 0.9
    assert searched.skipped == 800
    assert (searched.train_rows, searched.holdout_rows, searched.fit_rows) == (400, 300, 700)
    assert searched.candidate > 0.95 and searched.candidate > whole.candidate + 0.05
    assert searched.data_hash == data_hash(X[800:], y[800:])


def test_window_search_keeps_the_whole_window_when_no_shorter_one_scores_better() -> None:
    """One concept with a clear margin: every window scores the same, and a tie keeps the
    whole window (more rows, same rule)."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 2))
    X = X[np.abs(X[:, 0]) > 0.3][:1500]
    y = (X[:, 0] > 0).astype(np.int64)
    out = run(TrainJob(service="s", task="classification", X=X, y=y, feature_names=("a", "b"),
                       params={"model": "logreg"}, windows=3))
    assert out.candidate == 1.0
    assert (out.skipped, out.train_rows) == (0, 1200)


def test_a_candidate_that_learnt_noise_does_not_beat_the_constant_predictor() -> None:
    """Coin-flip labels: the candidate ties the majority class on the holdout, so it learnt
    nothing; the same features with the true rule beat it by far."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(1500, 2))
    outs = {name: run(TrainJob(service="s", task="classification", X=X, y=y,
                               feature_names=("a", "b"), params={"model": "logreg"}))
            for name, y in (("noise", rng.integers(0, 2, 1500)),
                            ("rule", (X[:, 0] > 0).astype(np.int64)))}
    assert not outs["noise"].learnt and abs(outs["noise"].candidate - outs["noise"].constant) < 0.06
    assert outs["rule"].learnt and outs["rule"].candidate > outs["rule"].constant + 0.3


def test_regression_scores_mae_and_tolerates_nulls() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3))
    y = 2.0 * X[:, 0] - X[:, 2]
    X[rng.random(X.shape) < 0.05] = np.nan
    for model in ("hgb", "ridge"):
        out = run(TrainJob(
            service="s", task="regression", X=X, y=y, feature_names=("a", "b", "c"),
            params={"model": model}, seed=0,
        ))
        assert out.metric == "mae" and 0.0 <= out.candidate < 1.0 and out.champion is None
        assert out.learnt and out.constant > out.candidate  # the mean errs more than the fit


def test_unknown_model_family_names_the_allowed_ones() -> None:
    with pytest.raises(InvalidInput, match=r"params.model 'ridge' is not available for "
                       r"classification; allowed: \['hgb', 'logreg'\]"):
        fit(np.zeros((60, 1)), np.arange(60) % 2, task="classification", params={"model": "ridge"})
