"""Model serving: champion/challenger routing with sticky hashing, shadow scoring, telemetry."""

from fleet.gateway.core import Gateway, Prediction
from fleet.gateway.routing import bucket, route

__all__ = ["Gateway", "Prediction", "bucket", "route"]
