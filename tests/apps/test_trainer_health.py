"""``/healthz`` reports the trainers (this process's and each live loop worker's), and the LLM
settings reach the brains' config. Regression: issue #15 ("the loop still reports healthy" with a
broken trainer; "the 30 s LLM call timeout is fixed in code")."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from apps.api import create_api
from apps.settings import Settings
from apps.system import brain_config, build_system
from fleet.trainer.pool import TrainerHealth
from tests.apps.api_world import World, build_world


@pytest.fixture()
def world(r, keys, clock, artifacts_dir):
    yield from build_world(r, keys, clock, artifacts_dir)


def _client(world: World, own: TrainerHealth | None) -> TestClient:
    return TestClient(create_api(
        registry=world.registry, incidents=world.incidents, approvals=world.approvals,
        writer=world.writer, tokens=None, auth=False,
        trainer=(lambda: own) if own is not None else None))


def _publish(world: World, worker: str, health: TrainerHealth, *, heartbeat: float) -> None:
    """What a loop worker writes each pass (``Loop.report_trainer``) and its heartbeat."""
    world.r.zadd(world.keys.loop_workers, {worker: heartbeat})
    world.r.hset(world.keys.loop_trainers, worker,
                 json.dumps({**health.to_dict(), "at": heartbeat}))


# Hand-made health values: the pool's real breakage is driven in tests/fleet/test_trainer_pool.py
# and tests/drills/test_trainer_drill.py.
BROKEN = TrainerHealth("broken", 2, "local", "BrokenProcessPool: a worker died; replacing it "
                       "failed: OSError: [Errno 12] Cannot allocate memory")


def test_a_broken_trainer_in_this_process_is_503(world: World) -> None:
    resp = _client(world, BROKEN).get("/healthz")
    assert resp.status_code == 503
    body = resp.json()
    assert (body["status"], body["redis"]) == ("degraded", "ok")
    assert body["trainer"] == ("broken: BrokenProcessPool: a worker died; replacing it failed: "
                               "OSError: [Errno 12] Cannot allocate memory")


def test_loop_workers_trainers_are_reported_and_a_broken_one_degrades(world: World) -> None:
    now = time.time()
    _publish(world, "w-ok", TrainerHealth("ok", 1, "local"), heartbeat=now)
    _publish(world, "w-bad", BROKEN, heartbeat=now)
    _publish(world, "w-gone", BROKEN, heartbeat=now - 3600)  # a dead worker no longer counts
    resp = _client(world, TrainerHealth("ok")).get("/healthz")
    assert resp.status_code == 200  # restarting the API would not repair a loop's trainer
    body = resp.json()
    assert (body["status"], body["trainer"]) == ("degraded", "ok")
    assert body["trainers"] == {"w-ok": "rebuilt 1 times", "w-bad": f"broken: {BROKEN.error}"}


def test_llm_settings_reach_the_brain_config_and_the_token_budget(
    monkeypatch, r, keys, redis_url, clock, artifacts_dir
) -> None:
    from apps.runtime import build_fleet

    monkeypatch.setenv("FLYWHEEL_LLM_TIMEOUT_S", "150")
    monkeypatch.setenv("FLYWHEEL_LLM_MAX_RETRIES", "5")
    monkeypatch.setenv("FLYWHEEL_LLM_TOKEN_BUDGET", "12345")
    config = brain_config(Settings())
    assert (config.timeout, config.max_retries, config.token_budget) == (150.0, 5, 12345)
    fleet = build_fleet(r, redis_url, prefix=keys.prefix, artifacts=artifacts_dir, clock=clock)
    system = build_system(fleet, brain=config)
    try:
        assert system.usage.token_budget == 12345
    finally:
        system.close()


def test_llm_settings_are_validated(monkeypatch) -> None:
    monkeypatch.setenv("FLYWHEEL_LLM_TIMEOUT_S", "0")
    with pytest.raises(ValueError, match=r"llm_timeout_s\n  Input should be greater than 0"):
        Settings()
