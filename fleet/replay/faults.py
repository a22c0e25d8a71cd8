"""Fault schedules as data: which rows of a replay get drift, corruption, latency or errors.

Pure: data faults are applied to arrays here; serving faults are only described here and written
to Redis by :mod:`fleet.replay.fault_store`. Schedules load from YAML/JSON scenario files with
``FaultSchedule.model_validate({"faults": [...]})``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleet.errors import InvalidInput

FaultKind = Literal[
    "covariate_shift", "concept_change", "nulls", "unit_change", "latency", "errors"
]
SERVING_KINDS = frozenset({"latency", "errors"})
"""Kinds that act on one version in the gateway rather than on the replayed data."""

PARAMS: dict[str, dict[str, float | str | None]] = {
    "covariate_shift": {"shift": 0.0, "scale": 1.0},
    "concept_change": {"p": 1.0, "how": "flip"},
    "nulls": {"p": None},
    "unit_change": {"factor": 1000.0},
    "latency": {"latency_ms": None},
    "errors": {"error_rate": None},
}
"""Parameters each kind accepts, with defaults (None = required):

- ``covariate_shift``: ``x = x * scale + shift`` on ``feature``; labels unchanged.
- ``concept_change``: each label changes with probability ``p``; ``how="flip"`` turns binary
  labels ``y`` into ``1 - y``, ``how="negate"`` turns regression targets into ``-y``.
- ``nulls``: ``feature`` becomes null with probability ``p``.
- ``unit_change``: ``feature`` is multiplied by ``factor`` (e.g. kW sent as W).
- ``latency``: ``version`` answers ``latency_ms`` slower.
- ``errors``: ``version`` fails a request with probability ``error_rate``.
"""


@dataclass(frozen=True)
class ServingFault:
    """What the gateway injects for one version while a serving fault is active."""

    latency_ms: float = 0.0
    """Extra latency added to each prediction, milliseconds."""
    error_rate: float = 0.0
    """Probability that a prediction fails with an injected error."""

    def to_json(self) -> str:
        """Encode as the Redis hash value ``{"latency_ms": .., "error_rate": ..}``."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> ServingFault:
        """Decode :meth:`to_json` output (unknown keys are ignored)."""
        d = json.loads(raw)
        return cls(float(d.get("latency_ms", 0.0)), float(d.get("error_rate", 0.0)))


class Fault(BaseModel):
    """One scheduled fault over replay rows ``[start, stop)`` (absolute stream row indices)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FaultKind
    start: int = Field(ge=0)
    """First affected row."""
    stop: int | None = None
    """Row after the last affected one; None = until the replay ends."""
    feature: str | None = None
    """Column the data faults ``covariate_shift``, ``nulls`` and ``unit_change`` act on."""
    version: int | Literal["challenger"] | None = None
    """Version a serving fault hits: a number, or whichever version is the challenger."""
    params: dict[str, float | str] = Field(default_factory=dict)
    """Kind-specific parameters, see :data:`PARAMS`."""

    @model_validator(mode="after")
    def _check(self) -> Fault:
        if self.stop is not None and self.stop <= self.start:
            raise ValueError(f"stop ({self.stop}) must be greater than start ({self.start})")
        allowed = PARAMS[self.kind]
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            raise ValueError(f"{self.kind}: unknown params {unknown}; allowed: {sorted(allowed)}")
        missing = sorted(k for k, v in allowed.items() if v is None and k not in self.params)
        if missing:
            raise ValueError(f"{self.kind}: missing required params {missing}")
        if self.serving and self.version is None:
            raise ValueError(f"{self.kind}: a serving fault needs 'version' (a number or "
                             "'challenger')")
        needs_feature = self.kind in ("covariate_shift", "nulls", "unit_change")
        if needs_feature and not self.feature:
            raise ValueError(f"{self.kind}: needs 'feature'")
        for name in ("p", "error_rate"):
            if name in allowed and not 0.0 <= float(self.param(name)) <= 1.0:
                raise ValueError(f"{self.kind}: {name} must be in [0, 1], got {self.param(name)!r}")
        if self.kind == "latency" and float(self.param("latency_ms")) < 0:
            raise ValueError(f"latency: latency_ms must be >= 0, got {self.param('latency_ms')!r}")
        if self.kind == "concept_change" and self.param("how") not in ("flip", "negate"):
            raise ValueError(f"concept_change: how must be 'flip' or 'negate', "
                             f"got {self.param('how')!r}")
        return self

    @property
    def serving(self) -> bool:
        """Whether this fault acts in the gateway (latency, errors) rather than on the data."""
        return self.kind in SERVING_KINDS

    def param(self, name: str) -> float | str:
        """The parameter's value, or its default from :data:`PARAMS`."""
        value = self.params.get(name, PARAMS[self.kind][name])
        assert value is not None  # required params are checked on construction
        return value

    def active(self, rows: np.ndarray) -> np.ndarray:
        """Boolean mask of which absolute row indices this fault covers.

        >>> Fault(kind="unit_change", start=2, stop=4, feature="a").active(np.arange(6)).tolist()
        [False, False, True, True, False, False]
        """
        hit = rows >= self.start
        return hit if self.stop is None else hit & (rows < self.stop)


