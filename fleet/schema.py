"""Service definitions as data: the feature schema a service accepts and its policy."""

from __future__ import annotations

import math
import sys
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fleet.errors import InvalidInput

Task = Literal["classification", "regression"]
Action = Literal["rollback", "quarantine", "shadow", "canary", "retrain", "promote", "retire"]
_MAX_FLOAT = int(sys.float_info.max)


class FeatureSpec(BaseModel):
    """One input feature of a service."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    """Feature name as it appears in request bodies."""
    dtype: Literal["float", "int", "bool"] = "float"
    """Value type; requests with another JSON type are rejected with a 422."""
    min: float | None = None
    """Lowest expected value; values below are served but counted by the quality detector."""
    max: float | None = None
    """Highest expected value; values above are served but counted by the quality detector."""
    nullable: bool = True
    """Whether ``null`` is accepted (served as NaN, counted by the quality detector)."""


class LabelSpec(BaseModel):
    """What a service's ground-truth labels (and predictions) may be.

    Feedback outside it is dead-lettered. A classifier's undeclared classes are taken from its
    served models.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    classes: tuple[float, ...] | None = None
    """The classes of a classification service, e.g. ``(0, 1)``."""
    min: float | None = None
    """Lowest label accepted."""
    max: float | None = None
    """Highest label accepted."""


