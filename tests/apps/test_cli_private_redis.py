"""Without REDIS_URL, commands that read the fleet say on stderr that they use a private, empty
Redis (before, they silently showed an empty fleet); with it, they say nothing of the sort."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTE = "REDIS_URL is not set, so this uses a private, empty Redis"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from apps.cli import main; main()", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [("status",), ("chat", "-m", "status"), ("run", "--once")])
def test_a_command_without_redis_url_says_it_uses_a_private_empty_redis(args, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "FLYWHEEL_REDIS_URL")}
    env.update(FLYWHEEL_HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    done = _cli(*args, env=env)
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if NOTE in line]
    assert len(notes) == 1 and "set REDIS_URL" in notes[0]


def test_with_redis_url_there_is_no_such_note(redis_url, keys, tmp_path) -> None:
    env = {**os.environ, "REDIS_URL": redis_url, "FLYWHEEL_PREFIX": keys.prefix,
           "FLYWHEEL_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = _cli("status", env=env)
    assert done.returncode == 0, done.stderr
    assert NOTE not in done.stderr
