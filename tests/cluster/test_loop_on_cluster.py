"""``flywheel run`` workers (separate processes) against the 3-master Redis Cluster.

tests/apps/test_loop.py unchanged: two workers split the shards and handle each incident once,
a killed worker's incidents are taken over, ``flywheel run`` itself handles an incident.
"""

from tests.apps.test_loop import *  # noqa: F403 (re-collected here, on the cluster)
