"""``/v1/incidents``: open incidents (or the most recent ones), and one incident in full."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Path, Query

from apps.api.errors import documented
from apps.api.models import SERVICE_NAME, IncidentsOut
from fleet.incidents import Incident, IncidentStore


def incidents_router(incidents: IncidentStore) -> APIRouter:
    """Read-only routes over the incident store."""
    router = APIRouter(prefix="/v1/incidents", tags=["incidents"])

    @router.get("", response_model=IncidentsOut, responses=documented(401, 422, 503))
    def list_incidents(
        status: Literal["open", "all"] = Query(
            "open", description="`open`: every non-terminal incident, oldest first; `all`: the "
                                "most recently opened, newest first."),
        service: str | None = Query(None, pattern=SERVICE_NAME, description="Only this one's."),
        limit: int = Query(50, ge=1, le=500, description="At most this many (`all` only)."),
    ) -> IncidentsOut:
        """Incidents, optionally of one service."""
        if status == "open":
            return IncidentsOut(incidents=incidents.open_incidents(service))
        return IncidentsOut(incidents=incidents.recent(limit, service))

    @router.get("/{incident_id}", response_model=Incident,
                responses=documented(401, 404, 422, 503))
    def get_incident(incident_id: str = Path(min_length=1, max_length=200)) -> Incident:
        """One incident: evidence, status, notes and its agent thread."""
        return incidents.get(incident_id)

    return router
