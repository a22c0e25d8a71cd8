"""Actions as data, their idempotency ledger, and the per-service limits they run under."""

from fleet.actions.ledger import ActionLedger, ActionRecord, ActionState, action_key
from fleet.actions.limits import COOLDOWN_EXEMPT, Lease, Limits
from fleet.actions.spec import ActionContext, ActionSpec, canonical_json

__all__ = [
    "COOLDOWN_EXEMPT",
    "ActionContext",
    "ActionLedger",
    "ActionRecord",
    "ActionSpec",
    "ActionState",
    "Lease",
    "Limits",
    "action_key",
    "canonical_json",
]
