"""The guarded executor: every write the agents make on the fleet, with approvals and limits."""

from fleet.operations.gate import Gate, Leases, Write
from fleet.operations.operations import Operations
from fleet.operations.results import DeployResult, QuarantineResult, RetrainResult

__all__ = [
    "DeployResult",
    "Gate",
    "Leases",
    "Operations",
    "QuarantineResult",
    "RetrainResult",
    "Write",
]
