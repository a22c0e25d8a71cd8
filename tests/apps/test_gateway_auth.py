"""`flywheel serve-gateway` as a real process answers predict/feedback only with a bearer token,
and `flywheel replay --url` sends one (``--token`` or ``FLYWHEEL_API_TOKEN``); a crafted artifact
promoted through Redis is refused by the serving process without running."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sklearn.dummy import DummyClassifier

from apps.replay_cmd import load_dataset
from fleet.embedded_redis import free_port
from fleet.keys import Keys
from fleet.registry import ArtifactStore, Registry
from fleet.schema import FeatureSchema
from tests.fleet.test_artifact_trust import _payload_model

REPO = Path(__file__).resolve().parents[2]
TOKEN = "tok-replay-7f3a"
SERVICE = "stat"


def _env(redis_url: str, keys: Keys, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(PYTHONPATH=str(REPO), REDIS_URL=redis_url, FLYWHEEL_PREFIX=keys.prefix,
               FLYWHEEL_HOME=str(home), **extra)
    return env


def _cli(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from apps.cli import main; main()", *args],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def home(tmp_path: Path, r, keys: Keys, clock) -> Path:
    """FLYWHEEL_HOME with one classification service (the stationary stream's features)."""
    stream = load_dataset("stationary", seed=0)
    registry = Registry(r, keys, ArtifactStore(tmp_path / "artifacts"), clock=clock)
    registry.register_service(SERVICE, task="classification",
                              schema=FeatureSchema.numeric(list(stream.feature_names)))
    model = DummyClassifier(strategy="most_frequent").fit(stream.X[:100], stream.y[:100])
    v = registry.add_version(SERVICE, model, created_by="test")
    registry.promote(SERVICE, v.number, actor="test", reason="first")
    return tmp_path


@pytest.fixture()
def gateway(redis_url: str, keys: Keys, home: Path) -> Iterator[str]:
    port = free_port()
    env = _env(redis_url, keys, home, FLYWHEEL_API_TOKENS=f"{TOKEN}=replayer")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from apps.cli import main; main()", "serve-gateway",
         "--port", str(port)], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"serve-gateway exited: {proc.stderr.read() if proc.stderr else ''}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("serve-gateway did not start")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_gateway_needs_the_token_for_predict_and_feedback(gateway: str, r,
                                                                 keys: Keys) -> None:
    row = {f: 0.5 for f in load_dataset("stationary", seed=0).feature_names}
    predict = f"{gateway}/v1/models/{SERVICE}/predict"
    feedback = f"{gateway}/v1/models/{SERVICE}/feedback"
    good = {"Authorization": f"Bearer {TOKEN}"}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
        resp = httpx.post(predict, json={"features": row, "request_id": "r1"}, headers=headers)
        assert resp.status_code == 401, resp.text
        assert resp.headers["www-authenticate"].startswith("Bearer")
        forged = httpx.post(feedback, json={"request_id": "r1", "label": 1}, headers=headers)
        assert forged.status_code == 401, forged.text
        assert httpx.get(f"{gateway}/v1/models/{SERVICE}", headers=headers).status_code == 401
    ok = httpx.post(predict, json={"features": row, "request_id": "r1"}, headers=good)
    assert ok.status_code == 200, ok.text
    assert ok.json()["request_id"] == "r1"
    labelled = httpx.post(feedback, json={"request_id": "r1", "label": 1}, headers=good)
    assert labelled.status_code == 200 and labelled.json()["accepted"] == 1
    deadline = time.monotonic() + 30
    while r.xlen(keys.labels(SERVICE)) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)  # the gateway batches telemetry writes in the background
    assert r.xlen(keys.labels(SERVICE)) == 1  # only the token holder's label is recorded


def test_replay_sends_its_token(gateway: str, redis_url: str, keys: Keys, home: Path) -> None:
    env = _env(redis_url, keys, home)
    base = ("replay", SERVICE, "--dataset", "stationary", "--rows", "200", "--url", gateway)
    refused = _cli(*base, env=env)
    assert refused.returncode == 1, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "401" in lines[0] and "--token" in lines[0], refused.stderr
    flag = _cli(*base, "--token", TOKEN, env=env)
    assert flag.returncode == 0, flag.stderr
    assert "sent 200 rows" in flag.stdout and "0 errors" in flag.stdout, flag.stdout
    from_env = _cli(*base, env={**env, "FLYWHEEL_API_TOKEN": TOKEN})
    assert from_env.returncode == 0, from_env.stderr
    assert "200 labels" in from_env.stdout, from_env.stdout


def test_serve_gateway_with_auth_on_and_no_tokens_says_what_to_set(redis_url: str, keys: Keys,
                                                                   home: Path) -> None:
    done = _cli("serve-gateway", "--port", str(free_port()), env=_env(redis_url, keys, home))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "FLYWHEEL_API_TOKENS" in lines[0], done.stderr


def _served_error(url: str, row: dict[str, float]) -> httpx.Response:
    """Predict until the gateway has reloaded the new champion (it polls every second)."""
    deadline = time.monotonic() + 30
    while True:
        resp = httpx.post(f"{url}/v1/models/{SERVICE}/predict", json={"features": row},
                          headers={"Authorization": f"Bearer {TOKEN}"})
        if resp.status_code != 200 or time.monotonic() > deadline:
            return resp
        time.sleep(0.3)


def test_a_promoted_payload_is_refused_by_the_serving_process(gateway: str, r, keys: Keys,
                                                              clock, home: Path) -> None:
    """The issue's attack: a Redis write (here, a promotion) and one predict."""
    mark = home / "payload-ran"
    code = f"(lambda: __import__('pathlib').Path({str(mark)!r}).touch())()"
    registry = Registry(r, keys, ArtifactStore(home / "artifacts"), clock=clock)
    evil = registry.add_version(SERVICE, _payload_model(functools.partial(eval, code, {})),
                                created_by="attacker")
    registry.promote(SERVICE, evil.number, actor="attacker", reason="redis write")
    row = {f: 0.5 for f in load_dataset("stationary", seed=0).feature_names}
    resp = _served_error(gateway, row)
    assert resp.status_code == 503, resp.text
    assert "builtins.eval" in resp.text and "not on the artifact allowlist" in resp.text
    # The same through an artifact_uri outside FLYWHEEL_HOME with a matching sha256.
    outside = home.parent / f"{home.name}-outside.skops"
    outside.write_bytes(Path(evil.artifact_uri.removeprefix("file://")).read_bytes())
    r.hset(keys.version(SERVICE, evil.number), "artifact_uri", outside.as_uri())
    registry.promote(SERVICE, 1, actor="attacker", reason="flip")
    registry.promote(SERVICE, evil.number, actor="attacker", reason="flip back")
    resp = _served_error(gateway, row)
    assert resp.status_code == 503 and "outside the artifact directory" in resp.text, resp.text
    assert not mark.exists()
