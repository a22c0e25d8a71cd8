"""The checkpointer's tests (LangGraph's conformance suite included) against the Redis Cluster.

Every checkpoint transaction touches one thread, whose keys share the tag ``{thread}``.
"""

from tests.graphs.test_checkpointer import *  # noqa: F403 (re-collected here, on the cluster)
