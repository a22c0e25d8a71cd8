"""Telemetry event records, their compact JSON encoding, and validation of untrusted events.

Encoding (one stream field ``d`` holding compact JSON, so one XADD carries one event):

- prediction: ``{"ts": s, "rid": str, "ver": int, "x": [float|null, ...], "p": number|null,
  "lat": ms, "err": str|null, "sh": 0|1}`` (``sh`` = scored in shadow, not answered);
- label: ``{"ts": s, "rid": str, "y": number}``.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any

from fleet.errors import InvalidInput

_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
MAX_RID = 128
MAX_VERSION = 2**63 - 1
"""Largest version number accepted: the monitor keeps versions in int64 arrays, so a larger one
would make every tick of the service fail."""
_MAX_FLOAT = int(sys.float_info.max)


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
                "x": [None if v is None or v != v else v for v in self.features],
                "p": self.prediction,
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


def _num(v: Any, where: str, *, nullable: bool = False) -> float | None:
    if v is None and nullable:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidInput(f"{where}: expected number, got {type(v).__name__} {v!r:.40}")
    if isinstance(v, int) and abs(v) > _MAX_FLOAT:
        # JSON integers are unbounded; float() of one beyond the float range raises OverflowError.
        raise InvalidInput(f"{where}: expected a finite number, got an integer beyond float range")
    if not math.isfinite(v):
        if nullable:
            return None
        raise InvalidInput(f"{where}: expected a finite number, got {v!r}")
    return float(v)


def _rid(v: Any) -> str:
    if not isinstance(v, str) or not v or len(v) > MAX_RID:
        raise InvalidInput(f"request_id: expected a non-empty string of <= {MAX_RID} chars")
    return v


def validate_prediction(raw: Any, n_features: int) -> PredictionEvent:
    """Check an untrusted prediction event dict and return it typed.

    Raises:
        InvalidInput: naming the first bad field.
    """
    if not isinstance(raw, dict):
        raise InvalidInput(f"event: expected an object, got {type(raw).__name__}")
    missing = [k for k in ("ts", "request_id", "version", "features") if k not in raw]
    if missing:
        raise InvalidInput(f"event: missing field(s) {missing}")
    ts = _num(raw["ts"], "ts")
    ver = raw["version"]
    if isinstance(ver, bool) or not isinstance(ver, int) or not 0 <= ver <= MAX_VERSION:
        raise InvalidInput(f"version: expected a non-negative integer <= 2**63-1, got {ver!r:.40}")
    x = raw["features"]
    if not isinstance(x, list) or len(x) != n_features:
        got = f"{len(x)} values" if isinstance(x, list) else type(x).__name__
        raise InvalidInput(f"features: expected a list of {n_features} values, got {got}")
    feats = tuple(_num(v, f"features[{i}]", nullable=True) for i, v in enumerate(x))
    lat = _num(raw.get("latency_ms", 0.0), "latency_ms")
    if lat is not None and lat < 0:
        raise InvalidInput(f"latency_ms: must be >= 0, got {lat!r}")
    err = raw.get("error")
    if err is not None and not isinstance(err, str):
        raise InvalidInput(f"error: expected string or null, got {type(err).__name__}")
    shadow = raw.get("shadow", False)
    if not isinstance(shadow, bool):  # "false" must not count as a shadow score
        raise InvalidInput(f"shadow: expected true or false, got {type(shadow).__name__}")
    return PredictionEvent(
        ts=float(ts or 0.0),
        request_id=_rid(raw["request_id"]),
        version=ver,
        features=feats,
        prediction=_num(raw.get("prediction"), "prediction", nullable=True),
        latency_ms=float(lat or 0.0),
        error=err[:500] if err else None,
        shadow=shadow,
    )


def validate_label(raw: Any, ts: float) -> LabelEvent:
    """Check an untrusted label dict ``{"request_id", "label"}`` and return it typed.

    Raises:
        InvalidInput: naming the first bad field.
    """
    if not isinstance(raw, dict):
        raise InvalidInput(f"label: expected an object, got {type(raw).__name__}")
    if "request_id" not in raw or "label" not in raw:
        raise InvalidInput("label: needs fields 'request_id' and 'label'")
    y = _num(raw["label"], "label")
    return LabelEvent(ts=ts, request_id=_rid(raw["request_id"]), label=float(y or 0.0))
