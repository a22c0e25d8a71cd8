"""The ``flywheel`` command line (typer + rich). Commands stay thin: they wire and render.

Domain errors become one line on stderr and exit code 1; bad arguments one line and exit code 2.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console

from apps.settings import Settings
from fleet.errors import FleetError

try:  # typer >= 0.26 vendors click; older versions use click itself
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # type: ignore

app = typer.Typer(
    name="flywheel",
    help="Run machine-learning models in production by themselves: monitor, retrain, redeploy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console()
err = Console(stderr=True, soft_wrap=True)


class DatasetName(StrEnum):
    """Streams the replayer can send."""

    elec = "elec"
    sea_abrupt = "sea_abrupt"
    sea_gradual = "sea_gradual"
    hyperplane = "hyperplane"
    stationary = "stationary"


def _settings() -> Settings:
    return Settings()


def _fleet_settings() -> Settings:
    """Settings of a command that reads the fleet; without REDIS_URL it says so on stderr."""
    settings = _settings()
    if settings.redis_url is None:
        typer.echo("flywheel: REDIS_URL is not set, so this uses a private, empty Redis that is "
                   "deleted on exit; set REDIS_URL to your fleet's Redis to see it", err=True)
    return settings


class LogFormatOpt(StrEnum):
    """Choices of ``--log-format``."""

    json = "json"
    text = "text"


def _os_user() -> dict[str, str]:
    """The OS account running the CLI, recorded beside the self-declared ``--user``.

    ``--user`` says which approver identity is claimed; the OS user is who actually ran the
    command (the CLI is trusted as the OS user: whoever can run it can reach Redis).
    """
    import getpass

    try:
        name = getpass.getuser()
    except Exception:  # no USER/LOGNAME and no passwd entry (e.g. a bare container uid)
        name = f"uid:{os.getuid()}"
    return {"os_user": name}


@app.command()
def services() -> None:
    """List registered services with their champion and challenger."""
    from apps.runtime import open_fleet
    from apps.views import services_table

    with open_fleet(_fleet_settings()) as fleet:
        if fleet.embedded is not None:
            err.print("note: REDIS_URL is not set; this is a fresh private Redis (empty fleet)")
        console.print(services_table(fleet.registry))


@app.command()
def versions(service: str = typer.Argument(..., help="service name")) -> None:
    """List the model versions of SERVICE with lineage and offline metrics."""
    from apps.runtime import open_fleet
    from apps.views import versions_table

    with open_fleet(_fleet_settings()) as fleet:
        console.print(versions_table(fleet.registry, service))


@app.command()
def incidents(
    service: str | None = typer.Option(None, help="only this service"),
    all_: bool = typer.Option(False, "--all", help="recent incidents, closed ones included"),
    limit: int = typer.Option(20, min=1, help="most incidents to list with --all"),
) -> None:
    """List open and failed incidents (or the most recent ones, all included, with --all)."""
    from apps.runtime import open_fleet
    from apps.views import incidents_table
    from fleet.incidents import IncidentStore

    with open_fleet(_fleet_settings()) as fleet:
        if service is not None:
            fleet.registry.service(service)  # an unknown name fails with the known ones
        store = IncidentStore(fleet.r, fleet.keys, fleet.clock, fleet.audit)
        found = store.recent(limit, service) if all_ else store.open_incidents(service)
        if not all_:  # a failed incident is closed but nobody handled it: keep it in view
            found += [i for i in store.recent(limit, service) if i.status.value == "failed"]
        console.print(incidents_table(found, title="recent incidents" if all_ else
                                      "open and failed incidents"))


@app.command()
def ack(
    incident_id: str = typer.Argument(..., help="an escalated incident's id"),
    user: str = typer.Option("oncall", help="who acknowledges (must be an approver)"),
    reason: str = typer.Option("", help="why (default: keep the current model)"),
    accept: bool = typer.Option(False, help="also accept the champion's current error level: "
                                "the monitor re-baselines and does not raise this drift again"),
) -> None:
    """Acknowledge an escalated incident: close it and keep the current model.

    The agents may act again if the problem persists; with --accept the monitor takes the
    champion's current error as its new baseline for a performance incident.
    """
    from apps.runtime import open_fleet
    from fleet.incidents import IncidentStore
    from fleet.incidents.acknowledge import ACK_REASON, acknowledge

    with open_fleet(_fleet_settings(), audit_context=_os_user()) as fleet:
        store = IncidentStore(fleet.r, fleet.keys, fleet.clock, fleet.audit)
        inc = acknowledge(store, fleet.registry, incident_id, user=user,
                          reason=reason or ACK_REASON, accept=accept)
        console.print(f"{inc.id} acknowledged by {user}: {inc.status.value}")


@app.command()
def status() -> None:
    """Fleet summary: services, champions, modes, open incidents, last monitor tick, approvals."""
    from apps.runtime import open_fleet
    from apps.views import status_table
    from fleet.approvals import ApprovalStore
    from fleet.incidents import IncidentStore
    from fleet.monitor import MonitorStateStore

    with open_fleet(_fleet_settings()) as fleet:
        pending = len(ApprovalStore(fleet.r, fleet.keys, fleet.clock, fleet.audit).pending())
        console.print(status_table(
            fleet.registry, IncidentStore(fleet.r, fleet.keys, fleet.clock, fleet.audit),
            MonitorStateStore(fleet.r, fleet.keys), pending=pending))


@app.command()
def replay(
    service: str = typer.Argument(..., help="service to send traffic to"),
    dataset: DatasetName = typer.Option(DatasetName.elec, help="stream to replay"),
    start: int = typer.Option(0, min=0, help="first row"),
    rows: int = typer.Option(0, min=0, help="rows to send (0 = to the end)"),
    rate: float = typer.Option(0.0, min=0.0, help="rows per second (0 = as fast as possible)"),
    batch_size: int = typer.Option(100, min=1, help="rows per request"),
    label_delay: int = typer.Option(0, min=0, help="send each label this many rows later"),
    seed: int = typer.Option(0, help="seed for request ids, synthetic data and faults"),
    faults: Path | None = typer.Option(None, exists=True, dir_okay=False,
                                       help="YAML/JSON fault schedule"),
    url: str | None = typer.Option(None, help="gateway base URL (default: in-process gateway)"),
    token: str | None = typer.Option(None, help="bearer token for --url (default: "
                                     "FLYWHEEL_API_TOKEN)"),
) -> None:
    """Replay a dataset through the gateway, with labels and scheduled faults."""
    from apps.replay_cmd import run_replay

    settings = _settings()
    if token is None and settings.api_token is not None:
        token = settings.api_token.get_secret_value()
    run_replay(settings, console, service=service, dataset=dataset.value, start=start,
               rows=rows, rate=rate, batch_size=batch_size, label_delay=label_delay, seed=seed,
               faults_file=faults, url=url, token=token)


@app.command()
def redis() -> None:
    """Start a private redis-server in the foreground and print the REDIS_URL to export."""
    import time

    from fleet.embedded_redis import EmbeddedRedis

    with EmbeddedRedis() as server:
        console.print(f"export REDIS_URL={server.url}    (Ctrl-C stops it; data in "
                      f"{server.data_dir})")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


@app.command("serve-gateway")
def serve_gateway(
    host: str = typer.Option("127.0.0.1", help="interface to bind"),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port"),
) -> None:
    """Serve every registered model over HTTP (needs REDIS_URL)."""
    from apps.serving import serve_gateway_forever

    serve_gateway_forever(_settings(), host=host, port=port)


@app.command()
def demo(
    rows: int = typer.Option(0, min=0, help="stop after this many rows (0 = whole stream)"),
    out: Path = typer.Option(Path("flywheel-demo"), help="directory for the plot"),
    seed: int = typer.Option(0, help="seed"),
    yes: bool = typer.Option(False, "--yes", "-y", help="approve every request automatically"),
) -> None:
    """Everything embedded, supervising itself on the Electricity stream (no API key needed)."""
    from apps.demo import run_demo

    run_demo(_settings(), console, rows=rows, out=out, seed=seed, yes=yes)


@app.command()
def run(
    shards: int = typer.Option(16, min=1, help="fixed number of service shards"),
    interval: float = typer.Option(5.0, min=0.1, help="seconds between passes"),
    once: bool = typer.Option(False, help="run one pass and exit"),
    log_format: LogFormatOpt | None = typer.Option(
        None, "--log-format", help="json (default, or FLYWHEEL_LOG_FORMAT) or text"),
) -> None:
    """Run the background loop: monitor ticks, incidents, approvals (needs REDIS_URL to share)."""
    from apps.logs import AuditTail, configure
    from apps.loop import Loop, LoopConfig
    from apps.retention_cmd import build_pruner
    from apps.system import open_system

    settings = _fleet_settings()
    configure(settings.log_level, log_format.value if log_format else settings.log_format)
    with open_system(settings, notify=not once) as system:
        loop = Loop(system, LoopConfig(shards=shards, tick_interval_s=interval),
                    pruner=build_pruner(system, settings), events=AuditTail(system.fleet.audit))
        if once:
            console.print(loop.run_once().__dict__)
        else:
            loop.run_forever()


@app.command()
def prune(
    dry_run: bool = typer.Option(False, "--dry-run", help="only count what would go"),
) -> None:
    """Apply retention now: closed incidents' checkpoints, records, approvals; archive the audit."""
    from apps.retention_cmd import build_pruner, print_report
    from apps.system import open_system

    with open_system(_fleet_settings()) as system:
        if system.fleet.embedded is not None:
            err.print("note: REDIS_URL is not set; this is a fresh private Redis (nothing to "
                      "prune)")
        print_report(build_pruner(system, _settings()).run(dry_run=dry_run), console)


