"""tests/fleet/test_retention.py run unchanged on the 3-master Redis Cluster."""

from tests.fleet.test_retention import *  # noqa: F403 (its tests and fixtures)
