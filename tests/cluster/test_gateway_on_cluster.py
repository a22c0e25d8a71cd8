"""The serving gateway's tests (buffered telemetry, reloads, live HTTP server) on the cluster."""

from tests.fleet.test_gateway import *  # noqa: F403 (its tests and fixtures)
