"""A process SIGKILLed while a promotion waits for approval resumes in a new process, once.

The first process (``crash_child run``) replays concept drift until the incident graph stops at
the promotion's approval interrupt, then is killed with SIGKILL: no cleanup, no flush. A person
approves in Redis while nothing runs. A second, fresh process (``crash_child resume``) attaches to
the same Redis, and its driver resumes the thread from the Redis checkpoint (``RedisSaver``, the
one ``build_system`` wires): v2 is promoted exactly once and the incident is resolved; further
passes do nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fleet.approvals import ApprovalStore
from fleet.audit import Audit
from fleet.clock import ManualClock
from fleet.incidents import IncidentStore
from fleet.registry import ArtifactStore, Registry

REPO = Path(__file__).resolve().parents[2]
CHILD = "tests.e2e.crash_child"
READY_TIMEOUT_S = 180.0


def _spawn(*args: str) -> subprocess.Popen[str]:
    # Own session: the kill takes the child's trainer worker with it.
    return subprocess.Popen([sys.executable, "-m", CHILD, *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def _wait_ready(proc: subprocess.Popen[str], ready: Path) -> dict:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"first process exited {proc.returncode} early:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"no approval requested within {READY_TIMEOUT_S:g}s")
        time.sleep(0.2)
    return json.loads(ready.read_text())


def test_killed_between_approval_and_promotion_resumes_and_promotes_exactly_once(
        r, keys, redis_url: str, tmp_path: Path):
    """DESIGN §7: a crash and resume never deploys twice, and an approval is never lost."""
    artifacts, ready = tmp_path / "artifacts", tmp_path / "ready.json"
    first = _spawn("run", redis_url, keys.prefix, str(artifacts), str(ready))
    try:
        info = _wait_ready(first, ready)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL

    clock = ManualClock(info["now"])
    audit = Audit(r, keys, clock)
    registry = Registry(r, keys, ArtifactStore(artifacts), clock=clock, audit=audit)
    incidents = IncidentStore(r, keys, clock, audit)
    approvals = ApprovalStore(r, keys, clock, audit)
    req = approvals.get(info["approval_id"])
    assert (req.action.name, req.action.args) == ("promote", {"version": 2})
    assert incidents.get(info["incident"]).status.value == "awaiting_approval"
    assert registry.service("svc").champion == 1
    assert "registry.promote" not in [e.action for e in audit.read(service="svc", count=5000)][3:]

    approvals.decide(req.id, approve=True, by="oncall", reason="go", digest=req.action_digest)

    second = _spawn("resume", redis_url, keys.prefix, str(artifacts), repr(info["now"]), "3")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err[-3000:]
    passes = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    inc_id = info["incident"]
    assert passes[0]["resumed"] == [inc_id] and passes[0]["errors"] == {}
    assert passes[0]["outcomes"] == {inc_id: "done"}
    assert passes[1:] == [{"started": [], "resumed": [], "errors": {}, "outcomes": {}}] * 2

    svc = registry.service("svc")
    assert (svc.champion, svc.previous, svc.challenger) == (2, 1, None)
    trail = audit.read(service="svc", count=5000)
    promotes = [e for e in trail if e.action == "registry.promote"
                and int(e.details.get("version", -1)) == 2]
    assert len(promotes) == 1
    ops = [e.details.get("outcome") for e in trail if e.action == "ops.promote"]
    assert ops == ["done"]
    assert [e.action for e in trail].count("approval.request") == 1
    inc = incidents.get(inc_id)
    assert inc.status.value == "resolved", inc
    assert "v2" in inc.resolution
