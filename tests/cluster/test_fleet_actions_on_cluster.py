"""tests/fleet/test_actions.py run unchanged on the 3-master Redis Cluster."""

from tests.fleet.test_actions import *  # noqa: F403 (its tests and fixtures)
