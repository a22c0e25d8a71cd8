"""Eval scenarios: every case file loads, baselines behave as the issue says, small cases run.

The end-to-end runs use each case's ``quick`` size on the session's real Redis and assert on the
evidence the run leaves there (audit trail, incidents): no forbidden action, every expected one.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evals.baselines import oracle_points, run_baselines, setup
from evals.cases import ACTIONS, Case, load_case, load_cases
from evals.runner import finish, run_flywheel
from evals.scorers import Event, RowClock, SystemRun, audit_events, matches
from fleet.audit import AuditEntry
from fleet.errors import InvalidInput

REQUIRED = {
    "elec", "sea_abrupt", "sea_gradual", "hyperplane_incremental",
    "covariate_shift_no_concept_change", "data_corruption_one_feature", "worse_candidate",
    "bad_deploy_latency_errors", "approval_rejected", "approval_never_answered",
    "stationary_control",
}
SMOKE = ("stationary_control", "worse_candidate", "approval_rejected",
         "data_corruption_one_feature", "bad_deploy_latency_errors")
"""Cases run end to end here (quick sizes); the full suite is ``flywheel eval``."""


def test_every_shipped_case_loads_and_builds_both_sizes() -> None:
    cases = load_cases()
    assert {c.name for c in cases} >= REQUIRED
    for c in cases:
        for quick in (False, True):
            s = c.build_stream(quick=quick)
            assert len(s) > c.train_rows
            assert all(c.train_rows < p < len(s) for p in s.drift_points), (c.name, quick)
        assert c.forbid or c.expect, f"{c.name} checks nothing"


def test_synthetic_drifts_are_irregular() -> None:
    """Evenly spaced drifts would let periodic retraining match the oracle by luck."""
    for c in load_cases():
        gaps = np.diff(c.build_stream().drift_points)
        if len(gaps) > 1:
            assert len(set(gaps.tolist())) == len(gaps), (c.name, gaps)


@pytest.mark.parametrize(("patch", "message"), [
    ({"stream": {"generator": "sae", "rows": 100}}, "stream.generator: Input should be 'elec'"),
    ({"policy": {"rollout": "blue_green"}}, "rollout"),
    ({"forbid": [{"action": "deploy"}]}, "forbid.0.action: Input should be 'retrain'"),
    ({"forbid": [{"action": "retrain", "incident": "data_quality"}]}, "exactly one of"),
    ({"goals": ["match_oracle"]}, "needs the 'oracle' baseline"),
    ({"faults": [{"kind": "nulls", "start": 10, "feature": "x1", "params": {"p": 0.1}}]},
     r"inside the first model's training rows \[0, 2000\)"),
])
def test_a_bad_case_file_names_the_file_and_the_field(tmp_path: Path, patch: dict[str, Any],
                                                      message: str) -> None:
    import yaml

    raw = {"title": "t", "tier": "easy", "stream": {"generator": "stationary", "rows": 5000},
           "forbid": [{"action": "retrain"}]}
    raw.update(patch)
    folder = tmp_path / "07_broken"
    folder.mkdir()
    (folder / "case.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(InvalidInput, match=message) as info:
        load_case(folder)
    assert "07_broken/case.yaml" in str(info.value)


def test_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(InvalidInput, match=r"unknown scenario\(s\) \['sea'\]; known: .*sea_abrupt"):
        load_cases(["sea"])


def test_oracle_retrains_after_each_drift_and_again_when_a_gradual_drift_completes() -> None:
    case = Case.model_validate({
        "name": "g", "title": "t", "tier": "easy", "policy": {"min_rows_after_drift": 1000},
        "stream": {"generator": "sea", "rows": 20_000, "seed": 1, "params": {"width": 1500},
                   "drifts": {"count": 2, "min_gap": 6000}},
        "baselines": ["oracle"]})
    stream = case.build_stream()
    (p1, p2) = stream.drift_points
    assert oracle_points(setup(case, stream)) == [
        (p1 + 1000, p1), (p1 + 2500, p1 + 1500), (p2 + 1000, p2), (p2 + 2500, p2 + 1500)]


def test_detector_baselines_promote_the_worse_candidate_and_never_roll_back() -> None:
    """The issue's claim, measured: a plain detector trigger deploys what it trains."""
    case = load_cases(["worse_candidate"])[0]
    stream = case.build_stream(quick=True)
    runs = {r.system: r for r in run_baselines(case, stream, ["static", "adwin"])}
    assert runs["static"].events == []
    adwin = runs["ADWIN"]
    promote = next(r for r in case.forbid if r.action == "promote")
    assert matches(promote, adwin) >= 1, adwin.events
    assert adwin.count("rollback") == 0


