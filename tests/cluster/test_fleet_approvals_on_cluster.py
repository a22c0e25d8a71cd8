"""tests/fleet/test_approvals.py, run unchanged against the 3-master Redis Cluster (see conftest)."""

from tests.fleet.test_approvals import *  # noqa: F403 (the module's tests and fixtures, re-collected here)
