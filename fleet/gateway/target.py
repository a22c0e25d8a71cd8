"""The in-process replay target: calls the gateway core directly (no HTTP), for evals and demos."""

from __future__ import annotations

from typing import Any

from fleet.gateway.core import Gateway
from fleet.replay.targets import Row, Served


class DirectTarget:
    """A ``fleet.replay.targets.Target`` over a :class:`Gateway` in the same process."""

    def __init__(self, gateway: Gateway, *, flush: bool = True):
        self.gateway = gateway
        self.flush = flush

    def predict(self, service: str, rows: list[Row], request_ids: list[str]) -> list[Served]:
        """Score a batch; telemetry is flushed per batch so monitors see it at once."""
        out = self.gateway.predict(service, rows, request_ids)
        if self.flush:
            self.gateway.flush()
        return [
            {"request_id": p.request_id, "version": p.version, "prediction": p.prediction,
             "error": p.error}
            for p in out
        ]

    def feedback(self, service: str, labels: list[tuple[str, Any]]) -> int:
        """Record labels; return how many were accepted."""
        res = self.gateway.feedback(
            service, [{"request_id": rid, "label": y} for rid, y in labels]
        )
        return res.accepted