def test_bad_deploy_baselines_serve_the_broken_version() -> None:
    case = load_cases(["bad_deploy_latency_errors"])[0]
    stream = case.build_stream(quick=True)
    (hddm,) = run_baselines(case, stream, ["hddm_a"])
    assert Event(hddm.events[1].row, "promote", 2) in hddm.events
    v2 = hddm.version == 2
    assert v2.any() and hddm.correct[v2].mean() < 0.6  # half of v2's requests fail


def test_audit_trail_becomes_scenario_actions_at_stream_rows() -> None:
    clock = RowClock()
    for t, row in ((100.0, 2100), (120.0, 2200), (140.0, 2300)):
        clock.mark(t, row)

    def entry(ts: float, action: str, actor: str = "agent:x", **d: Any) -> AuditEntry:
        return AuditEntry(id="0-0", ts=ts, actor=actor, action=action, service="svc",
                          reason="r", details=d)

    trail = [
        entry(90.0, "registry.promote", actor="eval", version=1),
        entry(120.0, "registry.add_version", version=2),
        entry(120.0, "ops.quarantine", outcome="refused"),
        entry(125.0, "registry.clear_challenger", challenger_before=2),
        entry(140.0, "incident.transition", status="escalated"),
    ]
    assert audit_events(trail, "svc", clock) == [
        Event(2200, "retrain", 2, "r"), Event(2200, "rollback", 2, "r"),
        Event(2300, "escalate", None, "r")]
    assert set(ACTIONS) >= {e.action for e in audit_events(trail, "svc", clock)}


def test_rules_count_only_inside_their_rows_and_any_status_an_incident_reached() -> None:
    from evals.cases import Rule
    from evals.scorers import IncidentRow

    run = SystemRun("flywheel", 2000, np.ones(10, dtype=bool), np.ones(10, dtype=np.int64),
                    [Event(5000, "promote", 2), Event(7000, "promote", 3),
                     Event(9000, "promote", 4)],
                    incidents=[IncidentRow("i1", 6000, "performance_drop", "resolved",
                                           ("investigating", "escalated", "resolved"))])
    assert matches(Rule(action="promote", from_row=6000, to_row=9000), run) == 1
    assert matches(Rule(action="promote", from_row=6000), run) == 2
    assert matches(Rule(action="promote", to_row=9001), run) == 3
    # Escalated, then closed by the on-call person: it still counts as escalated.
    assert matches(Rule(incident="performance_drop", status="escalated"), run) == 1
    assert matches(Rule(incident="performance_drop", status="failed"), run) == 0
    with pytest.raises(ValueError, match="to_row"):
        Rule(action="promote", from_row=6000, to_row=6000)


def test_quick_runs_expect_fewer_drift_actions_in_proportion() -> None:
    case = load_cases(["sea_abrupt"])[0]
    full = {r.label: r.min for r in case.expectations()}
    quick = {r.label: r.min for r in case.expectations(quick=True)}
    assert full == {"incident performance_drop": 3, "retrain": 3, "promote": 3}
    assert quick == {"incident performance_drop": 2, "retrain": 2, "promote": 2}  # 2 of 4 drifts


@pytest.fixture(scope="module")
def trainer_pool() -> Iterator[ProcessPoolExecutor]:
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    yield pool
    pool.shutdown(cancel_futures=True)


