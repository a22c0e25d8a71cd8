"""The limits of a service's events, read from the registry: versions, classes, label range.

Used where events arrive without a gateway's loaded models (the HTTP API's telemetry ingest).
A classifier's classes come from its schema's ``label`` spec when declared, else from the served
models (champion and challenger), loaded once per artifact and cached.
"""

from __future__ import annotations

from typing import Any

from fleet.clock import Clock, SystemClock
from fleet.errors import FleetError
from fleet.registry import Registry
from fleet.telemetry.limits import Limits, model_classes


class ServiceLimits:
    """Builds :class:`Limits` for a service from its record and versions."""

    def __init__(self, registry: Registry, *, clock: Clock | None = None):
        self.registry = registry
        self.clock = clock or SystemClock()
        self._classes: dict[tuple[str, int, str], frozenset[float] | None] = {}

    def __call__(self, service: str) -> Limits:
        """The limits of ``service`` now.

        Raises:
            UnknownService: ``service`` is not registered.
        """
        rec = self.registry.service(service)
        versions = {v.number: v for v in self.registry.versions(service)}
        spec = rec.schema_.label
        classes = frozenset(spec.classes) if spec is not None and spec.classes else None
        if classes is None and rec.task == "classification":
            known: set[float] = set()
            for n in (rec.champion, rec.challenger):
                if n is not None and n in versions:
                    known |= self._model_classes(service, n, versions[n].sha256) or set()
            classes = frozenset(known) or None
        return Limits(
            now=self.clock.now(), versions=frozenset(versions), classes=classes,
            label_min=spec.min if spec is not None else None,
            label_max=spec.max if spec is not None else None,
        )

    def _model_classes(self, service: str, number: int, sha: str) -> frozenset[float] | None:
        key = (service, number, sha)
        if key not in self._classes:
            try:
                model: Any = self.registry.load_model(service, number)
            except FleetError:
                # An artifact that cannot be loaded (refused, missing) is not served either;
                # labels are then only checked for being finite, and it is tried again next time.
                return None
            self._classes[key] = model_classes([model])
        return self._classes[key]
