"""Rich renderings of fleet state for the terminal (tables only; no fleet logic here)."""

from __future__ import annotations

import datetime as dt

from rich.console import Group
from rich.table import Table
from rich.text import Text

from fleet.incidents import Incident, IncidentStore
from fleet.monitor import MonitorStateStore
from fleet.registry import Registry


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def services_table(registry: Registry) -> Table:
    """One row per service: task, features, champion, challenger, mode."""
    t = Table(title="services")
    for c in ("service", "task", "features", "champion", "challenger", "mode", "split", "versions"):
        t.add_column(c)
    for name in registry.services():
        s = registry.service(name)
        t.add_row(
            name, s.task, str(len(s.schema_.features)), _opt(s.champion), _opt(s.challenger),
            s.mode.value, f"{s.split:.0%}" if s.challenger else "-",
            str(len(registry.versions(name))),
        )
    return t


def versions_table(registry: Registry, service: str) -> Table:
    """One row per version of ``service`` with lineage and offline metrics."""
    s = registry.service(service)
    t = Table(title=f"versions of {service} (champion {_opt(s.champion)})")
    for c in ("version", "status", "parent", "created", "by", "train rows", "metrics", "sha256"):
        t.add_column(c)
    for v in registry.versions(service):
        metrics = ", ".join(f"{k}={val:.3f}" for k, val in sorted(v.metrics.items())
                            if isinstance(val, float))
        t.add_row(
            str(v.number), v.status.value, _opt(v.parent), _when(v.created_at), v.created_by,
            str(v.training_window.get("rows", "-")), metrics or "-", v.sha256[:12],
        )
    return t


def incidents_table(incidents: list[Incident], *, title: str = "open incidents") -> Table:
    """One row per incident: id, service, kind, severity, status, times, signals, evidence."""
    t = Table(title=f"{title} ({len(incidents)})")
    for c in ("id", "service", "kind", "severity", "status", "opened", "signals", "quiet",
              "version", "evidence"):
        t.add_column(c)
    for i in incidents:
        style = {"critical": "bold red", "warning": "yellow"}.get(i.severity, "")
        t.add_row(
            i.id, i.service, i.kind, Text(i.severity, style=style), i.status.value,
            _when(i.opened_at), str(i.signal_count), str(i.quiet_ticks), _opt(i.version),
            _evidence(i.evidence),
        )
    return t


def status_table(
    registry: Registry, incidents: IncidentStore, monitor: MonitorStateStore, *,
    pending: int | None = None,
) -> Group:
    """Fleet summary: one row per service, then the last monitor tick and pending approvals."""
    open_by: dict[str, list[Incident]] = {}
    for inc in incidents.open_incidents():
        open_by.setdefault(inc.service, []).append(inc)
    t = Table(title="fleet status")
    for c in ("service", "champion", "challenger", "mode", "open incidents", "worst"):
        t.add_column(c)
    for name in registry.services():
        s = registry.service(name)
        found = open_by.get(name, [])
        worst = max((i.severity for i in found), key=("info", "warning", "critical").index,
                    default="-")
        t.add_row(name, _opt(s.champion), _opt(s.challenger), s.mode.value,
                  ", ".join(i.kind for i in found) or "-", worst)
    tick = monitor.last_tick()
    last = (f"last monitor tick {_when(tick['at'])}: {tick['services']} services, "
            f"{tick['events']} events, {tick['signals']} signals in {tick['seconds']:.3f} s"
            if tick else "the monitor has not ticked yet")
    lines = [last, f"open incidents: {sum(len(v) for v in open_by.values())}"]
    if pending is not None:
        lines.append(f"pending approvals: {pending}")
    return Group(t, Text("\n".join(lines)))


def _evidence(ev: dict, limit: int = 60) -> str:
    text = ", ".join(f"{k}={v}" for k, v in ev.items() if k in (
        "statistic", "threshold", "features", "checks", "verdict", "quantiles"))
    return text[:limit] or "-"


def _opt(v: int | None) -> str:
    return "-" if v is None else f"v{v}"
