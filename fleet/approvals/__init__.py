"""Human approvals: immutable, digest-bound, expiring requests and their first-wins decisions."""

from fleet.approvals.records import ApprovalDecision, ApprovalRequest, Risk
from fleet.approvals.store import EXPIRED_BY, ApprovalStore

__all__ = ["EXPIRED_BY", "ApprovalDecision", "ApprovalRequest", "ApprovalStore", "Risk"]
