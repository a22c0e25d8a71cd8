"""Shared fixtures: a real redis-server per test session, a fresh key prefix per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# Before sklearn loads: OpenMP's thread count is per thread unless set in the environment, and
# tiny predict batches on 2 shared cores stall with a thread team (gateway server threads too).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from fleet.clock import ManualClock
from fleet.embedded_redis import EmbeddedRedis, find_redis_server
from fleet.keys import Keys


@pytest.fixture(scope="session", autouse=True)
def _single_threaded_models() -> None:
    """One OpenMP thread per process: tiny predict batches on 2 shared cores otherwise stall."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A real redis-server on a free port with a temp dir; fails loudly if it is not installed."""
    try:
        find_redis_server()
    except Exception as exc:  # the message says how to install it
        pytest.exit(str(exc), returncode=3)
    server = EmbeddedRedis(data_dir=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def redis_url(redis_server: EmbeddedRedis) -> str:
    """URL of the session's Redis."""
    return redis_server.url


@pytest.fixture()
def r(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A decoding client on the session's Redis."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture()
def keys(r: redis.Redis, worker_id: str) -> Iterator[Keys]:
    """A key layout under a prefix unique to this test; its keys are deleted afterwards."""
    prefix = f"test:{worker_id}:{uuid.uuid4().hex[:10]}"
    yield Keys(prefix)
    for batch in _scan_batches(r, f"{prefix}:*"):
        r.delete(*batch)


def _scan_batches(r: redis.Redis, pattern: str, size: int = 500) -> Iterator[list[str]]:
    batch: list[str] = []
    for k in r.scan_iter(match=pattern, count=1000):
        batch.append(k)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


@pytest.fixture()
def worker_id() -> str:
    """xdist worker id when run in parallel, else ``main``."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture()
def clock() -> ManualClock:
    """Simulated time, starting at a fixed instant."""
    return ManualClock(1_700_000_000.0)


@pytest.fixture()
def artifacts_dir(tmp_path: Path) -> Path:
    """A temp directory for model artifacts."""
    d = tmp_path / "artifacts"
    d.mkdir()
    return d


WIRE_FIXTURES = frozenset({"cassette", "silent_server"})
"""Fixtures whose tests may build a real provider model: their traffic is replayed or loopback."""


class RealModelForbiddenError(AssertionError):
    """A test tried to build a provider model without a cassette or the live_llm marker."""


@pytest.fixture(autouse=True)
def _no_real_models(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the model factory raise unless the test is ``live_llm`` or replays a cassette."""
    if request.node.get_closest_marker("live_llm") or WIRE_FIXTURES & set(request.fixturenames):
        return
    from supervisors.brains import litellm_brain

    def forbidden(model: str, config: object) -> object:
        raise RealModelForbiddenError(
            f"test {request.node.nodeid!r} tried to build the provider model {model!r}; tests "
            "never reach a provider. Fixes: 1) script the model with "
            "tests.fakes.chat.ScriptedChatModel; 2) replay HTTP with the `cassette` fixture; "
            "3) mark the test @pytest.mark.live_llm (never run in CI)."
        )

    monkeypatch.setattr(litellm_brain, "build_chat_model", forbidden)