class FeatureSchema(BaseModel):
    """The ordered features a service's model takes, and optionally what its labels may be."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    features: tuple[FeatureSpec, ...]
    """Features in the column order the model expects."""
    label: LabelSpec | None = None
    """Declared label domain; None: finite numbers (classifiers: the served models' classes)."""

    @field_validator("features")
    @classmethod
    def _unique(cls, v: tuple[FeatureSpec, ...]) -> tuple[FeatureSpec, ...]:
        names = [f.name for f in v]
        if not names:
            raise ValueError("a feature schema needs at least one feature")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate feature names: {dupes}")
        return v

    @property
    def names(self) -> list[str]:
        """Feature names in column order."""
        return [f.name for f in self.features]

    def row(self, values: dict[str, Any], *, where: str = "features") -> list[float]:
        """Validate one feature dict and return it as a float row (``None`` becomes NaN).

        Raises:
            InvalidInput: naming the first bad field, what was received and what is allowed.
        """
        if not isinstance(values, dict):
            raise InvalidInput(f"{where}: expected an object of features, got {_kind(values)}")
        unknown = set(values) - {f.name for f in self.features}
        if unknown:
            raise InvalidInput(
                f"{where}: unknown feature(s) {sorted(unknown)}; allowed: {self.names}"
            )
        out: list[float] = []
        for spec in self.features:
            if spec.name not in values:
                raise InvalidInput(f"{where}.{spec.name}: missing (required feature)")
            out.append(_coerce(spec, values[spec.name], f"{where}.{spec.name}"))
        return out

    @classmethod
    def numeric(cls, names: list[str], **ranges: tuple[float, float]) -> FeatureSchema:
        """Build a schema of float features, with optional ``name=(min, max)`` ranges."""
        return cls(
            features=tuple(
                FeatureSpec(name=n, min=ranges[n][0], max=ranges[n][1])
                if n in ranges
                else FeatureSpec(name=n)
                for n in names
            )
        )


def _kind(v: Any) -> str:
    return {str: "string", bool: "boolean", list: "array", dict: "object"}.get(
        type(v), type(v).__name__
    )


def _coerce(spec: FeatureSpec, v: Any, where: str) -> float:
    if v is None:
        if not spec.nullable:
            raise InvalidInput(f"{where}: null is not allowed (feature is not nullable)")
        return math.nan
    if spec.dtype == "bool":
        if not isinstance(v, bool):
            raise InvalidInput(f"{where}: expected boolean, got {_kind(v)} {v!r}")
        return float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidInput(f"{where}: expected number, got {_kind(v)} {v!r:.40}")
    if isinstance(v, int) and abs(v) > _MAX_FLOAT:
        # JSON integers are unbounded; float() of one beyond the float range raises OverflowError.
        raise InvalidInput(f"{where}: expected a number within float range, got a larger integer")
    if not math.isfinite(v):
        # NaN and the infinities are not JSON; a missing value is null.
        raise InvalidInput(f"{where}: expected a finite number (null for a missing value), "
                           f"got {v!r}")
    if spec.dtype == "int" and not float(v).is_integer():
        raise InvalidInput(f"{where}: expected integer, got {v!r}")
    return float(v)


class Policy(BaseModel):
    """What a service's agents may do on their own, and the limits they run under."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    needs_approval: frozenset[Action] = frozenset({"promote", "retire"})
    """Actions that stop for a human decision before they execute."""
    approvers: tuple[str, ...] = ("oncall",)
    """Identities allowed to decide approvals for this service."""
    approval_ttl_s: float = 900.0
    """Seconds before a pending approval expires (auto-deny and escalate)."""
    rollout: Literal["canary", "shadow"] = "canary"
    """How a better candidate is tried before promotion: a canary on a share of live traffic,
    or a shadow that scores all traffic silently (faster verdict, no latency/error check on
    users)."""
    max_canary_pct: float = 10.0
    """Largest share of traffic (percent) a canary may take without approval."""
    min_improvement: float = 0.01
    """Holdout metric gain a candidate needs over the champion to go to canary."""
    canary_min_samples: int = 150
    """Labelled canary predictions needed before the analysis can pass or fail. The verdict is
    a confidence bound at the canary's alpha, so this minimum only keeps the bound's normal
    approximation sound; a larger one delays every promotion and every rollback."""
    cooldown_s: float = 600.0
    """Seconds after an action on a service before the next automatic action."""
    max_rollbacks_per_hour: int = 3
    """Rollbacks beyond this in one hour escalate instead."""
    max_retrain_failures: int = 2
    """Consecutive failed retrains before escalating."""
    train_window: int = 5000
    """Labelled rows a retrain uses (most recent)."""
    min_rows_after_drift: int = 1000
    """Labelled rows after a drift's onset to collect before retraining on the new concept."""
    stopgap_min_rise: float | None = Field(0.05, gt=0.0, le=1.0)
    """A drift still under way (the champion's error still rising after
    ``min_rows_after_drift`` rows) that has raised the error by at least this much (absolute)
    gets a stopgap: a model trained on the most recent rows, shipped at once, then a retrain on
    the settled concept in the same incident. Smaller rises wait for the drift to settle (a
    stopgap trained on a mixture of concepts is not worth its risk then). None: never."""
    train_on: Literal["drift_rows", "window"] = "drift_rows"
    """What a retrain inside a performance incident trains on. ``drift_rows``: only rows of
    the new concept (since the drift's onset, or since it settled), so a changed rule is not
    averaged with the old one. ``window``: the whole ``train_window``, for a service whose
    regimes come and go (a market's daily and weekly cycles), where older rows still teach."""
    candidate_gate: Literal["significant", "not_worse"] = "not_worse"
    """What a candidate retrained inside a performance incident needs on the holdout to go to
    its shadow or canary. ``not_worse``: at least match the champion; the champion is known to
    have degraded, and on a tie the model that learnt from the newest rows is the better bet (a
    holdout of a few hundred rows seldom shows a gain of a few points beyond chance, and
    waiting for one leaves the degraded model serving). ``significant``: beat it by
    ``min_improvement`` and beyond chance. The live analysis still has to pass before any
    promotion, and outside an incident the gate is ``significant``."""
    holdout_fraction: float = Field(0.2, gt=0.0, lt=0.9)
    """Share of the most recent labelled window held out to compare candidate and champion."""
    window_search: int = Field(3, ge=1, le=6)
    """Nested training windows a retrain inside a performance incident tries: the whole
    window, then its newest ``(k-1)/k``, ..., ``1/k`` (none shorter than
    :data:`fleet.trainer.job.WINDOW_MIN_ROWS` rows). Each is fitted and scored on the same
    holdout and the best one is kept (a tie goes to the longer). Rows from the early part of a
    gradual change, still a mixture of the old and new concept, then stay out of the candidate
    when the holdout shows they hurt. Other retrains (a first model, one asked for in chat)
    use the whole window. 1: the whole window only."""
    refit_after_holdout: bool = True
    """Once the holdout has judged the candidate, ship a model fitted on the whole window, the
    held-out newest rows included (the standard validate-then-refit). On a drifting stream the
    newest rows matter most; without a refit every candidate ships ``holdout_fraction`` of its
    window stale. The holdout metrics describe the validation fit; the shadow or canary judges
    the shipped model itself."""
    thresholds: dict[str, float] = Field(default_factory=dict)
    """Per-detector threshold overrides (names documented in fleet/monitor)."""
    slack_channel: str | None = Field(None, max_length=80)
    """Slack channel (id) for this service's approval prompts and incident threads; None: the
    fleet's default (``FLYWHEEL_SLACK_CHANNEL``)."""

    def requires_approval(self, action: str) -> bool:
        """Return whether ``action`` needs a human decision under this policy."""
        return action in self.needs_approval
