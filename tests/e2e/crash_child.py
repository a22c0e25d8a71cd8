"""The processes of ``test_kill_resume``: one that gets killed, one that picks up after it.

``python -m tests.e2e.crash_child run <redis_url> <prefix> <artifacts> <ready_file>`` builds a
world, replays concept drift until the incident asks for approval to promote, writes
``ready_file`` (the simulated time and the pending approval) and then blocks, waiting to be
SIGKILLed. Training runs on a thread (no worker process to spawn or to outlive the kill).
``... resume <redis_url> <prefix> <artifacts> <now> <steps>`` attaches a fresh system
to the same Redis, runs ``steps`` driver passes and prints one JSON line per pass.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from evals.world import World, attach_world, make_world
from fleet.approvals import ApprovalRequest
from fleet.datasets import DriftStream, rotating_hyperplane
from fleet.schema import Policy
from fleet.store import connect

DRIFT = 4_000
SERVICE = "svc"
BLOCK_S = 300.0
"""How long the first process waits to be killed before giving up on its own."""


def stream() -> DriftStream:
    """The replayed traffic: one concept drift at row ``DRIFT``."""
    return rotating_hyperplane(14_000, drifts=[DRIFT], width=1, seed=3)


def run_until_approval(url: str, prefix: str, artifacts: Path, ready: Path) -> None:
    """Replay until an approval is pending, tell the test, then block until killed."""
    r = connect(url)
    holder: dict[str, World] = {}

    def human(req: ApprovalRequest) -> None:
        # Called after the driver pass that stopped at the interrupt: the checkpoint is stored.
        w = holder["world"]
        tmp = ready.with_suffix(".tmp")
        tmp.write_text(json.dumps({"now": w.clock.now(), "approval_id": req.id,
                                   "incident": req.incident, "digest": req.action_digest}))
        tmp.rename(ready)
        time.sleep(BLOCK_S)
        raise SystemExit("was not killed")

    # One round per incident (no stopgap stage): the test follows a single promotion.
    world = make_world(r, url, prefix=prefix, artifacts=artifacts, stream=stream(),
                       service=SERVICE, human=human, executor=ThreadPoolExecutor(1),
                       policy=Policy(stopgap_min_rise=None))
    holder["world"] = world
    world.run(2_000, 12_000)
    raise SystemExit("no approval was requested")


def resume(url: str, prefix: str, artifacts: Path, now: float, steps: int) -> None:
    """Attach to the state the killed process left and advance its incidents ``steps`` times."""
    r = connect(url)
    world = attach_world(r, url, prefix=prefix, artifacts=artifacts, stream=stream(), now=now,
                         service=SERVICE, executor=ThreadPoolExecutor(1))
    try:
        for _ in range(steps):
            rep = world.system.driver.step()
            out: dict[str, Any] = {
                "started": rep.started, "resumed": rep.resumed, "errors": rep.errors,
                "outcomes": {k: v.state for k, v in rep.outcomes.items()}}
            print(json.dumps(out), flush=True)
            world.clock.advance(5.0)
    finally:
        world.close()


def main(argv: list[str]) -> None:
    """Entry point; see the module docstring."""
    mode, url, prefix, artifacts = argv[:4]
    if mode == "run":
        run_until_approval(url, prefix, Path(artifacts), Path(argv[4]))
    elif mode == "resume":
        resume(url, prefix, Path(artifacts), float(argv[4]), int(argv[5]))
    else:
        raise SystemExit(f"unknown mode {mode!r}; use run or resume")


if __name__ == "__main__":
    main(sys.argv[1:])