def test_seeded_goals_are_judged_over_every_seed_of_the_run() -> None:
    """A case that passes on its own seed fails when another draw of its stream misses."""
    from evals.runner import CaseResult, Suite
    from evals.scorecard import goals, markdown

    case = load_cases(["sea_abrupt"])[0]
    assert case.reseedable and case.seeds(3) == [11, 12, 13]
    assert case.reseeded(12).stream.points(22_000) != case.stream.points(22_000)
    assert not load_cases(["elec"])[0].reseedable and load_cases(["elec"])[0].seeds(3) == [0]
    assert case.seed_baselines() == ["oracle"]

    def run(system: str, right: int, retrains: int, start: int = 2_000) -> SystemRun:
        correct = np.arange(1_000) < right  # hand-written: `right` of 1,000 rows answered well
        events = [Event(start + 100 * k, "retrain", k + 2) for k in range(retrains)]
        return SystemRun(system, start, correct, np.ones(1_000, dtype=np.int64), events,
                         kind="flywheel" if system == "flywheel" else "baseline")

    def result(seed: int, fw_right: int, fw_retrains: int) -> CaseResult:
        c = case.reseeded(seed)
        stream = c.build_stream(quick=True)
        return finish(c, stream, [run("flywheel", fw_right, fw_retrains),
                                  run("oracle", 900, 4)], quick=True)

    def verdicts(res: CaseResult) -> dict[str, tuple[bool, str]]:
        return {g.goal: (g.passed, g.value) for g in goals(res)}

    one = result(11, 895, 4)
    alone = verdicts(one)
    assert alone["accuracy >= 0.99 x oracle"] == (True, "0.8950 / 0.9000 = 0.9944")
    assert alone["retrains <= 1.2 x oracle"] == (True, "4 vs oracle 4")

    # seed 12 loses accuracy, seed 13 retrains twice as often: pooled, both goals fail
    one.replicas = [result(12, 860, 4), result(13, 900, 8)]
    pooled = verdicts(one)
    assert pooled["accuracy >= 0.99 x oracle"] == (
        False, "3 seeds: 0.8850 / 0.9000 = 0.9833 (seeds 0.9944, 0.9556, 1.0000)")
    assert pooled["retrains <= 1.2 x oracle"] == (
        False, "3 seeds: 16 vs oracle 12 (seeds 4/4, 4/4, 8/4)")
    md = markdown(Suite([one], 1.0, None, True, 3))
    assert "| 13 | " in md and "| 0.9000 | 0.9000 | 1.0000 | 8 | 4 |" in md

    one.replicas[1].runs.pop(0)  # flywheel crashed on seed 13
    one.replicas[1].scores.pop(0)
    one.replicas[1].error = "RuntimeError: boom"
    assert verdicts(one) == {"flywheel ran": (False, "seed 13: RuntimeError: boom")}


@pytest.mark.slow
@pytest.mark.eval
@pytest.mark.parametrize("name", SMOKE)
def test_small_scenario_end_to_end_takes_the_intended_action_and_nothing_forbidden(
        name: str, r, redis_url: str, keys, tmp_path: Path,
        trainer_pool: ProcessPoolExecutor) -> None:
    case = load_cases([name])[0]
    stream = case.build_stream(quick=True)
    run: SystemRun = run_flywheel(case, stream, r, redis_url, executor=trainer_pool,
                                  artifacts=tmp_path, prefix=keys.prefix)
    score = finish(case, stream, [run], quick=True).scores[0]
    trail = [(e.row, e.action, e.version) for e in run.events]
    assert score.wrong_actions == 0, f"forbidden: {score.wrong}; trail {trail}"
    assert score.handled, f"missing: {score.missing}; trail {trail}; incidents {run.incidents}"


@pytest.mark.slow
@pytest.mark.eval
def test_flywheel_eval_writes_the_scorecard_with_goals(tmp_path: Path, redis_url: str) -> None:
    """``flywheel eval --scenario stationary_control --quick`` end to end, on the test Redis."""
    import io
    import json

    from rich.console import Console

    from apps.eval_cmd import failures, run_eval
    from apps.settings import Settings

    out = io.StringIO()
    suite = run_eval(Settings(REDIS_URL=redis_url), Console(file=out, width=200),
                     scenarios=["stationary_control"], out=tmp_path, model=None, quick=True,
                     seeds=2)
    card = json.loads((tmp_path / "scorecard.json").read_text())
    verdicts = {g["goal"]: g["verdict"] for g in card["goals"]}
    assert verdicts == {"no retrain": "PASS", "no forbidden action": "PASS",
                        "intended action happened": "PASS"}
    systems = [s["system"] for s in card["cases"][0]["scores"]]
    assert systems == ["flywheel", "static", "ADWIN", "HDDM_A"]
    # the second draw of the stream runs flywheel only (no_retrain needs no baseline)
    assert [(x["seed"], [s["system"] for s in x["scores"]]) for x in card["cases"][0]["seeds"]
            ] == [(41, systems), (42, ["flywheel"])]
    assert (tmp_path / "stationary_control.png").stat().st_size > 10_000
    assert "| stationary_control | no retrain | 2 seeds: 0 | 0 | **PASS** |" in (
        tmp_path / "scorecard.md").read_text()
    assert "flywheel" in out.getvalue() and suite.results[0].error == ""
    assert failures(suite) == ([], [])
    suite.results[0].error = "RuntimeError: boom"  # what the runner records for a crashed run
    assert failures(suite) == (["stationary_control"], [])