class FaultSchedule(BaseModel):
    """An ordered list of faults; data faults apply in this order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    faults: tuple[Fault, ...] = ()

    def check(self, feature_names: tuple[str, ...] | list[str]) -> None:
        """Raise :class:`InvalidInput` if a fault names a feature the stream does not have."""
        for i, f in enumerate(self.faults):
            if f.feature is not None and f.feature not in feature_names:
                raise InvalidInput(
                    f"faults[{i}] ({f.kind}) names feature {f.feature!r}; "
                    f"the stream has {list(feature_names)}"
                )

    def apply(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        index: int,
        feature_names: tuple[str, ...] | list[str],
        seed: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return faulted copies of a batch of rows ``index .. index + len(X) - 1``.

        Random choices depend only on ``seed``, the fault's position in the schedule and the
        absolute row index, so a row is faulted the same way whatever the batch size.

        >>> s = FaultSchedule(faults=(Fault(kind="unit_change", start=1, feature="a"),))
        >>> X, y = s.apply(np.ones((3, 1)), np.zeros(3), index=0, feature_names=["a"], seed=0)
        >>> X[:, 0].tolist(), y.tolist()
        ([1.0, 1000.0, 1000.0], [0.0, 0.0, 0.0])
        """
        X = np.array(X, dtype=np.float64)
        y = np.array(y)
        rows = index + np.arange(len(X))
        for k, f in enumerate(self.faults):
            if f.serving:
                continue
            mask = f.active(rows)
            if not mask.any():
                continue
            if f.kind in ("nulls", "concept_change"):
                mask &= uniform(seed, k, rows) < float(f.param("p"))
            if f.kind == "concept_change":
                y[mask] = 1 - y[mask] if f.param("how") == "flip" else -y[mask]
                continue
            col = list(feature_names).index(str(f.feature))
            if f.kind == "nulls":
                X[mask, col] = np.nan
            elif f.kind == "unit_change":
                X[mask, col] *= float(f.param("factor"))
            else:
                X[mask, col] = X[mask, col] * float(f.param("scale")) + float(f.param("shift"))
        return X, y

    def serving_at(self, row: int) -> dict[str, ServingFault]:
        """Serving faults in force at ``row``, combined per target version field.

        Latencies add up; independent error rates combine as ``1 - prod(1 - rate)``.
        """
        out: dict[str, ServingFault] = {}
        for f in self.faults:
            if not f.serving or not f.active(np.array([row]))[0]:
                continue
            key = "challenger" if f.version == "challenger" else str(f.version)
            cur = out.get(key, ServingFault())
            if f.kind == "latency":
                cur = ServingFault(cur.latency_ms + float(f.param("latency_ms")), cur.error_rate)
            else:
                p = float(f.param("error_rate"))
                rate = cur.error_rate + p - cur.error_rate * p  # = 1 - (1 - a)(1 - b), exact at 0
                cur = ServingFault(cur.latency_ms, rate)
            out[key] = cur
        return out

    def serving_boundaries(self, start: int, stop: int) -> list[int]:
        """Rows strictly inside ``(start, stop)`` where some serving fault starts or ends."""
        edges = {f.start for f in self.faults if f.serving}
        edges |= {f.stop for f in self.faults if f.serving and f.stop is not None}
        return sorted(e for e in edges if start < e < stop)


def uniform(seed: int, salt: int, rows: np.ndarray) -> np.ndarray:
    """Counter-based uniforms in [0, 1): one per row, a pure function of ``(seed, salt, row)``.

    SplitMix64 over the row index keyed by ``seed`` and ``salt``, so batches can be cut anywhere.

    >>> a = uniform(1, 0, np.arange(10)); b = uniform(1, 0, np.arange(5, 10))
    >>> bool((a[5:] == b).all()), bool(((a >= 0) & (a < 1)).all())
    (True, True)
    """
    key = np.random.SeedSequence([seed, salt]).generate_state(1, dtype=np.uint64)[0]
    z = np.asarray(rows, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + key
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
