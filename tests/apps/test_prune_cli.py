"""``flywheel prune`` as a separate process against a real Redis: dry run counts, a real run
removes a long-closed incident and archives the old audit under FLYWHEEL_HOME, an open incident
keeps every key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fleet.incidents.lifecycle import Status
from tests.fleet.test_retention import _World


def _flywheel(args: list[str], redis_url: str, prefix: str, home: Path,
             **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "REDIS_URL": redis_url, "FLYWHEEL_PREFIX": prefix,
           "FLYWHEEL_HOME": str(home), "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           "COLUMNS": "200", **extra_env}
    return subprocess.run([sys.executable, "-c", "from apps.cli import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=120)


def test_flywheel_prune_removes_a_long_closed_incident_and_archives_the_audit(
        r, redis_url, keys, clock, tmp_path):
    # The fleet clock here is simulated (2023); the command runs on the real clock, so every
    # default window (1, 30 and 90 days) has passed for what closed then.
    world = _World(r, redis_url, keys, clock)
    open_id, _, _ = world.incident("keep")
    open_keys = world.all_keys()
    closed_id, apr, act = world.incident("gone")
    world.incidents.transition(closed_id, Status.RESOLVED, actor="test", reason="fixed")
    audit_len = r.xlen(keys.audit)

    dry = _flywheel(["prune", "--dry-run"], redis_url, keys.prefix, tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert f"would remove: 1 closed incident(s): {closed_id}" in dry.stdout
    assert r.exists(keys.incident(closed_id)) and r.xlen(keys.audit) == audit_len

    done = _flywheel(["prune"], redis_url, keys.prefix, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"removed: 1 closed incident(s): {closed_id}" in done.stdout
    assert "removed: 1 approval(s), 2 pointer(s), 1 idempotency record(s)" in done.stdout
    assert not r.exists(keys.incident(closed_id), keys.approval(apr), act)
    assert closed_id not in world.threads.key_counts()
    assert open_keys - {keys.audit} <= world.all_keys()
    assert open_id in world.threads.key_counts()
    archived = [json.loads(line) for f in sorted((tmp_path / "audit").glob("audit-*.jsonl"))
                for line in f.read_text().splitlines()]
    assert len(archived) == audit_len and r.xlen(keys.audit) == 0
    assert {e["action"] for e in archived} >= {"incident.open", "approval.approve"}


def test_flywheel_run_applies_retention_on_its_first_pass(r, redis_url, keys, clock, tmp_path):
    world = _World(r, redis_url, keys, clock)
    closed_id, _, _ = world.incident("gone")
    world.incidents.transition(closed_id, Status.RESOLVED, actor="test", reason="fixed")
    done = _flywheel(["run", "--once"], redis_url, keys.prefix, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "pruned" in done.stdout
    assert not r.exists(keys.incident(closed_id))
    assert r.hget(keys.retention, "ran_at_real") is not None
    later_id, _, _ = world.incident("later")
    world.incidents.transition(later_id, Status.RESOLVED, actor="test", reason="fixed")
    again = _flywheel(["run", "--once"], redis_url, keys.prefix, tmp_path)
    assert again.returncode == 0, again.stderr
    assert r.exists(keys.incident(later_id)), "a pass within the interval must not prune"


def test_inside_its_window_a_pruned_incident_is_still_listed_by_flywheel_incidents(
        r, redis_url, keys, clock, tmp_path):
    world = _World(r, redis_url, keys, clock)
    closed_id, _, _ = world.incident("gone")
    world.incidents.transition(closed_id, Status.RESOLVED, actor="test", reason="fixed it")
    long = {"FLYWHEEL_RETENTION_INCIDENT_KEEP_S": "1e12",
            "FLYWHEEL_RETENTION_APPROVAL_KEEP_S": "1e12",
            "FLYWHEEL_RETENTION_ACTION_KEEP_S": "1e12"}
    done = _flywheel(["prune"], redis_url, keys.prefix, tmp_path, **long)
    assert done.returncode == 0, done.stderr
    assert "removed: 1 checkpoint thread(s)" in done.stdout
    assert "removed: 0 closed incident(s)" in done.stdout
    assert closed_id not in world.threads.key_counts()
    listed = _flywheel(["incidents", "--all"], redis_url, keys.prefix, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert closed_id in listed.stdout and "resolved" in listed.stdout
