"""The kill drill (random SIGKILLs of the loop) against the 3-master Redis Cluster, unchanged."""

from tests.drills.test_kill_drill import *  # noqa: F403 (re-collected here, on the cluster)
