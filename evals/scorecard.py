"""The scorecard of a suite run: goals with PASS/FAIL, per-scenario tables, JSON and plots.

Goals (issue 6), checked on flywheel's numbers:

- ``match_oracle`` (synthetic drift streams): accuracy >= 0.99 x the oracle's, with at most
  1.2 x the oracle's retrains;
- ``no_retrain`` (the stationary control): no retrain at all;
- ``periodic_gain`` (Electricity): at least 90 % of the accuracy gain that retraining every 500
  rows gets over the static model, with at most a quarter of its retrains;
- ``no_forbidden`` (every case): every forbidden-action count is 0;
- ``handled`` (every case): every expected action happened (the fault got its intended action).

With ``--seeds N`` a reseedable case (:attr:`evals.cases.Case.reseedable`) also runs on the next
``N - 1`` draws of its stream; ``match_oracle`` and ``no_retrain`` are then judged on the pooled
accuracy and the summed retrains, and ``no_forbidden`` and ``handled`` on every draw.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evals.runner import FLYWHEEL, CaseResult, Suite
from evals.scorers import Score

ORACLE_ACCURACY = 0.99
ORACLE_RETRAINS = 1.2
GAIN_SHARE = 0.9
GAIN_RETRAINS = 0.25


@dataclass(frozen=True)
class Goal:
    """One goal on one case."""

    case: str
    goal: str
    passed: bool
    value: str
    target: str

    @property
    def verdict(self) -> str:
        """``PASS`` or ``FAIL``."""
        return "PASS" if self.passed else "FAIL"


def goals(res: CaseResult) -> list[Goal]:
    """Every goal of one case, checked on flywheel's scores.

    In a multi-seed run the seeded goals, the forbidden actions and the intended actions are
    judged over every seed.
    """
    c = res.case
    crashed = [r for r in res.seeds if r.score_of(FLYWHEEL) is None]
    if crashed:
        return [Goal(c.name, "flywheel ran", False,
                     "; ".join(f"seed {r.case.stream.seed}: {r.error or 'no run'}"
                               for r in crashed), "a run on every seed")]
    fws = [_score(r, FLYWHEEL) for r in res.seeds]
    fw = fws[0]
    on = _seeds(res)
    out: list[Goal] = []
    for g in c.goals:
        if g == "match_oracle":
            os_ = [_score(r, "oracle") for r in res.seeds]
            # pooled over seeds: every draw of a case has the same length, so this is the
            # mean accuracy ratio weighted alike, and the retrain cap is on the total
            acc, o_acc = _mean(s.accuracy for s in fws), _mean(s.accuracy for s in os_)
            ratio = acc / o_acc
            spread = "" if len(fws) == 1 else " (seeds " + ", ".join(
                f"{a.accuracy / b.accuracy:.4f}" for a, b in zip(fws, os_, strict=True)) + ")"
            retrains, o_retrains = sum(s.retrains for s in fws), sum(s.retrains for s in os_)
            cap = ORACLE_RETRAINS * o_retrains
            out.append(Goal(
                c.name, "accuracy >= 0.99 x oracle", ratio >= ORACLE_ACCURACY,
                f"{on}{acc:.4f} / {o_acc:.4f} = {ratio:.4f}{spread}", f">= {ORACLE_ACCURACY}"))
            per = "" if len(fws) == 1 else " (seeds " + ", ".join(
                f"{a.retrains}/{b.retrains}" for a, b in zip(fws, os_, strict=True)) + ")"
            out.append(Goal(c.name, "retrains <= 1.2 x oracle", retrains <= cap,
                            f"{on}{retrains} vs oracle {o_retrains}{per}", f"<= {cap:g}"))
        elif g == "no_retrain":
            n = sum(s.retrains for s in fws)
            out.append(Goal(c.name, "no retrain", n == 0, f"{on}{n}", "0"))
        elif g == "periodic_gain":
            s, p = res.score_of("static"), res.score_of("every 500")
            assert s is not None and p is not None
            gain = p.accuracy - s.accuracy
            share = (fw.accuracy - s.accuracy) / gain if gain > 0 else math.nan
            cap = GAIN_RETRAINS * p.retrains
            out.append(Goal(
                c.name, ">= 90 % of every-500's gain over static", share >= GAIN_SHARE,
                f"({fw.accuracy:.4f} - {s.accuracy:.4f}) / ({p.accuracy:.4f} - "
                f"{s.accuracy:.4f}) = {share:.3f}", f">= {GAIN_SHARE}"))
            out.append(Goal(c.name, "retrains <= 1/4 of every-500's", fw.retrains <= cap,
                            f"{fw.retrains} vs {p.retrains}", f"<= {cap:g}"))
    wrong: dict[str, int] = {}
    for s in fws:
        for k, n in s.wrong.items():
            wrong[k] = wrong.get(k, 0) + n
    out.append(Goal(c.name, "no forbidden action", not wrong, on + (_wrong(wrong) or "0"), "0"))
    missing = [f"{m}" + (f" (seed {r.case.stream.seed})" if len(fws) > 1 else "")
               for r, s in zip(res.seeds, fws, strict=True) for m in s.missing]
    out.append(Goal(c.name, "intended action happened", not missing,
                    on + ("yes" if not missing else "missing: " + ", ".join(missing)),
                    ", ".join(r.label + (f" x{r.min}" if r.min > 1 else "")
                              for r in c.expectations(quick=res.quick)) or "(nothing)"))
    return out


def _score(res: CaseResult, system: str) -> Score:
    s = res.score_of(system)
    assert s is not None  # flywheel checked above; the schema ties goals to their baselines
    return s


def _mean(xs: Iterable[float]) -> float:
    return float(np.mean(list(xs)))


def _seeds(res: CaseResult) -> str:
    """``"3 seeds: "`` before a value judged over several seeds, else nothing."""
    return f"{len(res.seeds)} seeds: " if res.replicas else ""


def _wrong(wrong: dict[str, int]) -> str:
    return ", ".join(f"{k} x{n}" for k, n in wrong.items())


def all_goals(suite: Suite) -> list[Goal]:
    """Goals of every case of the suite."""
    return [g for res in suite.results for g in goals(res)]


# --- tables -----------------------------------------------------------------------------------

COLUMNS = ("system", "accuracy", "lost vs ref", "delay", "detected", "retrains", "promotions",
           "rollbacks", "approvals", "wrong actions", "handled", "LLM calls", "tokens", "wall s")


def rows(res: CaseResult) -> list[list[str]]:
    """One table row per system of a case (strings, in :data:`COLUMNS` order)."""
    out = []
    for s in res.scores:
        lost = "–" if s.lost_vs_reference is None else f"{100 * s.lost_vs_reference:+.2f} pt"
        delay = "–" if s.detection_delay is None else f"{s.detection_delay:.0f}"
        wrong = str(s.wrong_actions) + (f" ({_wrong(s.wrong)})" if s.wrong else "")
        out.append([
            s.system, f"{s.accuracy:.4f}", lost, delay, s.detected, str(s.retrains),
            str(s.promotions), str(s.rollbacks), str(s.approvals), wrong,
            "yes" if s.handled else "no", str(s.llm_calls), str(s.tokens), f"{s.wall_s:.1f}",
        ])
    return out


def _md_table(head: list[str] | tuple[str, ...], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return lines


def markdown(suite: Suite, plots: dict[str, str] | None = None) -> str:
    """The scorecard as markdown."""
    gs = all_goals(suite)
    passed = sum(g.passed for g in gs)
    lines = [
        "# flywheel eval scorecard",
        "",
        f"{len(suite.results)} scenarios{' (quick sizes)' if suite.quick else ''}; "
        f"{_seed_note(suite)}brain: "
        f"{suite.model or 'runbook (no LLM)'}; wall time {suite.wall_s:.0f} s. "
        f"Goals: {passed}/{len(gs)} pass.",
        "",
        "Accuracy is prequential (each served answer against its label; a failed request is "
        "wrong). *lost vs ref* is the case's reference accuracy minus the system's. *delay* is "
        "rows from a true onset (drift or fault start) to the first incident or alarm. Wrong "
        "actions are the scenario's forbidden actions that happened. flywheel's numbers are read "
        "from Redis (audit trail and incidents).",
        "",
        "## Goals",
        "",
        *_md_table(("scenario", "goal", "value", "target", "verdict"),
                   [[g.case, g.goal, g.value, g.target, f"**{g.verdict}**"] for g in gs]),
    ]
    for res in suite.results:
        c = res.case
        ref = "–" if res.reference is None else f"{res.reference:.4f}"
        lines += [
            "",
            f"## {c.name} ({c.tier})",
            "",
            c.title + ".",
            "",
            f"{len(res.stream):,} rows ({c.stream.generator}, seed {c.stream.seed}); first model "
            f"on rows 0–{c.train_rows:,}; onsets {', '.join(f'{o:,}' for o in res.onsets) or '–'}"
            f"; reference {c.reference} = {ref}; {c.rows_per_s:g} rows/s, a tick every "
            f"{c.tick_every} rows; human: {c.human}, {_ack(c.ack_escalations_after_s)}; "
            "policy overrides: "
            f"{json.dumps(c.policy) if c.policy else 'none'}.",
            "",
            *_md_table(COLUMNS, rows(res)),
        ]
        if res.error:
            lines += ["", f"flywheel failed: `{res.error}`"]
        fw = res.run(FLYWHEEL)
        if fw is not None:
            trail = [f"{e.row:,} {e.action}" + (f" v{e.version}" if e.version else "")
                     for e in fw.events if e.action not in ("approval_approve",)]
            incs = [f"{i.kind} at {i.row:,} ({i.status})" for i in fw.incidents]
            lines += ["", f"flywheel incidents: {'; '.join(incs) or 'none'}.",
                      "", f"flywheel actions: {'; '.join(trail) or 'none'}."]
        if res.replicas:
            lines += ["", f"Every draw of the stream, this one first (the seeded goals are "
                      f"judged over all {len(res.seeds)}):", "",
                      *_md_table(SEED_COLUMNS, seed_rows(res))]
        if plots and c.name in plots:
            lines += ["", f"![{c.name}]({plots[c.name]})"]
    return "\n".join(lines) + "\n"


SEED_COLUMNS = ("seed", "onsets", "flywheel accuracy", "oracle accuracy", "ratio",
                "flywheel retrains", "oracle retrains", "wrong actions", "handled")


def seed_rows(res: CaseResult) -> list[list[str]]:
    """One row per seed of a case (strings, in :data:`SEED_COLUMNS` order)."""
    out = []
    for r in res.seeds:
        fw, o = r.score_of(FLYWHEEL), r.score_of("oracle")
        if fw is None:
            out.append([str(r.case.stream.seed), "", f"failed: {r.error}", *[""] * 6])
            continue
        out.append([
            str(r.case.stream.seed), ", ".join(f"{x:,}" for x in r.onsets) or "–",
            f"{fw.accuracy:.4f}", "–" if o is None else f"{o.accuracy:.4f}",
            "–" if o is None else f"{fw.accuracy / o.accuracy:.4f}", str(fw.retrains),
            "–" if o is None else str(o.retrains), str(fw.wrong_actions),
            "yes" if fw.handled else "missing: " + ", ".join(fw.missing)])
    return out


def _seed_note(suite: Suite) -> str:
    if suite.seeds <= 1:
        return ""
    return (f"{suite.seeds} draws (seeds) of each synthetic stream with a seeded goal, judged "
            "over all of them (accuracy pooled, retrains summed); ")


def _ack(seconds: float | None) -> str:
    if seconds is None:
        return "never closes escalations"
    return f"closes escalations after {seconds:g} s"


def to_json(suite: Suite) -> dict[str, Any]:
    """The scorecard as JSON-ready data."""
    return {
        "wall_s": suite.wall_s, "model": suite.model, "quick": suite.quick,
        "seeds": suite.seeds,
        "goals": [g.__dict__ | {"verdict": g.verdict} for g in all_goals(suite)],
        "cases": [{
            "name": r.case.name, "title": r.case.title, "tier": r.case.tier,
            "rows": len(r.stream), "train_rows": r.case.train_rows, "onsets": r.onsets,
            "reference": {"system": r.case.reference, "accuracy": r.reference},
            "policy": r.case.policy, "human": r.case.human, "error": r.error,
            "scores": [s.to_json() for s in r.scores],
            "flywheel": _trail(r),
            "seeds": [{"seed": x.case.stream.seed, "onsets": x.onsets, "error": x.error,
                       "scores": [s.to_json() for s in x.scores]} for x in r.seeds],
        } for r in suite.results],
    }


def _trail(res: CaseResult) -> dict[str, Any] | None:
    fw = res.run(FLYWHEEL)
    if fw is None:
        return None
    return {"events": [e.__dict__ for e in fw.events],
            "incidents": [i.__dict__ for i in fw.incidents]}


# --- plots ------------------------------------------------------------------------------------


def plot(res: CaseResult, path: Path) -> Path:
    """Accuracy over the stream per system, with the true onsets and flywheel's promotions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(res.stream) - res.case.train_rows
    block = max(250, n // 60)
    fig, ax = plt.subplots(figsize=(12.5, 4.2))
    for run in res.runs:
        k = len(run.correct) // block
        if k == 0:
            continue
        acc = run.correct[: k * block].reshape(k, block).mean(axis=1)
        x = run.start + block * (np.arange(k) + 0.5)
        fw = run.system == FLYWHEEL
        ref = run.system == {"oracle": "oracle", "periodic_500": "every 500"}.get(
            res.case.reference)
        ax.plot(x, acc, label=run.system, lw=2.4 if fw else 1.1,
                ls="--" if ref else "-", zorder=3 if fw else 2, alpha=1 if fw or ref else 0.7,
                color="black" if fw else None)
    for i, o in enumerate(res.onsets):
        ax.axvline(o, color="grey", ls=":", lw=1, label="true onset" if i == 0 else None)
    fw_run = res.run(FLYWHEEL)
    if fw_run is not None:
        marks = {"promote": ("^", "tab:green"), "rollback": ("v", "tab:red"),
                 "retrain": ("o", "tab:blue")}
        y0 = ax.get_ylim()[0]
        for action, (m, col) in marks.items():
            xs = [e.row for e in fw_run.events if e.action == action]
            if xs:
                ax.scatter(xs, [y0] * len(xs), marker=m, color=col, zorder=4, clip_on=False,
                           label=f"flywheel {action}")
    ax.set_xlabel("stream row")
    ax.set_ylabel(f"accuracy (blocks of {block} rows)")
    ax.set_title(f"{res.case.name}: {res.case.title}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(suite: Suite, out: Path) -> dict[str, Path]:
    """Write ``scorecard.md``, ``scorecard.json`` and one PNG per case to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    plots = {}
    for res in suite.results:
        plot(res, out / f"{res.case.name}.png")
        plots[res.case.name] = f"{res.case.name}.png"
    md = out / "scorecard.md"
    md.write_text(markdown(suite, plots))
    js = out / "scorecard.json"
    js.write_text(json.dumps(to_json(suite), indent=2, default=_json_default))
    return {"markdown": md, "json": js}


def _json_default(o: object) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
