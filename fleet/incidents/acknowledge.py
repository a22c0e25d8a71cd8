"""A person's acknowledgement of an escalated incident: close it and keep the current model.

By default the agents may act again (a performance alarm that still holds opens a new incident
once the cooldown ends). With ``accept`` the person also accepts the champion's current error:
the monitor re-baselines its performance alarm, so the same drift is not raised again and the
next change is measured (and dated) from here; a later change that leaves the error below the
accepted level then goes unflagged, which is why it is a choice and not the default.
"""

from __future__ import annotations

from fleet.errors import InvalidInput, PolicyViolation
from fleet.incidents.lifecycle import Status
from fleet.incidents.records import Incident
from fleet.incidents.store import IncidentStore
from fleet.registry import Registry

ACK_REASON = "acknowledged: keep the current model; the agents may act again"


def acknowledge(incidents: IncidentStore, registry: Registry, incident_id: str, *, user: str,
                reason: str = ACK_REASON, accept: bool = False) -> Incident:
    """Resolve the escalated incident ``incident_id`` on behalf of ``user``.

    With ``accept`` (performance incidents) the acceptance is recorded before the close: a
    crash in between leaves the incident escalated (its fingerprint still held), never a closed
    drift the monitor raises again.

    Raises:
        UnknownIncident: no incident has that id.
        InvalidInput: the incident is not escalated (the agents still own it, or it is closed).
        PolicyViolation: ``user`` is not one of the service's approvers (accepting a worse
            model is a decision, like an approval).
    """
    inc = incidents.get(incident_id)
    if inc.status is not Status.ESCALATED:
        raise InvalidInput(f"incident {incident_id} is {inc.status.value}, not escalated; only "
                           "an escalated incident can be acknowledged")
    approvers = registry.service(inc.service).policy.approvers
    if user not in approvers:
        raise PolicyViolation(f"{user!r} may not acknowledge incidents of {inc.service!r}; "
                              f"approvers: {', '.join(approvers)}")
    actor = f"human:{user}"
    if accept and inc.kind == "performance_drop":
        registry.accept_performance(inc.service, actor=actor,
                                    reason=f"{incident_id} acknowledged: {reason}")
    return incidents.transition(incident_id, Status.RESOLVED, actor=actor, reason=reason)
