"""The demo runs to its summary on a slice of the Electricity stream and writes its plot."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydantic import SecretStr
from rich.console import Console

from apps.demo import run_demo
from apps.settings import Settings


@pytest.mark.slow
def test_demo_supervises_retrains_promotes_and_plots(redis_url: str, keys, tmp_path: Path):
    """The first 12,000 rows hold the stream's first drifts: the demo must notice them,
    retrain, canary, get the (automatic) approval and promote, then print its summary and
    plot."""
    buf = io.StringIO()
    settings = Settings(redis_url=SecretStr(redis_url), prefix=keys.prefix)
    run_demo(settings, Console(file=buf, width=160), rows=12_000, out=tmp_path, seed=0,
             yes=True)
    out = buf.getvalue()
    assert "flywheel demo — summary" in out
    assert "registry.promote" in out and "approval.approve" in out
    promotions = next(line for line in out.splitlines() if line.startswith("│ promotions"))
    assert int(promotions.split("│")[2]) >= 1, promotions
    # No incident is left escalated at the end: an escalation the on-call person has not
    # acknowledged would hold the service's performance alarm for the rest of the run.
    ended = next(line for line in out.splitlines() if "resolved / escalated" in line)
    assert int(ended.split("│")[2].split("/")[1]) == 0, ended
    png = tmp_path / "demo.png"
    assert png.exists() and png.stat().st_size > 10_000
