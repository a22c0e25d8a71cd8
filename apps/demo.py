"""``flywheel demo``: the whole system on one laptop, supervising itself on the Electricity stream.

A private Redis (unless ``REDIS_URL`` is set), an ``elec`` service trained on the first 2,000
rows, the gateway on real HTTP (loopback), the replayer, the monitor and the incident loop with
the runbook brain (or the LLM named by ``FLYWHEEL_MODEL``), in simulated time. The terminal shows
rolling accuracy next to the static model, incidents, agent actions and approval prompts (answered
here, or automatically with ``--yes``); it ends with a summary table and a plot.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.prompt import Confirm, Prompt
from rich.table import Table

from apps.demo_plot import Markers, plot
from apps.serving import http_server, single_threaded_models
from apps.settings import Settings
from apps.system import brain_config
from evals.world import Human, World, make_world
from fleet.approvals import ApprovalRequest
from fleet.audit import Audit
from fleet.datasets import DriftStream, load_elec
from fleet.embedded_redis import EmbeddedRedis
from fleet.gateway.app import create_gateway_app
from fleet.replay.replayer import BatchReport
from fleet.replay.targets import HttpTarget
from fleet.schema import Policy
from fleet.store import connect

SERVICE = "elec"
TRAIN_ROWS = 2_000
ROWS_PER_S = 1.0
"""Simulated requests a second: the policy's cooldowns and approval expiry span hundreds of rows,
a small part of a concept's life, as in production (and as in the eval scenarios)."""
BLOCK = 1_000
"""Rows per accuracy line in the terminal."""
ACK_AFTER_S = 1_800.0
"""Simulated seconds after which the on-call person acknowledges an escalated incident."""
SHOWN = ("incident.open", "incident.transition", "registry.add_version", "registry.start_canary",
         "registry.start_shadow", "registry.promote", "registry.rollback",
         "registry.clear_challenger", "approval.request", "approval.approve", "approval.reject",
         "approval.expire", "ops.quarantine")


@dataclass
class _Tally:
    served: list[tuple[int, float, float]] = field(default_factory=list)
    """``(row, prediction, label)`` of every answered row."""
    audit_cursor: str = "0-0"
    markers: Markers = field(default_factory=Markers)


def run_demo(settings: Settings, console: Console, *, rows: int, out: Path, seed: int,
             yes: bool) -> None:
    """Run the demo end to end and print its summary."""
    single_threaded_models()
    interactive = not yes and sys.stdin.isatty()
    if not yes and not interactive:
        console.print("[yellow]stdin is not a terminal: approving automatically (as --yes)[/]")
    out.mkdir(parents=True, exist_ok=True)
    stream = load_elec()
    stop = min(len(stream), TRAIN_ROWS + rows) if rows else len(stream)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="flywheel-demo-") as home, _redis(settings) as url:
        r = connect(url)
        tally = _Tally()
        world = make_world(r, url, prefix=settings.prefix, artifacts=Path(home) / "artifacts",
                           stream=stream, service=SERVICE, train_rows=TRAIN_ROWS, seed=seed,
                           policy=Policy(approvers=("oncall",)), brain=brain_config(settings),
                           human=lambda req: (True, "approved with --yes"))
        # The on-call person also acknowledges an escalation half an hour after it (keep the
        # model, hand the service back to the agents), as in the eval; without it one early
        # escalation would hold the service's performance alarm for the rest of the stream.
        world.ack_escalations_after_s = ACK_AFTER_S
        last = r.xrevrange(world.fleet.keys.audit, count=1)
        tally.audit_cursor = last[0][0] if last else "0-0"  # show only what happens from now
        console.print(f"[bold]flywheel demo[/] — Redis at {url}; v1 trained on rows "
                      f"0–{TRAIN_ROWS:,}; brain: {settings.model or 'runbook (no LLM)'}")
        try:
            with http_server(create_gateway_app(world.gateway)) as base, \
                    httpx.Client(base_url=base, timeout=60) as client:
                console.print(f"gateway: {base}/v1/models/{SERVICE} (real HTTP on loopback)")
                world.target = HttpTarget(client)
                _replay(world, tally, console, stop, seed, interactive)
            static = _static_accuracy(world, stream, tally)
            usage = world.system.usage
            llm = sum(usage.snapshot(i).llm_calls for i in usage.incidents())
            _summary(console, world, tally, static, llm, time.monotonic() - t0)
            png = plot(tally.served, static, tally.markers, out / "demo.png", block=500)
            console.print(f"plot written to {png}")
        finally:
            world.close()
            r.close()


class _redis:
    """``REDIS_URL`` when set, else a private redis-server for the demo's lifetime."""

    def __init__(self, settings: Settings):
        self.url = settings.redis_url.get_secret_value() if settings.redis_url else None
        self.server: EmbeddedRedis | None = None

    def __enter__(self) -> str:
        if self.url is None:
            self.server = EmbeddedRedis().start()
            self.url = self.server.url
        return self.url

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.stop()


