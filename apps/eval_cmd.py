"""``flywheel eval``: run the scenario suite against its baselines and write the scorecard."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from apps.serving import single_threaded_models
from apps.settings import Settings
from evals.cases import load_cases
from evals.runner import FLYWHEEL, Suite, run_suite
from evals.scorecard import COLUMNS, all_goals, rows, write


def run_eval(settings: Settings, console: Console, *, scenarios: list[str], out: Path,
             model: str | None, quick: bool, seeds: int = 1) -> Suite:
    """Run the named scenarios (all by default), print the scorecard and write its files.

    Uses ``REDIS_URL`` when set (keys under a fresh prefix per scenario, deleted afterwards),
    else a private redis-server for the run.
    """
    single_threaded_models()
    cases = load_cases(scenarios or None)
    url = settings.redis_url.get_secret_value() if settings.redis_url else None
    console.print(f"[bold]flywheel eval[/] — {len(cases)} scenario(s){' (quick)' if quick else ''}"
                  f", {seeds} seed(s); brain: {model or 'runbook (no LLM)'}; "
                  f"Redis: {url or 'embedded'}")
    suite = run_suite(cases, redis_url=url, model=model, quick=quick, seeds=seeds,
                      progress=lambda line: console.print("  " + line, highlight=False))
    files = write(suite, out)
    narrow = console.width
    console.width = max(narrow, 150)  # CI logs get 80 columns: too few for 15
    try:
        console.print(scorecard_table(suite))
        console.print(goals_table(suite))
    finally:
        console.width = narrow
    console.print(f"wall time {suite.wall_s:.0f} s; scorecard: {files['markdown']}, "
                  f"{files['json']}; plots in {out}")
    return suite


def failures(suite: Suite) -> tuple[list[str], list[str]]:
    """``(scenarios whose flywheel run crashed, "scenario: goal" of every failed goal)``."""
    crashed = [res.case.name for res in suite.results if res.error]
    missed = [f"{g.case}: {g.goal}" for g in all_goals(suite) if not g.passed]
    return crashed, missed


SHORT = {"accuracy": "acc", "lost vs ref": "lost", "detected": "found", "retrains": "retr",
         "promotions": "prom", "rollbacks": "rollb", "approvals": "appr", "wrong actions": "wrong",
         "handled": "ok", "LLM calls": "LLM", "tokens": "tok", "wall s": "s"}
"""Narrow column headers for the terminal (the markdown has the long ones)."""


def scorecard_table(suite: Suite) -> Table:
    """Every system on every scenario, flywheel first."""
    t = Table(title="scorecard", show_lines=False, pad_edge=False)
    t.add_column("scenario", no_wrap=True)
    for c in COLUMNS:
        t.add_column(SHORT.get(c, c), justify="left" if c == "system" else "right",
                     no_wrap=c == "system")
    for res in suite.results:
        for i, row in enumerate(rows(res)):
            style = "bold" if row[0] == FLYWHEEL else None
            t.add_row(res.case.name if i == 0 else "", *row, style=style,
                      end_section=i == len(res.scores) - 1)
    return t


def goals_table(suite: Suite) -> Table:
    """The goals with PASS/FAIL."""
    t = Table(title="goals")
    for c in ("scenario", "goal", "value", "target", "verdict"):
        t.add_column(c)
    for g in all_goals(suite):
        t.add_row(g.case, g.goal, g.value, g.target,
                  f"[green]{g.verdict}[/]" if g.passed else f"[red]{g.verdict}[/]")
    return t
