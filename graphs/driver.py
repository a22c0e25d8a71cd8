"""One pass over open incidents: start new threads, resume decided approvals and due waits.

The background loop calls :meth:`Driver.step` after each monitor tick; evals call it in simulated
time. Overdue approvals are expired first (auto-deny), so their threads resume with the denial and
the supervisor escalates. An optional ``claim`` guards each incident (a Redis lease in the loop),
so two processes never work the same incident at once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import redis

from fleet.approvals import ApprovalStore
from fleet.clock import Clock
from fleet.incidents import IncidentStore
from fleet.incidents.lifecycle import Status
from graphs.runner import IncidentRunner, RunOutcome

log = logging.getLogger(__name__)

Claim = Callable[[str], AbstractContextManager[bool]]
"""``claim(incident_id)`` yields True when this process may work the incident now."""
Notify = Callable[[str, dict[str, Any]], None]
"""``notify(event, payload)``: tell people (Slack, a webhook) about an incident event."""


@contextlib.contextmanager
def always(_: str) -> Iterator[bool]:
    """The claim of a single process: always granted."""
    yield True


@dataclass
class StepReport:
    """What one driver pass did."""

    started: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    outcomes: dict[str, RunOutcome] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class Driver:
    """Moves every open incident's thread forward as far as it can go now."""

    def __init__(
        self,
        runner: IncidentRunner,
        *,
        incidents: IncidentStore,
        approvals: ApprovalStore,
        clock: Clock,
        claim: Claim = always,
        owns: Callable[[str], bool] = lambda service: True,
        notify: Notify | None = None,
    ):
        self.runner = runner
        self.incidents = incidents
        self.approvals = approvals
        self.clock = clock
        self.claim = claim
        self.owns = owns
        self.notify = notify

    def step(self) -> StepReport:
        """Expire overdue approvals, then advance every open incident this process owns."""
        rep = StepReport()
        rep.expired = [req.id for req in self.approvals.expire_overdue()]
        for inc in self.incidents.open_incidents():
            if not self.owns(inc.service):
                continue
            with self.claim(inc.id) as mine:
                if not mine:
                    continue
                try:
                    self._advance(inc.id, rep)
                except (redis.ConnectionError, redis.TimeoutError):
                    raise  # infrastructure: the loop backs off and retries; nothing is lost
                except Exception as exc:  # one broken thread must not stop the others
                    log.exception("incident %s failed", inc.id)
                    rep.errors[inc.id] = f"{type(exc).__name__}: {exc}"[:300]
                    self._fail(inc.id, rep.errors[inc.id])
        return rep

    def _advance(self, incident_id: str, rep: StepReport) -> None:
        out = self.runner.status(incident_id)
        if out.state in ("new", "stalled"):
            rep.started.append(incident_id)
            out = self.runner.start(incident_id)
        elif out.state == "awaiting_approval":
            for aid in out.approval_ids:
                if self.approvals.decision(aid) is not None:
                    rep.resumed.append(incident_id)
                    out = self.runner.resume_decision(incident_id, aid)
                    break
        elif out.state == "waiting" and out.until is not None and out.until <= self.clock.now():
            rep.resumed.append(incident_id)
            out = self.runner.resume_tick(incident_id)
        rep.outcomes[incident_id] = out

    def _fail(self, incident_id: str, why: str) -> None:
        """Mark the incident ``failed`` and tell people: an audit entry always, ``notify`` too.

        A failed incident has nobody working on it any more, so it must never end silently.
        """
        inc = self.incidents.get(incident_id)
        if not inc.status.terminal:
            with contextlib.suppress(Exception):
                inc = self.incidents.transition(incident_id, Status.FAILED, actor="system:loop",
                                                reason=f"incident graph failed: {why}")
        if inc.status != Status.FAILED:
            return
        payload = {"incident": inc.id, "service": inc.service, "kind": inc.kind,
                   "status": inc.status.value, "error": why}
        self.incidents.audit.record("system:loop", "incident.failed", service=inc.service,
                                    reason=f"incident graph failed: {why}", incident=inc.id,
                                    error=why)
        if self.notify is not None:
            try:
                self.notify("incident.failed", payload)
            except Exception:  # a notifier outage must not hide the failure: it is audited
                log.exception("notifying incident.failed for %s failed", inc.id)
