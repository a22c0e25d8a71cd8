"""tests/fleet/test_approvals.py run unchanged on the 3-master Redis Cluster."""

from tests.fleet.test_approvals import *  # noqa: F403 (its tests and fixtures)
