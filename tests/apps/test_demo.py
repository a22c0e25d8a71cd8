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
    """The first 8,000 rows hold the stream's first drift: the demo must notice it, retrain,
    canary, get the (automatic) approval and promote, then print its summary and plot."""
    buf = io.StringIO()
    settings = Settings(redis_url=SecretStr(redis_url), prefix=keys.prefix)
    # 8,000 rows: v1 is fitted on all 2,000 training rows (refit after the holdout) and its
    # first drift is retrained, canaried and promoted within 8,000 served rows (not within 6,000).
    run_demo(settings, Console(file=buf, width=160), rows=8_000, out=tmp_path, seed=0, yes=True)
    out = buf.getvalue()
    assert "flywheel demo — summary" in out
    assert "registry.promote" in out and "approval.approve" in out
    promotions = next(line for line in out.splitlines() if line.startswith("│ promotions"))
    assert int(promotions.split("│")[2]) >= 1, promotions
    png = tmp_path / "demo.png"
    assert png.exists() and png.stat().st_size > 10_000