def _replay(world: World, tally: _Tally, console: Console, stop: int, seed: int,
            interactive: bool) -> None:
    cols = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,} rows"))
    with Progress(*cols, console=console, transient=True) as progress:
        task = progress.add_task("Electricity stream", total=stop - TRAIN_ROWS)
        if interactive:
            world.human = _ask(progress, console)
        shown = {"blocks": 0}

        def on_batch(rep: BatchReport) -> None:
            for i, s in enumerate(rep.served):
                if s["prediction"] is not None:
                    tally.served.append((rep.batch.start + i, s["prediction"],
                                         rep.batch.labels[i]))
            progress.update(task, completed=rep.stats.rows)
            _print_audit(world, tally, progress.console)
            blocks = rep.stats.rows // BLOCK
            for b in range(shown["blocks"], blocks):
                lo = TRAIN_ROWS + b * BLOCK
                progress.console.print(
                    f"  rows {lo:>6,}–{lo + BLOCK:<6,} accuracy {rep.stats.accuracy[b]:.3f}   "
                    f"champion v{world.fleet.registry.service(SERVICE).champion}",
                    highlight=False)
            shown["blocks"] = blocks

        world.run(TRAIN_ROWS, stop, seed=seed, on_batch=on_batch, rows_per_s=ROWS_PER_S)
        _print_audit(world, tally, progress.console)


def _ask(progress: Progress, console: Console) -> Human:
    def human(req: ApprovalRequest) -> tuple[bool, str]:
        progress.stop()
        console.rule(f"[bold]approval {req.id}[/]")
        console.print(f"{req.action.describe()} — risk {req.risk}\n{req.rationale[:400]}")
        for k, v in list(req.evidence.items())[:8]:
            console.print(f"  {k}: {v}")
        ok = Confirm.ask("Approve?", default=True)
        reason = "approved in the terminal" if ok else Prompt.ask("Reason for rejecting")
        progress.start()
        return ok, reason

    return human


def _print_audit(world: World, tally: _Tally, console: Console) -> None:
    key = world.fleet.keys.audit
    for sid, f in world.fleet.r.xrange(key, min=f"({tally.audit_cursor}", max="+"):
        tally.audit_cursor = sid
        action = f.get("action", "")
        if action not in SHOWN or f.get("service") != SERVICE:
            continue
        row = tally.served[-1][0] if tally.served else TRAIN_ROWS
        tally.markers.add(action, row)
        console.print(f"  [dim]{_sim(world, float(f['ts']))}[/] [cyan]{f['actor']}[/] "
                      f"{action}: {f.get('reason', '')[:110]}", highlight=False)


def _sim(world: World, ts: float) -> str:
    return f"t+{(ts - 1_700_000_000.0) / 60:6.1f}m"


def _static_accuracy(world: World, stream: DriftStream, tally: _Tally) -> np.ndarray:
    """Per-row correctness of the never-retrained v1 on the rows that were served."""
    model = world.fleet.registry.load_model(SERVICE, 1)
    rows = np.array([r for r, _, _ in tally.served], dtype=np.int64)
    pred = model.predict(stream.X[rows])
    return (pred == stream.y[rows]).astype(np.float64)


def _summary(console: Console, world: World, tally: _Tally, static: np.ndarray, llm: int,
             wall: float) -> None:
    audit = Audit(world.fleet.r, world.fleet.keys).read(service=SERVICE, count=10_000)
    count = {a: sum(1 for e in audit if e.action == a) for a in SHOWN}
    served = np.array([p == y for _, p, y in tally.served], dtype=np.float64)
    incidents = world.system.incidents.recent(100, SERVICE)
    t = Table(title="flywheel demo — summary")
    t.add_column("measure")
    t.add_column("value", justify="right")
    rows = [
        ("rows served over HTTP", f"{len(served):,}"),
        ("accuracy, supervised (served)", f"{served.mean():.3f}"),
        ("accuracy, static v1 (never retrained)", f"{static.mean():.3f}"),
        ("incidents opened", str(len(incidents))),
        ("  resolved / escalated", f"{sum(i.status.value == 'resolved' for i in incidents)} / "
                                   f"{sum(i.status.value == 'escalated' for i in incidents)}"),
        ("retrains (candidates registered)", str(count["registry.add_version"] - 1)),
        ("canaries / shadows", f"{count['registry.start_canary']} / "
                               f"{count['registry.start_shadow']}"),
        ("promotions", str(count["registry.promote"] - 1)),
        ("rollbacks", str(count["registry.rollback"] + count["registry.clear_challenger"])),
        ("approvals requested / approved", f"{count['approval.request']} / "
                                           f"{count['approval.approve']}"),
        ("LLM calls", str(llm)),
        ("champion now", f"v{world.fleet.registry.service(SERVICE).champion}"),
        ("wall time", f"{wall:.0f} s"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
