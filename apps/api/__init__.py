"""The HTTP API (FastAPI): health, metrics, services, incidents, approvals, chat, telemetry."""

from apps.api.app import create_api, create_api_from_system
from apps.api.auth import ANONYMOUS
from apps.api.chat import Chat
from apps.api.metrics import Metrics

__all__ = ["ANONYMOUS", "Chat", "Metrics", "create_api", "create_api_from_system"]