@app.command()
def chat(
    user: str = typer.Option("oncall", help="who you are (approver identity)"),
    thread: str | None = typer.Option(None, help="continue this conversation id"),
    message: str | None = typer.Option(None, "--message", "-m", help="send one message, print "
                                       "the reply and exit"),
) -> None:
    """Chat with the supervisor (type help for the commands it understands without an LLM)."""
    from apps.chat import repl
    from apps.system import open_system

    with open_system(_fleet_settings(), audit_context=_os_user()) as system:
        repl(system, console, user=user, thread=thread, once=message)


@app.command()
def approvals(
    action: str = typer.Argument("list", help="list, approve or reject"),
    approval_id: str | None = typer.Argument(None, help="approval id (approve/reject)"),
    user: str = typer.Option("oncall", help="who decides (must be an approver)"),
    reason: str = typer.Option("", help="why (required to reject)"),
) -> None:
    """List pending approvals, or approve / reject one."""
    from apps.system import open_system

    if action not in ("list", "approve", "reject"):
        raise typer.BadParameter(f"{action!r}: use list, approve or reject")
    with open_system(_fleet_settings(), audit_context=_os_user()) as system:
        store = system.approvals
        if action == "list":
            for a in store.pending():
                console.print(f"{a.id}  {a.action.describe()}  risk={a.risk}  "
                              f"approvers={','.join(a.approvers)}  incident={a.incident}")
            return
        if approval_id is None:
            raise typer.BadParameter(f"{action} needs an approval id")
        req = store.get(approval_id)
        d = store.decide(approval_id, approve=action == "approve", by=user, reason=reason,
                         digest=req.action_digest)
        console.print(f"{approval_id} {'approved' if d.approved else 'rejected'} by {d.by}")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="interface to bind"),
    port: int = typer.Option(8080, min=1, max=65535, help="TCP port"),
) -> None:
    """Serve the HTTP API, the model gateway and Slack (the loop runs in `flywheel run`)."""
    from apps.api.serve import serve_api_forever

    serve_api_forever(_settings(), host=host, port=port)


