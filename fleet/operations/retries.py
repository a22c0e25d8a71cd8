"""Retrying a failed training job within the service's policy, then failing with the error.

A job that fails (its fit raised, its worker died) is tried again at once while the service's
consecutive-failure count (kept by :class:`~fleet.actions.limits.Limits`, bumped by the gate on
each failure and cleared by a success) stays under ``policy.max_retrain_failures``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fleet.actions.limits import Limits
from fleet.errors import TrainingFailed
from fleet.schema import Policy

R = TypeVar("R")


def retry_training(attempt: Callable[[], R], limits: Limits, service: str, policy: Policy) -> R:
    """Run ``attempt`` (one guarded retrain); again after a :class:`TrainingFailed` while allowed.

    Each attempt's failure is counted and audited by the gate; its ledger record ends
    ``failed``, so the same write may run again in the same incident.

    Raises:
        TrainingFailed: every allowed attempt failed; the message starts with the last error
            and says to escalate to a person.
    """
    last: TrainingFailed | None = None
    for _ in range(max(1, policy.max_retrain_failures)):
        try:
            return attempt()
        except TrainingFailed as exc:
            last = exc
            if limits.should_escalate(service, "retrain", policy):
                break
    assert last is not None  # the loop ran at least once and only failures get here
    n = limits.failures(service, "retrain")
    raise TrainingFailed(
        f"{last} -- retrain of {service!r} failed {n} time(s) in a row, the most its policy "
        f"allows (max_retrain_failures={policy.max_retrain_failures}): escalate to a person "
        "with this error; further retrains are refused until one succeeds or the count is "
        "cleared"
    ) from last
