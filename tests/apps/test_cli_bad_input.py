"""A bad REDIS_URL or an unreachable replay --url: one line on stderr saying what to fix, exit 1.

Run through the real CLI entry (``apps.cli.main``, what the ``flywheel`` script calls) in a
subprocess, so what a user sees is what is asserted: no traceback, one line, the fix named.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[2]


def _flywheel(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    return subprocess.run(
        [sys.executable, "-c", "from apps.cli import main; main()", *args], cwd=ROOT, text=True,
        capture_output=True, timeout=120,
        env={**base, "PYTHONPATH": str(ROOT), "FLYWHEEL_HOME": str(home), **env},
    )


def _one_line(res: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.mark.parametrize("url", ["notaurl", "redis://127.0.0.1:notaport/0"])
@pytest.mark.parametrize("command", [["status"], ["services"], ["incidents"]])
def test_a_malformed_redis_url_is_one_line_naming_the_fix(
        command: list[str], url: str, tmp_path: Path) -> None:
    line = _one_line(_flywheel(tmp_path, *command, REDIS_URL=url))
    assert line.startswith(f"error: REDIS_URL '{url}' is not a Redis URL")
    assert "redis://[user:password@]host:port/db" in line


def test_replay_to_an_unreachable_gateway_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    line = _one_line(_flywheel(tmp_path, "replay", "elec", "--dataset", "stationary",
                               "--rows", "10", "--url", url))
    assert line.startswith(f"error: cannot reach the gateway at {url} (ConnectError")
    assert "`flywheel serve-gateway` or `flywheel serve`) or fix --url" in line
