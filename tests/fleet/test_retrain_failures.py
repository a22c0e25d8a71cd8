"""A failed training job is retried within the policy (``max_retrain_failures``), every failure
audited with its error; past the policy the retrain fails with the error text for the person the
incident goes to. Regression: issue #15 ("max_retrain_failures never escalates")."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fleet.actions import ActionContext
from fleet.errors import LimitExceeded, TrainingFailed
from fleet.operations import Operations
from fleet.registry import ArtifactStore, Registry
from fleet.schema import FeatureSchema, Policy
from fleet.telemetry import LabelEvent, PredictionEvent, TelemetryWriter
from fleet.trainer import Trainer
from tests.fakes.jobs import fails_first

CTX = ActionContext(incident="inc-1", actor="agent:continuous_learning", reason="retrain")


@pytest.fixture()
def registry(r, keys, clock, artifacts_dir: Path) -> Registry:
    reg = Registry(r, keys, ArtifactStore(artifacts_dir), clock=clock)
    reg.register_service("elec", task="classification", schema=FeatureSchema.numeric(["a", "b"]),
                         policy=Policy(max_retrain_failures=3))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 2))
    y = (X[:, 0] > 0).astype(float)
    reg.add_version("elec", LogisticRegression().fit(X[:100], y[:100]), created_by="test")
    reg.promote("elec", 1, actor="test", reason="initial")
    w = TelemetryWriter(r, keys, clock=clock)
    now = clock.now()
    w.write_predictions("elec", [PredictionEvent(now + i, f"req-{i}", 1, (float(a), float(b)),
                                                 0.0, 1.0) for i, (a, b) in enumerate(X)])
    w.write_labels("elec", [LabelEvent(now + i, f"req-{i}", float(v)) for i, v in enumerate(y)])
    return reg


@pytest.fixture()
def pool() -> Iterator[ThreadPoolExecutor]:
    # A thread pool keeps it fast; the process pool's breakage is covered in test_trainer_pool.
    with ThreadPoolExecutor(1) as ex:
        yield ex


def _ops(registry: Registry, pool: ThreadPoolExecutor, tmp_path: Path, failures: int):
    job = functools.partial(fails_first, str(tmp_path / "calls"), failures)
    return Operations.build(registry, Trainer(registry, executor=pool, job=job))


def _retrain_audit(ops: Operations) -> list[tuple[str, str]]:
    return [(e.details["outcome"], e.details.get("error", ""))
            for e in ops.audit.read(action_prefix="ops.retrain")]


def test_a_failed_job_is_retried_and_the_retry_registers_the_candidate(registry, pool, tmp_path):
    ops = _ops(registry, pool, tmp_path, failures=2)
    res = ops.retrain("elec", CTX, rows=600)
    assert res.version == 2 and not res.replayed
    assert (tmp_path / "calls").read_text() == "3"
    assert _retrain_audit(ops) == [
        ("failed", "TrainingFailed: training 'elec' raised RuntimeError: injected failure #1: "
                   "fit ran out of memory"),
        ("failed", "TrainingFailed: training 'elec' raised RuntimeError: injected failure #2: "
                   "fit ran out of memory"),
        ("done", ""),
    ]
    assert ops.limits.failures("elec", "retrain") == 0  # a success clears the count


def test_past_the_policy_the_retrain_fails_with_the_error_and_further_ones_are_refused(
    registry, pool, tmp_path
):
    ops = _ops(registry, pool, tmp_path, failures=99)
    with pytest.raises(TrainingFailed) as info:
        ops.retrain("elec", CTX, rows=600)
    assert str(info.value) == (
        "training 'elec' raised RuntimeError: injected failure #3: fit ran out of memory -- "
        "retrain of 'elec' failed 3 time(s) in a row, the most its policy allows "
        "(max_retrain_failures=3): escalate to a person with this error; further retrains are "
        "refused until one succeeds or the count is cleared")
    assert (tmp_path / "calls").read_text() == "3"  # tried exactly as often as the policy allows
    audit = ops.audit.read(action_prefix="ops.retrain")
    assert [e.details["escalate"] for e in audit] == [False, False, True]
    assert registry.versions("elec")[-1].number == 1  # nothing registered
    with pytest.raises(LimitExceeded, match=r"it failed 3 times in a row"):
        ops.retrain("elec", CTX.model_copy(update={"incident": "inc-2"}), rows=600)
