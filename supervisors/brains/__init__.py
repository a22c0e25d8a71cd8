"""The chat models the agents think with: an LLM through litellm, guarded, or the runbook brain."""

from supervisors.brains.config import ROLES, BrainConfig
from supervisors.brains.fallback import GuardedBrain
from supervisors.brains.litellm_brain import make_brain
from supervisors.brains.usage import (
    NO_INCIDENT,
    RUNBOOK_TAG,
    Fallback,
    FallbackReason,
    Usage,
    UsageTracker,
    incident_id_of,
)

__all__ = [
    "NO_INCIDENT",
    "ROLES",
    "RUNBOOK_TAG",
    "BrainConfig",
    "Fallback",
    "FallbackReason",
    "GuardedBrain",
    "Usage",
    "UsageTracker",
    "incident_id_of",
    "make_brain",
]
