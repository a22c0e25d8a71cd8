"""The agents: supervisor and specialists, and their brains (litellm or the runbook brain)."""
