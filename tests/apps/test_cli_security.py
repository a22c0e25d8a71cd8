"""The CLI as a separate process: its decisions and acks record the OS user beside the
self-declared ``--user``, and a key-like id is one line and exit 1, reaching no key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.actions import ActionContext, ActionSpec
from fleet.approvals import ApprovalStore
from fleet.audit import Audit
from fleet.incidents import IncidentStore, Signal
from fleet.keys import Keys
from fleet.registry import ArtifactStore, Registry
from fleet.schema import FeatureSchema, Policy

REPO = Path(__file__).resolve().parents[2]
OS_USER = "os-account-7"
"""What getpass.getuser() returns in the child: it reads LOGNAME first."""


def _cli(*args: str, redis_url: str, keys: Keys, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(PYTHONPATH=str(REPO), REDIS_URL=redis_url, FLYWHEEL_PREFIX=keys.prefix,
               FLYWHEEL_HOME=str(home), LOGNAME=OS_USER)
    return subprocess.run([sys.executable, "-c", "from apps.cli import main; main()", *args],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=240)


@pytest.fixture()
def fleet(r, keys, clock, tmp_path: Path):
    audit = Audit(r, keys, clock)
    registry = Registry(r, keys, ArtifactStore(tmp_path / "artifacts"), clock=clock, audit=audit)
    registry.register_service("elec", task="classification", schema=FeatureSchema.numeric(["a"]),
                              policy=Policy(approvers=("alice",)))
    return (ApprovalStore(r, keys, audit=audit), IncidentStore(r, keys, audit=audit), audit)


def test_a_cli_approval_records_the_os_user_beside_user(fleet, redis_url, keys,
                                                       tmp_path: Path) -> None:
    approvals, _, audit = fleet
    req = approvals.request(
        ActionSpec(name="promote", service="elec", args={"version": 2}),
        ActionContext(incident="inc-1", actor="agent:deployment", reason="canary passed",
                      thread_id="inc-1"),
        Policy(approvers=("alice",)),
    )
    done = _cli("approvals", "approve", req.id, "--user", "alice", redis_url=redis_url, keys=keys,
                home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert approvals.decision(req.id).by == "alice"
    [entry] = audit.read(action_prefix="approval.approve")
    assert entry.actor == "alice"
    assert entry.details["os_user"] == OS_USER
    [asked] = audit.read(action_prefix="approval.request")
    assert "os_user" not in asked.details  # the agent's request was not made by the CLI


def test_a_cli_ack_records_the_os_user(fleet, redis_url, keys, clock, tmp_path: Path) -> None:
    _, incidents, audit = fleet
    inc = incidents.observe(Signal(service="elec", kind="performance_drop", severity="warning",
                                   detector="cusum", evidence={}, onset=1, version=1,
                                   at=clock.now()))
    assert inc is not None
    incidents.transition(inc.id, "escalated", actor="agent:supervisor", reason="needs a person")
    done = _cli("ack", inc.id, "--user", "alice", redis_url=redis_url, keys=keys, home=tmp_path)
    assert done.returncode == 0, done.stderr
    [entry] = [e for e in audit.read(action_prefix="incident.transition")
               if e.details.get("status") == "resolved"]
    assert entry.actor == "human:alice" and entry.details["os_user"] == OS_USER


def test_key_like_ids_on_the_command_line_are_one_line(fleet, r, redis_url, keys,
                                                       tmp_path: Path) -> None:
    approvals, _, _ = fleet
    req = approvals.request(
        ActionSpec(name="promote", service="elec", args={"version": 2}),
        ActionContext(incident="inc-1", actor="agent:deployment", reason="canary passed",
                      thread_id="inc-1"),
        Policy(approvers=("alice",)),
    )
    pointer = f"open:inc-1:{req.action_digest}"
    for args, what in ((("approvals", "approve", pointer, "--user", "alice"), "approval id"),
                       (("ack", "fp:{elec}:performance_drop", "--user", "alice"), "incident id"),
                       (("versions", "x}:y"), "service name"),
                       (("chat", "--thread", "x}:{y", "-m", "status"), "thread id")):
        done = _cli(*args, redis_url=redis_url, keys=keys, home=tmp_path)
        assert done.returncode == 1, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and f"invalid {what}" in lines[0], (args, done.stderr)
    assert r.type(keys.approval(pointer)) == "string"
    assert approvals.decision(req.id) is None
