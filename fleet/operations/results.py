"""What a guarded write returns: small frozen records that round-trip through the action ledger."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Self

from fleet.registry import ServiceRecord
from fleet.trainer import TrainResult


@dataclass(frozen=True)
class _Stored:
    """A result the ledger stores as JSON and gives back on a repeat."""

    def stored(self) -> dict[str, Any]:
        """The JSON the ledger keeps (everything but ``replayed``)."""
        out = asdict(self)
        out.pop("replayed", None)
        return out

    @classmethod
    def load(cls, data: dict[str, Any], *, replayed: bool) -> Self:
        """Rebuild from :meth:`stored` output."""
        return cls(**data, replayed=replayed)


@dataclass(frozen=True)
class DeployResult(_Stored):
    """The service's serving state after shadow, canary, promote, rollback or retire."""

    action: str
    service: str
    version: int | None
    """The version acted on (for a rollback: the champion it restored, or the challenger it
    removed)."""
    champion: int | None
    challenger: int | None
    mode: str
    """``full``, ``shadow`` or ``canary``."""
    split: float
    """Share of traffic (0..1) the challenger answers."""
    generation: int
    replayed: bool = False
    """True when the action had already run in this incident and this is its stored result."""

    @classmethod
    def of(cls, action: str, version: int | None, s: ServiceRecord) -> DeployResult:
        """Describe ``s`` after ``action`` on ``version``."""
        return cls(
            action=action, service=s.name, version=version, champion=s.champion,
            challenger=s.challenger, mode=s.mode.value, split=s.split, generation=s.generation,
        )


@dataclass(frozen=True)
class QuarantineResult(_Stored):
    """A telemetry window that training will never use again."""

    service: str
    first_id: str
    last_id: str
    ranges: int
    """Quarantined ranges the service has now."""
    replayed: bool = False


@dataclass(frozen=True)
class RetrainResult(_Stored):
    """A candidate trained on the recent labelled window, minus quarantined ranges."""

    service: str
    version: int
    """The registered candidate."""
    parent: int | None
    """The champion when it was trained."""
    metric: str
    """``accuracy`` (higher is better) or ``mae`` (lower is better)."""
    candidate: float
    champion: float | None
    improvement: float | None
    better: bool
    """Whether it beats the champion by the policy's ``min_improvement``."""
    train_rows: int
    holdout_rows: int
    learnt: bool = True
    """Whether it beats the constant predictor (majority class or mean) beyond chance."""
    window: dict[str, Any] = field(default_factory=dict)
    """``{"from", "to", "rows", "skipped"}``: stream ids and size of the training window, and
    how many of its oldest rows the window search left out."""
    excluded_ranges: int = 0
    """Quarantined ranges left out of the window."""
    replayed: bool = False

    @classmethod
    def of(cls, res: TrainResult, excluded: int) -> RetrainResult:
        """Summarise a trainer result as plain JSON types (no numpy scalars)."""
        return cls(
            service=res.version.service,
            version=int(res.version.number),
            parent=res.version.parent,
            metric=str(res.metric),
            candidate=float(res.candidate),
            champion=None if res.champion is None else float(res.champion),
            improvement=None if res.improvement is None else float(res.improvement),
            better=bool(res.better),
            learnt=bool(res.learnt),
            train_rows=int(res.train_rows),
            holdout_rows=int(res.holdout_rows),
            window=dict(res.version.training_window),
            excluded_ranges=excluded,
        )
