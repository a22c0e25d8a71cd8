"""tests/fleet/test_registry.py run unchanged on the 3-master Redis Cluster."""

from tests.fleet.test_registry import *  # noqa: F403 (its tests and fixtures)
