"""Training on a Dask distributed cluster (``FLYWHEEL_DASK_SCHEDULER``) registers the same
candidate, with the same lineage, as the embedded local process pool. The cluster is a real
``LocalCluster`` on loopback with one worker process, so the job and its result really cross a
process boundary through Dask's serialisation. Regression: issue #15 ("Scale-out training")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import distributed
import numpy as np
import pytest

from apps.settings import Settings
from apps.training import build_trainer, dask_trainer
from fleet.datasets import rotating_hyperplane
from fleet.embedded_redis import free_port
from fleet.errors import InvalidInput
from fleet.keys import Keys
from fleet.registry import ArtifactStore, Registry
from fleet.schema import FeatureSchema, Policy
from fleet.telemetry.window import LabelledWindow
from fleet.trainer import Trainer

STREAM = rotating_hyperplane(1500, drifts=(), width=1, d=3, noise=0.05, seed=11)
SCHEMA = FeatureSchema.numeric(list(STREAM.feature_names))
LINEAGE = ("status", "training_window", "data_hash", "params", "metrics", "parent", "created_by")


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as c:
        yield c


def _registry(r, keys: Keys, clock, root: Path) -> Registry:
    reg = Registry(r, keys, ArtifactStore(root), clock=clock)
    reg.register_service("hp", task="classification", schema=SCHEMA, policy=Policy())
    return reg


def _window(start: int, stop: int) -> LabelledWindow:
    return LabelledWindow.from_arrays("hp", STREAM.X[start:stop], STREAM.y[start:stop],
                                      feature_names=STREAM.feature_names, start=start)


def test_dask_cluster_trains_the_same_candidate_with_the_same_lineage(
    r, keys: Keys, clock, tmp_path: Path, cluster
) -> None:
    # Two fleets under the test's own prefix (cleaned up with it), one per executor.
    local_reg = _registry(r, Keys(f"{keys.prefix}:local"), clock, tmp_path / "local")
    dask_reg = _registry(r, Keys(f"{keys.prefix}:dask"), clock, tmp_path / "dask")
    settings = Settings(dask_scheduler=cluster.scheduler_address)
    with Trainer(local_reg) as local, build_trainer(settings, dask_reg) as remote:
        assert remote.health().backend == "dask"
        for reg, trainer in ((local_reg, local), (dask_reg, remote)):
            first = trainer.train("hp", _window(0, 700), seed=3, created_by="agent:test")
            reg.promote("hp", first.version.number, actor="test", reason="champion")
            trainer.train("hp", _window(700, 1500), seed=3, created_by="agent:test")
        assert remote.health().summary == "ok"
    for number in (1, 2):
        a, b = local_reg.version("hp", number), dask_reg.version("hp", number)
        assert {f: getattr(a, f) for f in LINEAGE} == {f: getattr(b, f) for f in LINEAGE}
        assert b.parent == (None if number == 1 else 1)
        X = STREAM.X[1400:1500]
        assert np.array_equal(local_reg.load_model("hp", number).predict(X),
                              dask_reg.load_model("hp", number).predict(X))


def test_an_unreachable_scheduler_is_one_clear_error(r, keys, clock, tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(InvalidInput, match=rf"^cannot reach the Dask scheduler at '{address}' "
                                           r"\(FLYWHEEL_DASK_SCHEDULER\): "):
        dask_trainer(_registry(r, keys, clock, tmp_path), address, timeout="0.5s")


def test_open_system_sends_training_to_the_scheduler_setting_names(
    redis_url, keys: Keys, tmp_path: Path, cluster
) -> None:
    """What ``flywheel run`` and ``flywheel serve`` build (``open_system``) uses the cluster."""
    from apps.system import open_system

    settings = Settings(redis_url=redis_url, prefix=keys.prefix, home=tmp_path,
                        dask_scheduler=cluster.scheduler_address)
    with open_system(settings) as system:
        assert system.trainer.health().backend == "dask"
        assert system.trainer.health().summary == "ok"
