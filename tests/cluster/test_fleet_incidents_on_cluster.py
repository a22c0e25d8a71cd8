"""tests/fleet/test_incidents.py run unchanged on the 3-master Redis Cluster."""

from tests.fleet.test_incidents import *  # noqa: F403 (its tests and fixtures)
