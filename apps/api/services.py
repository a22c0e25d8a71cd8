"""``/v1/services``: what is registered, which version answers, and every version's record."""

from __future__ import annotations

from fastapi import APIRouter, Path

from apps.api.errors import documented
from apps.api.models import (
    SERVICE_NAME,
    ServiceDetail,
    ServicesOut,
    ServiceSummary,
    VersionOut,
)
from fleet.registry import Registry


def services_router(registry: Registry) -> APIRouter:
    """Read-only routes over the registry."""
    router = APIRouter(prefix="/v1/services", tags=["services"])

    @router.get("", response_model=ServicesOut, responses=documented(401, 503))
    def list_services() -> ServicesOut:
        """Every registered service with its champion, challenger and traffic mode."""
        out: list[ServiceSummary] = []
        for name in registry.services():
            s = registry.service(name)
            out.append(ServiceSummary(
                name=s.name, task=s.task, owner=s.owner, champion=s.champion,
                challenger=s.challenger, mode=s.mode, split=s.split, generation=s.generation,
                versions=len(registry.versions(name)),
            ))
        return ServicesOut(services=out)

    @router.get("/{svc}", response_model=ServiceDetail, responses=documented(401, 404, 422, 503))
    def get_service(svc: str = Path(pattern=SERVICE_NAME)) -> ServiceDetail:
        """One service: features, policy, pointers and every version (lineage, metrics)."""
        s = registry.service(svc)
        return ServiceDetail(
            name=s.name, task=s.task, owner=s.owner, champion=s.champion,
            challenger=s.challenger, previous=s.previous, mode=s.mode, split=s.split,
            generation=s.generation, created_at=s.created_at, features=list(s.schema_.features),
            policy=s.policy,
            versions=[VersionOut(number=v.number, status=v.status, metrics=v.metrics,
                                 parent=v.parent, created_by=v.created_by,
                                 created_at=v.created_at)
                      for v in registry.versions(svc)],
        )

    return router
