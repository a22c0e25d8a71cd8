"""tests/fleet/test_registry.py, run unchanged against the 3-master Redis Cluster (see conftest)."""

from tests.fleet.test_registry import *  # noqa: F403 (the module's tests and fixtures, re-collected here)
