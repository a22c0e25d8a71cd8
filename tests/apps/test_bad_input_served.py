"""Bad input through the real servers: `flywheel serve` and `flywheel serve-gateway` processes.

A batch with ``Infinity`` in one row and a 10 kB id in another goes over loopback HTTP to each
server: the good rows are answered and land in the telemetry stream, the bad ones are listed in
``errors`` and dead-lettered, and nothing answers 5xx.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from apps.runtime import build_fleet
from fleet.embedded_redis import free_port
from fleet.schema import FeatureSchema
from fleet.telemetry import TelemetryReader

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "bi"
TOKEN = "tok-bad-input"


@pytest.fixture()
def home(r, keys, redis_url: str, tmp_path: Path) -> Path:
    """A fleet home whose Redis prefix holds ``bi`` (binary classifier, version 1 champion)."""
    fleet = build_fleet(r, redis_url, prefix=keys.prefix, artifacts=tmp_path / "artifacts")
    fleet.registry.register_service(SERVICE, task="classification",
                                    schema=FeatureSchema.numeric(["a", "b"]))
    model = DummyClassifier(strategy="constant", constant=1).fit(np.zeros((2, 2)), [0, 1])
    fleet.registry.add_version(SERVICE, model, created_by="test")
    fleet.registry.promote(SERVICE, 1, actor="test", reason="first")
    return tmp_path


@pytest.fixture(params=["serve", "serve-gateway"])
def server(request, home: Path, keys, redis_url: str) -> Iterator[str]:
    """The named CLI command serving on a free loopback port; yields its base URL."""
    port = free_port()
    env = dict(os.environ, REDIS_URL=redis_url, FLYWHEEL_PREFIX=keys.prefix,
               FLYWHEEL_HOME=str(home), FLYWHEEL_API_TOKENS=f"{TOKEN}=alice",
               PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", LITELLM_LOCAL_MODEL_COST_MAP="True")
    env.pop("FLYWHEEL_MODEL", None)
    log = home / f"{request.param}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from apps.cli import main; main()", request.param,
             "--port", str(port)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.mark.slow
def test_a_mixed_batch_over_http_serves_the_good_rows_and_dead_letters_the_bad(
        server: str, r, keys) -> None:
    rows = '[{"a": 1, "b": 2}, {"a": Infinity, "b": 2}, {"a": 3, "b": 4}, {"a": 5, "b": 6}]'
    ids = json.dumps(["h1", "h2", "h3", "k" * 10_000])
    res = httpx.post(f"{server}/v1/models/{SERVICE}/predict", timeout=10,
                     content=f'{{"instances": {rows}, "request_ids": {ids}}}',
                     headers={"content-type": "application/json",
                              "authorization": f"Bearer {TOKEN}"})
    assert res.status_code == 200, res.text
    body = res.json()
    assert [p["version"] for p in body["predictions"]] == [1, None, 1, None]
    assert [(e["index"], e["request_id"]) for e in body["errors"]] == [(1, "h2"), (3, None)]
    assert "request_ids[3]: expected 1-128 characters" in body["errors"][1]["reason"]
    dead = [f for _, f in r.xrange(keys.dlq)]
    assert [(d["index"], d["field"]) for d in dead] == [("1", "instances[1].a"),
                                                        ("3", "request_ids[3]")]
    reader = TelemetryReader(r, keys)
    deadline = time.monotonic() + 10  # the server's buffer flushes every 50 ms
    while len(reader.recent_predictions(SERVICE, 10)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(e.request_id for _, e in reader.recent_predictions(SERVICE, 10)) == ["h1", "h3"]
