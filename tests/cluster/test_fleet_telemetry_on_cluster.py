"""tests/fleet/test_telemetry.py run unchanged on the 3-master Redis Cluster."""

from tests.fleet.test_telemetry import *  # noqa: F403 (its tests and fixtures)
