"""``flywheel run`` logs one line per incident transition, retrain, promotion, rollback and
escalation, with a timestamp and a level: JSON by default, text with ``--log-format text``.

The loop runs as a real process against the test Redis; the lines are read from its stderr.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from apps.runtime import build_fleet
from fleet.approvals import ApprovalStore
from fleet.clock import SystemClock
from fleet.incidents import IncidentStore
from tests.drills.harness import Case, answer_pending, open_incident, seed_case, tiny_model

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 90.0


def _start(redis_url: str, prefix: str, home: Path, log: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "REDIS_URL": redis_url, "FLYWHEEL_PREFIX": prefix,
           "FLYWHEEL_HOME": str(home), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("FLYWHEEL_MODEL", None)
    env.pop("FLYWHEEL_LOG_FORMAT", None)
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-c", "from apps.cli import main; main()", "run",
                                 "--shards", "2", "--interval", "0.2", *extra], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=out)


def _until(pred: Any, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not pred():
        assert proc.poll() is None, f"flywheel run exited: {log.read_text()[-3000:]}"
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {log.read_text()[-3000:]}")
        time.sleep(0.1)


def _started(proc: subprocess.Popen, log: Path) -> None:
    """Wait for the loop's start line: entries written before it are not the loop's to log."""
    _until(lambda: "loop.start" in log.read_text(), "the loop to start", proc, log)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0


@pytest.mark.slow
def test_run_logs_each_transition_retrain_promotion_rollback_and_escalation_once_as_json(
        r, keys, redis_url, tmp_path: Path) -> None:
    fleet = build_fleet(r, redis_url, prefix=keys.prefix, artifacts=tmp_path / "artifacts",
                        clock=SystemClock())
    store = IncidentStore(r, keys, fleet.clock, fleet.audit)
    approvals = ApprovalStore(r, keys, fleet.clock, fleet.audit)
    model = tiny_model()
    cases = [Case("lat", "rollback_approval"), Case("rej", "rollback_approval", answer="reject"),
             Case("one", "retrain_promote")]
    for c in cases:
        seed_case(fleet, c, model)
    log = tmp_path / "run.log"
    proc = _start(redis_url, keys.prefix, tmp_path, log)
    try:
        _started(proc, log)
        ids = {c.service: open_incident(store, fleet.clock, c) for c in cases}
        answers = {c.service: c.answer for c in cases}

        def settled() -> bool:
            answer_pending(approvals, answers)
            return (store.get(ids["lat"]).status.value == "resolved"
                    and store.get(ids["rej"]).status.value == "escalated"
                    and fleet.registry.service("one").challenger == 2)

        _until(settled, "the rollback, the escalation and the retrain", proc, log)
        # A promotion made by another process is logged by the worker owning the service.
        fleet.registry.promote("one", 2, actor="human:test", reason="promoted by hand")
        _until(lambda: "registry.promote" in log.read_text().split("initial model")[-1],
               "the promotion's line", proc, log)
    finally:
        _stop(proc)

    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    assert lines and all({"ts", "level", "logger"} <= set(x) for x in lines)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", x["ts"])
               for x in lines)
    events = [x for x in lines if x["logger"] == "flywheel.events"]

    def one(event: str, service: str) -> dict[str, Any]:
        found = [x for x in events if x["event"] == event and x["service"] == service]
        assert len(found) == 1, (event, service, found)
        return found[0]

    # Every audit entry written while the loop ran is logged, exactly once.
    logged = [x["audit_id"] for x in events]
    assert len(logged) == len(set(logged))
    written = {e.id for e in fleet.audit.read(count=10_000) if e.actor != "drill"}
    assert set(logged) == written
    for svc in ("lat", "rej", "one"):
        assert one("incident.open", svc)["incident"] == ids[svc]
        assert next(x["previous"] for x in events if x["event"] == "incident.investigating"
                and x["service"] == svc) == "open"
    assert one("incident.resolved", "lat")["level"] == "INFO"
    escalated = one("incident.escalated", "rej")
    assert escalated["level"] == "WARNING" and escalated["incident"] == ids["rej"]
    assert one("registry.rollback", "lat")["actor"].startswith("agent:")
    retrain = one("ops.retrain", "one")
    assert retrain["incident"] == ids["one"] and retrain["outcome"] == "done"
    assert one("registry.promote", "one")["actor"] == "human:test"
    # Set-up writes made before the loop started are not replayed into its log.
    assert not [x for x in events if x["actor"] == "drill"]


def test_run_log_format_text_shows_time_level_and_fields(r, keys, redis_url,
                                                        tmp_path: Path) -> None:
    fleet = build_fleet(r, redis_url, prefix=keys.prefix, artifacts=tmp_path / "artifacts",
                        clock=SystemClock())
    store = IncidentStore(r, keys, fleet.clock, fleet.audit)
    case = Case("cov", "watch_drift")
    seed_case(fleet, case, tiny_model())
    log = tmp_path / "run.log"
    proc = _start(redis_url, keys.prefix, tmp_path, log, "--log-format", "text")
    try:
        _started(proc, log)
        iid = open_incident(store, fleet.clock, case)
        _until(lambda: "incident.open service=cov" in log.read_text(), "the open line", proc, log)
    finally:
        _stop(proc)
    [line] = [x for x in log.read_text().splitlines() if " incident.open " in x]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 INFO +flywheel\.events "
                    r"incident\.open service=cov ", line), line
    assert f"incident={iid}" in line
    assert not [x for x in log.read_text().splitlines() if x.startswith("{")]