@app.command()
def bench(
    only: list[str] = typer.Option([], "--only", help="telemetry, gateway, monitor, llm, soak"),
    out: Path = typer.Option(Path("out"), help="directory for bench.md and bench.json"),
) -> None:
    """Run the benchmarks; each table has a ratio against a named alternative."""
    from evals.bench.all import BENCHES, run_all

    bad = [n for n in only if n not in BENCHES]
    if bad:
        raise typer.BadParameter(f"unknown benchmark(s) {bad}; choose from {list(BENCHES)}")
    run_all(only or None, out, console)


@app.command("eval")
def eval_(
    scenario: list[str] = typer.Option([], "--scenario", help="scenario name (repeatable; "
                                       "default: every scenario in evals/scenarios)"),
    out: Path = typer.Option(Path("out/eval"), help="directory for scorecard.md, "
                             "scorecard.json and the plots"),
    model: str | None = typer.Option(None, help="litellm model for the agents, e.g. "
                                     "openai/gpt-4o-mini (default: the runbook brain)"),
    quick: bool = typer.Option(False, help="the scenarios' smaller sizes and fewer baselines"),
    seeds: int = typer.Option(3, min=1, max=20, help="draws (seeds) of each synthetic stream "
                              "judged by match_oracle / no_retrain; those goals are judged "
                              "over all of them"),
    strict: bool = typer.Option(False, help="exit 1 when any goal fails (a crashed run always "
                                "exits 1)"),
) -> None:
    """Run the eval scenarios and their baselines in simulated time; write the scorecard."""
    from apps.eval_cmd import failures, run_eval

    suite = run_eval(_settings(), console, scenarios=scenario, out=out, model=model, quick=quick,
                     seeds=seeds)
    crashed, missed = failures(suite)
    if crashed:
        err.print(f"error: flywheel's run failed in {', '.join(crashed)} (see the log above)",
                  highlight=False, markup=False)
        raise typer.Exit(1)
    if strict and missed:
        err.print(f"error: {len(missed)} goal(s) failed: {'; '.join(missed)}", highlight=False,
                  markup=False)
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry: run the app, turning known errors into one clear line."""
    # One OpenMP thread for every thread of the process (threadpoolctl's limit only reaches the
    # calling thread, and the gateway scores in server threads); must be set before sklearn loads.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:
        console.print(exc.ctx.get_help() if exc.ctx else "flywheel --help")
        sys.exit(0)
    except UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else "flywheel"
        err.print(f"error: {exc.format_message()} (see: {cmd} --help)", highlight=False,
                  markup=False)
        sys.exit(2)
    except ClickException as exc:
        err.print(f"error: {exc.format_message()}", highlight=False, markup=False)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except FleetError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)
