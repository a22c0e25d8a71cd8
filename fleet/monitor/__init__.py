"""The monitor: incremental per-service aggregates, a vectorised tick that raises incidents.

Also the read facade the agents' tools call (:mod:`fleet.monitor.service`).
"""

from fleet.monitor.aggregates import AGG_SCHEMA, ServiceAgg
from fleet.monitor.config import MonitorConfig, detector_config
from fleet.monitor.service import MonitorService
from fleet.monitor.state_store import MonitorStateStore
from fleet.monitor.tick import MONITORED, Monitor, TickReport

__all__ = [
    "AGG_SCHEMA",
    "MONITORED",
    "Monitor",
    "MonitorConfig",
    "MonitorService",
    "MonitorStateStore",
    "ServiceAgg",
    "TickReport",
    "detector_config",
]
