"""``flywheel serve`` as its own process on a ``redis+cluster://`` URL: it reports healthy and
lists the service another client registered on the cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from fleet.embedded_redis import free_port
from fleet.keys import Keys
from fleet.registry import ArtifactStore, Registry
from fleet.schema import FeatureSchema

ROOT = Path(__file__).resolve().parents[2]


def test_flywheel_serve_answers_from_the_cluster(r, keys: Keys, redis_url: str, clock,
                                                 tmp_path: Path):
    Registry(r, keys, ArtifactStore(tmp_path), clock=clock).register_service(
        "elec", task="classification", schema=FeatureSchema.numeric(["a", "b"]))
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "FLYWHEEL_PREFIX": keys.prefix,
           "FLYWHEEL_HOME": str(tmp_path), "FLYWHEEL_API_TOKENS": "tok1=alice",
           "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from apps.cli import main; main()", "serve", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                health = httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "flywheel serve did not answer in 60 s"
                time.sleep(0.2)
        assert health.status_code == 200, health.text
        services = httpx.get(f"{base}/v1/services", headers={"Authorization": "Bearer tok1"},
                             timeout=10)
        assert services.status_code == 200, services.text
        assert "elec" in services.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
