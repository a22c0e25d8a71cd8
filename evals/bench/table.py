"""Prints benchmark rows as a rich table and returns them as plain dicts for JSON/markdown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def show(title: str, rows: Sequence[dict[str, Any]], console: Console | None = None) -> None:
    """Print ``rows`` (dicts with the same keys) as one table."""
    if not rows:
        return
    t = Table(title=title)
    for k in rows[0]:
        t.add_column(k, justify="right" if isinstance(rows[0][k], (int, float)) else "left")
    for row in rows:
        t.add_row(*(_fmt(v) for v in row.values()))
    (console or Console()).print(t)


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The same rows as a GitHub markdown table."""
    if not rows:
        return ""
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(r[k]) for k in head) + " |" for r in rows]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
