"""``flywheel replay``: send a dataset through a gateway (remote over HTTP, or in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import yaml
from rich.console import Console
from rich.progress import Progress

from apps.runtime import open_fleet
from apps.serving import build_gateway, single_threaded_models
from apps.settings import Settings
from fleet.clock import SystemClock
from fleet.datasets import DriftStream, load_elec, rotating_hyperplane, sea, stationary
from fleet.errors import FleetError, InvalidInput
from fleet.gateway.target import DirectTarget
from fleet.replay.fault_store import RedisFaultSink
from fleet.replay.faults import FaultSchedule
from fleet.replay.replayer import BatchReport, Replayer, ReplayStats
from fleet.replay.targets import HttpTarget, Target


def load_dataset(name: str, *, seed: int, n: int = 40_000) -> DriftStream:
    """A named stream; synthetic ones get irregular drift points from ``seed``."""
    from fleet.datasets import irregular_points

    if name == "elec":
        return load_elec()
    if name == "stationary":
        return stationary(n, seed=seed)
    points = irregular_points(n, 4, min_gap=5_000, margin=4_000, seed=seed)
    if name == "sea_abrupt":
        return sea(n, drifts=points, seed=seed)
    if name == "sea_gradual":
        return sea(n, drifts=points, width=2_000, seed=seed)
    if name == "hyperplane":
        return rotating_hyperplane(n, drifts=points, seed=seed)
    raise InvalidInput(f"unknown dataset {name!r}; allowed: elec, sea_abrupt, sea_gradual, "
                       "hyperplane, stationary")


def load_faults(path: Path | None) -> FaultSchedule:
    """Read a YAML or JSON fault schedule (a list of faults, or ``{"faults": [...]}``)."""
    if path is None:
        return FaultSchedule()
    data = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(
        path.read_text())
    if isinstance(data, list):
        data = {"faults": data}
    return FaultSchedule.model_validate(data)


def run_replay(settings: Settings, console: Console, *, service: str, dataset: str, start: int,
               rows: int, rate: float, batch_size: int, label_delay: int, seed: int,
               faults_file: Path | None, url: str | None,
               token: str | None = None) -> ReplayStats:
    """Replay and print accuracy per 1,000 rows.

    With ``url``, requests go to that gateway (``flywheel serve`` or ``serve-gateway``) with
    ``token`` as the bearer token.

    Raises:
        InvalidInput: a bad dataset or fault file, or the gateway refused the token.
    """
    stream = load_dataset(dataset, seed=seed)
    stop = min(len(stream), start + rows) if rows else len(stream)
    schedule = load_faults(faults_file)
    if url is not None:
        if any(f.serving for f in schedule.faults):
            raise InvalidInput("serving faults need the fleet's Redis; run without --url")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            with httpx.Client(base_url=url, timeout=30, headers=headers) as client:
                return _run(console, HttpTarget(client), None, service, stream, start, stop,
                            rate=rate, batch_size=batch_size, label_delay=label_delay,
                            seed=seed, schedule=schedule)
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise FleetError(
                f"cannot reach the gateway at {url} ({type(exc).__name__}: {exc}); start it "
                "(`flywheel serve-gateway` or `flywheel serve`) or fix --url"
            ) from exc
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 401:
                raise InvalidInput(
                    f"the gateway at {url} refused the request (401: "
                    f"{'unknown token' if token else 'no token'}); pass --token or set "
                    "FLYWHEEL_API_TOKEN to a token from its FLYWHEEL_API_TOKENS"
                ) from None
            raise FleetError(
                f"the gateway at {url} answered {exc.response.status_code} "
                f"({exc.response.text[:200]}); check --url and the service name"
            ) from exc
    single_threaded_models()
    with open_fleet(settings) as fleet:
        gw = build_gateway(fleet)
        try:
            return _run(console, DirectTarget(gw), RedisFaultSink(fleet.r, fleet.keys), service,
                        stream, start, stop, rate=rate, batch_size=batch_size,
                        label_delay=label_delay, seed=seed, schedule=schedule)
        finally:
            gw.buffer.close()


def _run(console: Console, target: Target, sink: RedisFaultSink | None, service: str,
         stream: DriftStream, start: int, stop: int, *, rate: float, batch_size: int,
         label_delay: int, seed: int, schedule: FaultSchedule) -> ReplayStats:
    replayer = Replayer(target, clock=SystemClock(), rate=rate, batch_size=batch_size,
                        label_delay=label_delay, seed=seed, faults=schedule, fault_sink=sink)
    shown = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"replaying {stream.name} → {service}", total=stop - start)

        def on_batch(rep: BatchReport) -> None:
            nonlocal shown
            progress.update(task, completed=rep.stats.rows)
            full = rep.stats.rows // 1000
            for b in range(shown, full):
                progress.console.print(
                    f"rows {start + b * 1000:>6,}–{start + (b + 1) * 1000:>6,}  "
                    f"accuracy {rep.stats.accuracy[b]:.3f}"
                )
            shown = max(shown, full)

        stats = replayer.run(service, stream, start, stop, on_batch=on_batch)
    console.print(f"sent {stats.rows:,} rows in {stats.batches:,} batches, "
                  f"{stats.labels_accepted:,} labels, {stats.errors:,} errors; "
                  f"served by {stats.served_by}")
    return stats
