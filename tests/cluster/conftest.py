"""Fixtures of the ``cluster`` tests: the shared fixtures, pointed at a real 3-master Redis Cluster.

``redis_url``, ``r`` and ``keys`` are overridden here, so a test module of another directory
imported into this one runs unchanged against the cluster (``redis+cluster://`` URL, a
``ClusterClient``), with its keys deleted from every node afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.keys import Keys
from fleet.store import connect
from tests.e2e.conftest import REPO, record_usage, scripted_llms, trainer_pool, world_factory
from tests.e2e.llm import UsageLog
from tests.redis_cluster import LoopbackCluster

__all__ = ["record_usage", "scripted_llms", "trainer_pool", "world_factory"]


@pytest.fixture(scope="session")
def usage_log() -> Iterator[UsageLog]:
    """LLM usage of the flows re-run here, in a file of its own (the e2e runs keep theirs)."""
    log = UsageLog(REPO / "out" / "llm_usage_cluster.json")
    yield log
    log.write()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this directory ``cluster``."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackCluster]:
    """A 3-master Redis Cluster on loopback for the whole session."""
    cluster = LoopbackCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture()
def redis_url(redis_cluster: LoopbackCluster) -> str:
    """The cluster's ``redis+cluster://`` URL."""
    return redis_cluster.url


@pytest.fixture()
def r(redis_cluster: LoopbackCluster) -> Iterator[object]:
    """A decoding cluster client (what ``fleet.store.connect`` gives for a cluster URL)."""
    client = connect(redis_cluster.url)
    yield client
    client.close()


@pytest.fixture()
def keys(r, worker_id: str) -> Iterator[Keys]:
    """A key prefix unique to this test; its keys are deleted from every node afterwards."""
    prefix = f"test:{worker_id}:{uuid.uuid4().hex[:10]}"
    yield Keys(prefix)
    found = list(r.scan_iter(match=f"{prefix}:*", count=1000))
    for i in range(0, len(found), 500):
        r.delete(*found[i:i + 500])
