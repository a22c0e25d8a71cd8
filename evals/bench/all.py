"""``flywheel bench``: every benchmark in one run, printed and written as markdown + JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from evals.bench import gateway, llm, monitor, soak, telemetry
from evals.bench.table import markdown, show

BENCHES: dict[str, tuple[str, Callable[[], list[dict[str, Any]]]]] = {
    "telemetry": ("Telemetry ingest into Redis (one client core; vs one XADD per event)",
                  telemetry.run),
    "gateway": ("Gateway over loopback HTTP vs calling the model in process", gateway.run),
    "monitor": ("Monitor tick detector work vs a per-service scipy.stats.ks_2samp loop",
                monitor.run),
    "llm": ("LLM calls: per incident and per 1,000 quiet ticks vs an agent polled every tick",
            llm.run),
    "soak": ("Soak, 200 incidents: Redis memory and keys, retention short (checkpoints 1 h, "
             "records and audit 6 h) vs none",
             soak.run),
}


def run_all(names: list[str] | None, out: Path, console: Console) -> dict[str, Any]:
    """Run the named benchmarks (all by default), print tables, write ``out/bench.{md,json}``."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    md = ["# flywheel benchmarks", ""]
    for name in names or list(BENCHES):
        title, fn = BENCHES[name]
        rows = fn()
        results[name] = rows
        show(title, rows, console)
        md += [f"## {title}", "", markdown(rows), ""]
    (out / "bench.md").write_text("\n".join(md))
    (out / "bench.json").write_text(json.dumps(results, indent=2, default=str))
    return results
