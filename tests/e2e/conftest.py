"""A simulated world per test over the session's real Redis, sharing one trainer pool."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from evals.world import World, make_world
from fleet.schema import Policy
from tests.e2e.llm import ScriptedLLMs, UsageLog

REPO = Path(__file__).resolve().parents[2]


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
    """Build worlds on this test's key prefix; they are closed after the test.

    Unless a test passes its own policy, incidents take one round (no stopgap stage): these flows
    (and the scripted LLMs' scripts) follow one retrain per incident. The stopgap flow has its
    own tests in ``test_runbook_flows``.
    """
    made: list[World] = []

    def make(**kw: Any) -> World:
        kw.setdefault("policy", Policy(stopgap_min_rise=None))
        w = make_world(r, redis_url, prefix=keys.prefix, artifacts=tmp_path / "artifacts",
                       executor=trainer_pool, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


@pytest.fixture()
def scripted_llms(monkeypatch: pytest.MonkeyPatch) -> ScriptedLLMs:
    """Scripted models in place of the provider model, per role (see ``tests/e2e/llm.py``)."""
    return ScriptedLLMs(monkeypatch)


@pytest.fixture(scope="session")
def usage_log() -> Iterator[UsageLog]:
    """Per-incident LLM calls and tokens of the scripted runs, saved to ``out/llm_usage.json``."""
    log = UsageLog(REPO / "out" / "llm_usage.json")
    yield log
    log.write()


@pytest.fixture()
def record_usage(request: pytest.FixtureRequest, usage_log: UsageLog,
                 record_property: Callable[[str, Any], None]) -> Callable[..., dict[str, Any]]:
    """``record_usage(world, **extra)``: log every incident's LLM usage for the closing note."""

    def record(world: World, **extra: Any) -> dict[str, Any]:
        usage = world.system.usage
        incidents = [i.id for i in world.system.incidents.recent(50, world.service)]
        entry = usage_log.record(request.node.name,
                                 [usage.snapshot(i) for i in incidents], **extra)
        record_property("llm_usage", entry)
        print(f"LLM usage {request.node.name}: {entry}")
        return entry

    return record
