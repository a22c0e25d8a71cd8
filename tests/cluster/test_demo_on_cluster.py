"""``flywheel demo`` against the 3-master Redis Cluster: in process, and as the real CLI process.

The in-process run is tests/apps/test_demo.py unchanged (12,000 rows: retrain, canary, approval,
promotion); the CLI run is a separate ``flywheel demo`` process given ``REDIS_URL=
redis+cluster://...`` (or one node's URL and ``FLYWHEEL_REDIS_CLUSTER=1``) on a shorter stream,
which must finish with its summary and leave the keys on the nodes their hash tags name.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from fleet.keys import Keys
from tests.apps.test_demo import (  # noqa: F401 (re-collected here, on the cluster)
    test_demo_supervises_retrains_promotes_and_plots,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("form", ["url", "flag"])
def test_flywheel_demo_cli_runs_on_a_cluster_url(form: str, r, redis_cluster, tmp_path: Path):
    prefix = f"democli{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "FLYWHEEL_PREFIX": prefix, "PYTHONPATH": str(ROOT),
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    if form == "url":  # redis+cluster://node1,node2,node3
        env["REDIS_URL"] = redis_cluster.url
    else:  # one node's plain URL and FLYWHEEL_REDIS_CLUSTER=1
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis_cluster.ports[2]}/0"
        env["FLYWHEEL_REDIS_CLUSTER"] = "1"
    env.pop("FLYWHEEL_MODEL", None)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", "from apps.cli import main; main()", "demo", "--rows",
             "6000", "--yes", "--out", str(tmp_path)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "flywheel demo — summary" in proc.stdout, proc.stdout[-3000:]
        keys = Keys(prefix)
        svc_node = r.get_node_from_key(keys.service("elec"))
        fleet_node = r.get_node_from_key(keys.audit)
        assert r.exists(keys.service("elec")) and r.xlen(keys.audit) > 0
        # The service's keys live where its tag says, the fleet's where theirs does.
        assert r.get_node_from_key(keys.telemetry("elec")) == svc_node
        assert r.get_node_from_key(keys.incidents_open) == fleet_node
    finally:
        found = list(r.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(found), 500):
            r.delete(*found[i:i + 500])
