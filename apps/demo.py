"""``flywheel demo``: the whole production on one laptop, on the Electricity stream.

Starts a private Redis (unless ``REDIS_URL`` is set), registers an ``elec`` service trained on the
first 2,000 rows, serves it over real HTTP on loopback, replays the rest of the stream through it
with labels, and prints rolling accuracy per 1,000 rows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from apps.runtime import open_fleet
from apps.serving import build_gateway, http_server, single_threaded_models
from apps.settings import Settings
from fleet.clock import SystemClock
from fleet.datasets import DriftStream, load_elec
from fleet.gateway.app import create_gateway_app
from fleet.replay.replayer import BatchReport, Replayer, ReplayStats
from fleet.replay.targets import HttpTarget
from fleet.schema import FeatureSchema, Policy
from fleet.trainer import Trainer

SERVICE = "elec"
TRAIN_ROWS = 2_000


def elec_schema(names: tuple[str, ...]) -> FeatureSchema:
    """Every Electricity feature is normalised to [0, 1] in the source data."""
    return FeatureSchema.numeric(list(names), **{n: (0.0, 1.0) for n in names})


def run_demo(settings: Settings, console: Console, *, rows: int, out: Path, seed: int) -> None:
    """Run the demo end to end and print its summary."""
    single_threaded_models()
    stream = load_elec()
    stop = min(len(stream), TRAIN_ROWS + rows) if rows else len(stream)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="flywheel-demo-") as home, \
            open_fleet(settings, home=Path(home)) as fleet:
        where = "a private redis-server" if fleet.embedded else "REDIS_URL"
        console.print(f"[bold]flywheel demo[/] — state in {where} ({fleet.url})")
        fleet.registry.register_service(
            SERVICE, task="classification", schema=elec_schema(stream.feature_names),
            policy=Policy(), owner="demo", actor="demo",
        )
        with Trainer(fleet.registry) as trainer:
            res = trainer.train_from_dataset(SERVICE, stream, 0, TRAIN_ROWS, seed=seed,
                                             created_by="demo")
        fleet.registry.promote(SERVICE, res.version.number, actor="demo",
                               reason="initial model on the first 2,000 rows")
        console.print(f"trained v{res.version.number} on rows 0–{TRAIN_ROWS:,} "
                      f"(holdout accuracy {res.candidate:.3f}) and promoted it")
        gw = build_gateway(fleet, refresh_interval=0.2)
        try:
            with http_server(create_gateway_app(gw)) as url, \
                    httpx.Client(base_url=url, timeout=30) as client:
                console.print(f"gateway serving at {url}/v1/models/{SERVICE}")
                stats = _replay(console, HttpTarget(client), stream, stop, seed)
        finally:
            gw.buffer.close()
        _summary(console, stats.accuracy, stats.rows, fleet.r.xlen(fleet.keys.telemetry(SERVICE)))


def _replay(console: Console, target: HttpTarget, stream: DriftStream, stop: int,
            seed: int) -> ReplayStats:
    replayer = Replayer(target, clock=SystemClock(), batch_size=100, seed=seed)
    shown = 0
    cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,} rows"),
            TimeRemainingColumn())
    with Progress(*cols, console=console, transient=True) as progress:
        task = progress.add_task("replaying Electricity", total=stop - TRAIN_ROWS)

        def on_batch(rep: BatchReport) -> None:
            nonlocal shown
            progress.update(task, completed=rep.stats.rows)
            for b in range(shown, rep.stats.rows // 1000):
                lo = TRAIN_ROWS + b * 1000
                progress.console.print(
                    f"rows {lo:>6,}–{lo + 1000:>6,}   champion accuracy "
                    f"{rep.stats.accuracy[b]:.3f}"
                )
                shown = b + 1

        return replayer.run(SERVICE, stream, TRAIN_ROWS, stop, on_batch=on_batch)


def _summary(console: Console, acc: tuple[float, ...], rows: int, events: int) -> None:
    t = Table(title="demo summary")
    t.add_column("measure")
    t.add_column("value", justify="right")
    full = [a for a in acc if a == a]
    t.add_row("rows replayed", f"{rows:,}")
    t.add_row("telemetry events in Redis", f"{events:,}")
    t.add_row("mean accuracy per 1,000 rows", f"{sum(full) / max(len(full), 1):.3f}")
    t.add_row("worst 1,000-row block", f"{min(full):.3f}" if full else "-")
    console.print(t)
