"""Telemetry event records, their compact JSON encoding, and validation of untrusted events.

Encoding (one stream field ``d`` holding compact JSON, so one XADD carries one event):

- prediction: ``{"ts": s, "rid": str, "ver": int, "x": [float|null, ...], "p": number|null,
  "lat": ms, "err": str|null, "sh": 0|1}`` (``sh`` = scored in shadow, not answered);
- label: ``{"ts": s, "rid": str, "y": number}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from fleet.errors import InvalidInput
from fleet.telemetry.limits import MAX_RID, Limits, finite, request_id, summarise

_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
__all__ = ["MAX_RID", "MAX_VERSION", "LabelEvent", "PredictionEvent", "validate_label",
           "validate_prediction"]
MAX_VERSION = 2**63 - 1
"""Largest version number accepted: the monitor keeps versions in int64 arrays, so a larger one
would make every tick of the service fail."""


@dataclass(frozen=True, slots=True)
class PredictionEvent:
    """One scored request."""

    ts: float
    request_id: str
    version: int
    features: tuple[float | None, ...]
    """Feature values in schema order; ``None`` for null/NaN."""
    prediction: float | None
    latency_ms: float
    error: str | None = None
    shadow: bool = False
    """True when a shadow challenger scored the request but did not answer it."""

    def encode(self) -> str:
        """Compact JSON for the stream."""
        return _dumps(
            {
                "ts": self.ts,
                "rid": self.request_id,
                "ver": self.version,
                # A number that JSON cannot carry is stored as null, never encoded.
                "x": [v if v is not None and math.isfinite(v) else None for v in self.features],
                "p": self.prediction if self.prediction is not None
                and math.isfinite(self.prediction) else None,
                "lat": round(self.latency_ms, 4),
                "err": self.error,
                "sh": 1 if self.shadow else 0,
            }
        )

    @classmethod
    def decode(cls, data: str) -> PredictionEvent:
        """Inverse of :meth:`encode` (trusted input from our own stream)."""
        d = json.loads(data)
        return cls(
            d["ts"], d["rid"], d["ver"], tuple(d["x"]), d["p"], d["lat"], d.get("err"),
            bool(d.get("sh", 0)),
        )


@dataclass(frozen=True, slots=True)
class LabelEvent:
    """Ground truth for one earlier request."""

    ts: float
    request_id: str
    label: float

    def encode(self) -> str:
        """Compact JSON for the stream."""
        return _dumps({"ts": self.ts, "rid": self.request_id, "y": self.label})

    @classmethod
    def decode(cls, data: str) -> LabelEvent:
        """Inverse of :meth:`encode`."""
        d = json.loads(data)
        return cls(d["ts"], d["rid"], d["y"])


def validate_prediction(raw: Any, n_features: int, limits: Limits) -> PredictionEvent:
    """Check an untrusted prediction event dict against ``limits`` and return it typed.

    Raises:
        InvalidInput: naming the first bad field, the value received and what is allowed.
    """
    if not isinstance(raw, dict):
        raise InvalidInput(f"event: expected an object, got {summarise(raw)}")
    missing = [k for k in ("ts", "request_id", "version", "features") if k not in raw]
    if missing:
        raise InvalidInput(f"event: missing field(s) {missing}")
    ts = limits.ts(raw["ts"])
    rid = request_id(raw["request_id"])
    ver = limits.version(raw["version"])
    if ver > MAX_VERSION:
        raise InvalidInput(f"version: expected an integer <= 2**63-1, got {summarise(ver)}")
    x = raw["features"]
    if not isinstance(x, list) or len(x) != n_features:
        got = f"{len(x)} values" if isinstance(x, list) else summarise(x)
        raise InvalidInput(f"features: expected a list of {n_features} values, got {got}")
    feats = tuple(finite(v, f"features[{i}]", nullable=True) for i, v in enumerate(x))
    lat = limits.latency(raw.get("latency_ms", 0.0))
    err = raw.get("error")
    if err is not None and not isinstance(err, str):
        raise InvalidInput(f"error: expected string or null, got {summarise(err)}")
    shadow = raw.get("shadow", False)
    if not isinstance(shadow, bool):  # "false" must not count as a shadow score
        raise InvalidInput(f"shadow: expected true or false, got {summarise(shadow)}")
    return PredictionEvent(
        ts=ts, request_id=rid, version=ver, features=feats,
        prediction=limits.outcome(raw.get("prediction"), "prediction", nullable=True),
        latency_ms=lat, error=err[:500] if err else None, shadow=shadow,
    )


def validate_label(raw: Any, limits: Limits) -> LabelEvent:
    """Check an untrusted label dict ``{"request_id", "label"}``; it is stamped ``limits.now``.

    Raises:
        InvalidInput: naming the first bad field, the value received and what is allowed.
    """
    if not isinstance(raw, dict):
        raise InvalidInput(f"label: expected an object, got {summarise(raw)}")
    if "request_id" not in raw or "label" not in raw:
        raise InvalidInput("label: needs fields 'request_id' and 'label'")
    rid = request_id(raw["request_id"])
    y = limits.outcome(raw["label"], "label")
    assert y is not None
    return LabelEvent(ts=limits.now, request_id=rid, label=y)
