"""Rich renderings of fleet state for the terminal (tables only; no fleet logic here)."""

from __future__ import annotations

import datetime as dt

from rich.table import Table

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


def _opt(v: int | None) -> str:
    return "-" if v is None else f"v{v}"
