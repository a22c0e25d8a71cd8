"""The HTTP API's tests (auth, approvals, incidents, gateway, ingest, metrics) on the cluster."""

from tests.apps.test_api import *  # noqa: F403 (its tests and fixtures)
