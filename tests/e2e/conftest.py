"""A simulated world per test over the session's real Redis, sharing one trainer pool."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from evals.world import World, make_world


@pytest.fixture(scope="session")
def trainer_pool() -> Iterator[Any]:
    """One worker process for every test's trainer (spawning one costs about a second)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    yield pool
    pool.shutdown(cancel_futures=True)


@pytest.fixture()
def world_factory(r, keys, redis_url: str, tmp_path: Path,
                  trainer_pool: Any) -> Iterator[Callable[..., World]]:
    """Build worlds on this test's key prefix; they are closed after the test."""
    made: list[World] = []

    def make(**kw: Any) -> World:
        w = make_world(r, redis_url, prefix=keys.prefix, artifacts=tmp_path / "artifacts",
                       executor=trainer_pool, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()
