"""``/v1/telemetry/{svc}``: ingest predictions and labels produced outside the gateway.

The events are untrusted: each one is validated, the good ones appended to the service's stream,
the bad ones put on the dead-letter stream with the reason (the monitor counts those as a data
quality signal). The response says how many went where, and the first reasons.
"""

from __future__ import annotations

from fastapi import APIRouter, Path

from apps.api.errors import documented
from apps.api.models import SERVICE_NAME, IngestOut, LabelsIn, PredictionsIn
from fleet.gateway.limits import ServiceLimits
from fleet.registry import Registry
from fleet.telemetry import TelemetryWriter
from fleet.telemetry.writer import IngestResult

Service = Path(pattern=SERVICE_NAME, description="A registered service.")


def telemetry_router(registry: Registry, writer: TelemetryWriter) -> APIRouter:
    """Ingest routes; events of unregistered services are refused (404), not dead-lettered."""
    router = APIRouter(prefix="/v1/telemetry", tags=["telemetry"])
    limits = ServiceLimits(registry, clock=writer.clock)

    def out(res: IngestResult) -> IngestOut:
        return IngestOut(accepted=res.accepted, rejected=res.rejected, reasons=res.reasons)

    @router.post("/{svc}/predictions", response_model=IngestOut,
                 responses=documented(400, 401, 404, 422, 503))
    def ingest_predictions(body: PredictionsIn, svc: str = Service) -> IngestOut:
        """Append prediction events.

        Each needs one feature value per schema feature, a version of the service, and a time,
        request id, latency and prediction within the limits (README "Bad input").
        """
        n_features = len(registry.service(svc).schema_.features)
        return out(writer.ingest_predictions(svc, body.events, n_features, limits(svc)))

    @router.post("/{svc}/labels", response_model=IngestOut,
                 responses=documented(400, 401, 404, 422, 503))
    def ingest_labels(body: LabelsIn, svc: str = Service) -> IngestOut:
        """Append ground-truth labels, matched to predictions by request id."""
        return out(writer.ingest_labels(svc, body.labels, limits(svc)))  # 404 if unknown

    return router
