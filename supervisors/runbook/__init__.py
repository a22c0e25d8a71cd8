"""The runbook brain: a deterministic chat model that emits the runbook's tool calls."""

from supervisors.runbook.brain import RunbookChatModel, runbook_brain

__all__ = ["RunbookChatModel", "runbook_brain"]
