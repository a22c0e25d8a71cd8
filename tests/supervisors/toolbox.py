"""Two small tools shaped like the fleet's, so brain tests need nothing from tools/ or fleet/."""

from __future__ import annotations

from langchain_core.tools import tool
from pydantic import BaseModel, Field


@tool
def get_service_health(service: str) -> str:
    """Report a service's health: error rate, latency and accuracy of each live version.

    Args:
        service: Registered service name, e.g. "churn".
    """
    return f"{service}: healthy"


class RollbackArgs(BaseModel):
    """Arguments of rollback_version."""

    service: str = Field(description='Registered service name, e.g. "churn".')
    to_version: int = Field(ge=1, description="Version number to make champion again.")


@tool(args_schema=RollbackArgs)
def rollback_version(service: str, to_version: int) -> str:
    """Roll a service back to an earlier version at once (no approval needed)."""
    return f"{service} rolled back to v{to_version}"


TOOLS = [get_service_health, rollback_version]
