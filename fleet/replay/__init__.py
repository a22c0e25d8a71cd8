"""Traffic replay: stream a dataset through a gateway with delayed labels and scheduled faults."""

from fleet.replay.fault_store import RedisFaultSink, serving_faults
from fleet.replay.faults import Fault, FaultSchedule, ServingFault
from fleet.replay.replayer import Batch, BatchReport, Replayer, ReplayStats
from fleet.replay.targets import HttpTarget, Served, Target

__all__ = [
    "Batch",
    "BatchReport",
    "Fault",
    "FaultSchedule",
    "HttpTarget",
    "RedisFaultSink",
    "ReplayStats",
    "Replayer",
    "Served",
    "ServingFault",
    "Target",
    "serving_faults",
]
