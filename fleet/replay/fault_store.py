"""The Redis edge of serving faults: the replayer writes them, any gateway reads them.

Hash ``keys.faults(svc)``: field = a version number as a string, or ``"challenger"``; value =
JSON ``{"latency_ms": float, "error_rate": float}``. A field exists only while its fault is on.
"""

from __future__ import annotations

import logging

import redis

from fleet.keys import Keys
from fleet.replay.faults import ServingFault

__all__ = [
    "RedisFaultSink",
    "ServingFault",
    "clear_serving_fault",
    "clear_serving_faults",
    "fault_field",
    "serving_faults",
    "set_serving_fault",
]

log = logging.getLogger(__name__)


def fault_field(version: int | str) -> str:
    """Hash field for a version: its number as a string, or ``"challenger"``.

    >>> fault_field(3), fault_field("challenger")
    ('3', 'challenger')
    """
    return "challenger" if version == "challenger" else str(int(version))


def set_serving_fault(
    r: redis.Redis, keys: Keys, svc: str, version: int | str, fault: ServingFault
) -> None:
    """Turn on (or replace) the serving fault of one version of ``svc``."""
    r.hset(keys.faults(svc), fault_field(version), fault.to_json())


def clear_serving_fault(r: redis.Redis, keys: Keys, svc: str, version: int | str) -> None:
    """Turn off the serving fault of one version of ``svc`` (no-op if none is set)."""
    r.hdel(keys.faults(svc), fault_field(version))


def clear_serving_faults(r: redis.Redis, keys: Keys, svc: str) -> None:
    """Turn off every serving fault of ``svc``."""
    r.delete(keys.faults(svc))


def serving_faults(r: redis.Redis, keys: Keys, svc: str) -> dict[str, ServingFault]:
    """Return the serving faults now on for ``svc``, by field (``"3"``, ``"challenger"``).

    Works with decoding and non-decoding clients. A malformed value is skipped with a warning:
    a broken fault injection must never stop a gateway from serving.
    """
    out: dict[str, ServingFault] = {}
    for field, raw in r.hgetall(keys.faults(svc)).items():
        name = field.decode() if isinstance(field, bytes) else str(field)
        try:
            out[name] = ServingFault.from_json(raw)
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring malformed serving fault %s[%s]=%r: %s",
                        keys.faults(svc), name, raw, exc)
    return out


class RedisFaultSink:
    """A replayer ``fault_sink`` that writes serving faults to Redis for the gateway to pick up."""

    def __init__(self, r: redis.Redis, keys: Keys):
        self.r = r
        self.keys = keys

    def __call__(self, service: str, field: str, fault: ServingFault | None) -> None:
        """Set ``field``'s fault on ``service``, or clear it when ``fault`` is None."""
        if fault is None:
            clear_serving_fault(self.r, self.keys, service, field)
        else:
            set_serving_fault(self.r, self.keys, service, field, fault)
