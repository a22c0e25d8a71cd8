"""Eval scenarios as data: the schema of ``evals/scenarios/<nn_slug>/case.yaml`` and its loader.

A case names a stream (a generator with its parameters and seed, or the real Electricity data),
how many rows to replay and to train the first model on, a fault schedule, the service's policy,
how the simulated human answers approvals, and what must and must not happen. Everything is
checked on load, so a typo in a case file fails with the file, the field and the allowed values
rather than halfway through a run.

Example ``case.yaml``::

    title: SEA stream, four abrupt concept changes at irregular positions
    tier: easy
    stream: {generator: sea, rows: 24000, seed: 11, drifts: {count: 4, min_gap: 4000}}
    policy: {rollout: shadow}
    expect: [{action: retrain}, {action: promote}]
    forbid: [{action: rollback, why: nothing is deployed that breaks}]
    goals: [match_oracle]
"""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fleet.datasets import (
    DriftStream,
    irregular_points,
    load_elec,
    rotating_hyperplane,
    sea,
    stationary,
)
from fleet.errors import InvalidInput
from fleet.incidents.records import Kind
from fleet.replay.faults import Fault, FaultSchedule
from fleet.schema import Policy
from fleet.trainer.pipeline import build_pipeline

SCENARIOS = Path(__file__).parent / "scenarios"
"""Where the shipped scenario folders live."""

ActionName = Literal[
    "retrain", "promote", "rollback", "canary", "shadow", "quarantine", "approval_request",
    "approval_approve", "approval_reject", "approval_expire", "escalate", "resolve",
]
"""What a scenario can require or forbid. Read from the audit trail in Redis (see
:data:`evals.scorers.AUDIT_ACTIONS`); baselines report the three they can do: retrain,
promote (every baseline retrain is deployed at once) and rollback (never)."""
ACTIONS: tuple[str, ...] = get_args(ActionName)

BaselineName = Literal["static", "periodic", "adwin", "hddm_a", "oracle"]
"""Baseline families; ``periodic`` runs every K of :data:`evals.baselines.PERIODS`."""
GoalName = Literal["match_oracle", "no_retrain", "periodic_gain"]
"""Scenario-specific goals (the forbidden-action and intended-action goals apply to every case):

- ``match_oracle``: accuracy >= 0.99 x the oracle's with at most 1.2 x its retrains;
- ``no_retrain``: not a single retrain;
- ``periodic_gain``: at least 90 % of the accuracy gain retraining every 500 rows gets over the
  static model, with at most a quarter of its retrains.
"""


SEEDED_GOALS = frozenset({"match_oracle", "no_retrain"})
"""Goals judged over every seed of a multi-seed run."""


class Drifts(BaseModel):
    """Concept drifts at irregular positions (:func:`fleet.datasets.irregular_points`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    count: int = Field(ge=1)
    """How many drifts."""
    min_gap: int = Field(ge=1)
    """Fewest rows between two onsets."""
    margin: int = Field(3_000, ge=0)
    """No onset within this many rows of either end of the stream."""
    seed: int | None = None
    """Seed of the positions (default: the stream's seed)."""


class StreamSpec(BaseModel):
    """The labelled stream a case replays."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    generator: Literal["elec", "sea", "rotating_hyperplane", "stationary"]
    """``elec`` is the real Electricity data; the others are synthetic (``fleet.datasets``)."""
    rows: int | None = Field(None, ge=100)
    """Rows to generate (synthetic, required) or to keep from the start (elec; default: all)."""
    seed: int = 0
    """Seed of the generator (and of the drift positions unless ``drifts.seed`` is given)."""
    drifts: Drifts | None = None
    """Concept drifts (synthetic generators other than ``stationary``)."""
    params: dict[str, float | int] = Field(default_factory=dict)
    """Generator keyword arguments: ``noise``; ``width`` (rows a drift takes); ``d``."""

    @model_validator(mode="after")
    def _check(self) -> StreamSpec:
        if self.generator != "elec" and self.rows is None:
            raise ValueError(f"stream.rows is required for the {self.generator!r} generator")
        if self.drifts is not None and self.generator in ("elec", "stationary"):
            raise ValueError(f"stream.drifts cannot be set for {self.generator!r}: it has no "
                             "synthetic concept drift (use faults for data problems)")
        allowed = {"elec": set(), "stationary": {"noise"}, "sea": {"noise", "width"},
                   "rotating_hyperplane": {"noise", "width", "d"}}[self.generator]
        unknown = sorted(set(self.params) - allowed)
        if unknown:
            raise ValueError(f"stream.params {unknown} are not parameters of "
                             f"{self.generator!r}; allowed: {sorted(allowed)}")
        return self

    def points(self, rows: int, count: int | None = None) -> list[int]:
        """Drift onsets for a stream of ``rows`` (``count`` overrides :attr:`Drifts.count`).

        Raises:
            ValueError: the drifts do not fit (from :func:`fleet.datasets.irregular_points`).
        """
        if self.drifts is None:
            return []
        d = self.drifts
        return irregular_points(rows, d.count if count is None else count, min_gap=d.min_gap,
                                margin=d.margin, seed=self.seed if d.seed is None else d.seed)

    def build(self, name: str, rows: int | None = None,
              drifts: int | None = None) -> DriftStream:
        """Generate (or load) the stream; ``rows`` and ``drifts`` override the sizes (quick)."""
        n = rows or self.rows
        if self.generator == "elec":
            s = load_elec()
            return s if n is None or n >= len(s) else s.head(n)
        assert n is not None  # checked on load
        points = self.points(n, drifts)
        p = dict(self.params)
        if self.generator == "stationary":
            return stationary(n, noise=float(p.get("noise", 0.1)), seed=self.seed)
        if self.generator == "sea":
            return sea(n, drifts=points, width=int(p.get("width", 1)),
                       noise=float(p.get("noise", 0.1)), seed=self.seed, name=name)
        return rotating_hyperplane(n, drifts=points, width=int(p.get("width", 2000)),
                                   d=int(p.get("d", 10)), noise=float(p.get("noise", 0.05)),
                                   seed=self.seed, name=name)


class Rule(BaseModel):
    """One thing that must (``expect``) or must not (``forbid``) happen.

    Exactly one of ``action`` (from the audit trail) or ``incident`` (an incident kind that
    opened, optionally ending in ``status``) is set.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: ActionName | None = None
    incident: Kind | None = None
    status: Literal["resolved", "escalated", "failed"] | None = None
    """For ``incident``: a status the incident must reach (default: any), e.g. ``escalated``
    (even if the on-call person closes it later)."""
    version: int | None = None
    """For ``action``: only this model version (e.g. forbid promoting the broken v2)."""
    from_row: int = Field(0, ge=0)
    """Only count what happens at or after this stream row (e.g. once a fault starts)."""
    to_row: int | None = Field(None, ge=1)
    """Only count what happens before this stream row (default: to the end)."""
    min: int = Field(1, ge=1)
    """For ``expect``: how many times at least."""
    why: str = ""
    """One line for the scorecard: why this is expected or forbidden."""

    @model_validator(mode="after")
    def _one(self) -> Rule:
        if (self.action is None) == (self.incident is None):
            raise ValueError("a rule names exactly one of 'action' or 'incident'")
        if self.status is not None and self.incident is None:
            raise ValueError("'status' only applies to an 'incident' rule")
        if self.version is not None and self.action is None:
            raise ValueError("'version' only applies to an 'action' rule")
        if self.to_row is not None and self.to_row <= self.from_row:
            raise ValueError(f"to_row ({self.to_row}) must be greater than from_row "
                             f"({self.from_row})")
        return self

    def covers(self, row: int) -> bool:
        """Whether ``row`` is inside the rule's ``[from_row, to_row)``."""
        return row >= self.from_row and (self.to_row is None or row < self.to_row)

    @property
    def label(self) -> str:
        """Short name for tables: ``promote v2``, ``incident data_quality escalated``."""
        if self.action is not None:
            head = self.action + (f" v{self.version}" if self.version is not None else "")
        else:
            head = f"incident {self.incident}" + (f" {self.status}" if self.status else "")
        if self.to_row is not None:
            return head + f" in rows {self.from_row:,}–{self.to_row:,}"
        return head + (f" from row {self.from_row:,}" if self.from_row else "")


class Quick(BaseModel):
    """A smaller version of the case for ``flywheel eval --quick`` and the test suite."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: int | None = Field(None, ge=100)
    """Rows of the stream (drift positions are drawn for this length)."""
    drifts: int | None = Field(None, ge=1)
    """How many drifts (default: the full case's count)."""
    baselines: list[BaselineName] | None = None
    """Baselines to run (default: the case's)."""


class Case(BaseModel):
    """One eval scenario (``case.yaml``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = ""
    """Short name; default: the folder name without its number (``03_sea_gradual`` ->
    ``sea_gradual``)."""
    title: str
    """One line saying what happens."""
    tier: Literal["easy", "medium", "hard"]
    """``easy`` must hold 20/20 runs; ``hard`` may need a better brain or more tuning."""
    description: str = ""
    """Why the case exists and what the right behaviour is, including any policy choice."""
    stream: StreamSpec
    train_rows: int = Field(2_000, ge=100)
    """The first model is trained on rows ``[0, train_rows)``; the replay starts there."""
    rows_per_s: float = Field(1.0, gt=0)
    """Simulated traffic rate; it turns the policy's seconds into rows. At the default one
    request a second, drifts a few thousand rows apart come about an hour apart, and the
    10-minute cooldowns and the 15-minute approval TTL span hundreds of rows, a small part of a
    concept's life, as they would in production."""
    tick_every: int = Field(100, ge=50)
    """Rows between two monitor ticks (each followed by one pass of the incident driver): one
    predict batch, 100 s of traffic at the default rate. Still coarser than production, where
    the loop ticks every 5 s (``apps.loop.LoopConfig.tick_interval_s``)."""
    batch: int = Field(100, ge=1)
    """Rows per predict request."""
    faults: list[Fault] = Field(default_factory=list)
    """Fault schedule (``fleet.replay.faults``); rows are absolute stream indices."""
    policy: dict[str, Any] = Field(default_factory=dict)
    """Overrides of :class:`fleet.schema.Policy` for the service (validated on load)."""
    model: dict[str, Any] = Field(default_factory=dict)
    """The service's model family and estimator parameters (``fleet.trainer.pipeline``;
    default: the task's default family). flywheel's v1 is fitted with them, its retrains keep
    them (the champion's recipe), and every baseline fits the same."""
    human: Literal["approve", "reject", "never"] = "approve"
    """How the simulated on-call person answers every approval request."""
    ack_escalations_after_s: float | None = Field(1_800.0, gt=0)
    """Seconds after which the on-call person closes an escalated incident ("acknowledged,
    keep the current model"), handing the service back to the agents (default: half an
    hour); None: never, and an escalated incident then holds its detector's signal (no new
    incident of that kind) for the rest of the run."""
    expect: list[Rule] = Field(default_factory=list)
    forbid: list[Rule] = Field(default_factory=list)
    reference: Literal["oracle", "periodic_500", "static"] = "static"
    """The upper reference accuracy is measured against."""
    baselines: list[BaselineName] = Field(
        default_factory=lambda: ["static", "periodic", "adwin", "hddm_a"])
    goals: list[GoalName] = Field(default_factory=list)
    quick: Quick = Field(default_factory=Quick)
    seed: int = 0
    """Seed of the replay (request ids, random faults) and of every model fit."""

    @model_validator(mode="after")
    def _check(self) -> Case:
        Policy(**self.policy)  # raises a ValidationError naming the bad field
        try:
            build_pipeline("classification", self.model)
        except InvalidInput as exc:
            raise ValueError(f"model: {exc}") from None
        if self.reference == "oracle" and "oracle" not in self.baselines:
            raise ValueError("reference 'oracle' needs 'oracle' in baselines")
        if self.reference == "periodic_500" and "periodic" not in self.baselines:
            raise ValueError("reference 'periodic_500' needs 'periodic' in baselines")
        if "oracle" in self.baselines and self.stream.drifts is None:
            raise ValueError("the 'oracle' baseline needs a stream with drifts (it retrains "
                             "at each true drift point)")
        needs = {"match_oracle": "oracle", "periodic_gain": "periodic"}
        for goal, base in needs.items():
            if goal in self.goals and base not in self.baselines:
                raise ValueError(f"goal {goal!r} needs the {base!r} baseline")
        for what, rows, count in (("stream", self.stream.rows, None),
                                  ("quick", self.quick.rows, self.quick.drifts)):
            if rows is None:
                continue
            if self.train_rows >= rows:
                raise ValueError(f"train_rows ({self.train_rows}) must be below {what}.rows "
                                 f"({rows})")
            try:
                self.stream.points(rows, count)
            except ValueError as exc:
                raise ValueError(f"{what}: {exc}; lower drifts.count or min_gap") from None
            late = [f.start for f in self.faults if f.start >= rows]
            if late:
                raise ValueError(f"faults start at rows {late}, past the end of {what}.rows "
                                 f"({rows})")
        early = [f.start for f in self.faults if not f.serving and f.start < self.train_rows]
        if early:
            raise ValueError(f"data faults start at rows {early}, inside the first model's "
                             f"training rows [0, {self.train_rows})")
        return self

    @cached_property
    def service_policy(self) -> Policy:
        """The service's policy: the defaults with this case's overrides."""
        return Policy(**self.policy)

    @property
    def schedule(self) -> FaultSchedule:
        """The fault schedule."""
        return FaultSchedule(faults=tuple(self.faults))

    def build_stream(self, *, quick: bool = False) -> DriftStream:
        """The stream this case replays (the quick size with ``quick``)."""
        if not quick:
            return self.stream.build(self.name)
        return self.stream.build(self.name, self.quick.rows, self.quick.drifts)

    def expectations(self, *, quick: bool = False) -> list[Rule]:
        """The ``expect`` rules; in a quick run with fewer drifts their ``min`` shrinks alike."""
        full = self.stream.drifts.count if self.stream.drifts else None
        if not quick or full is None or self.quick.drifts is None:
            return list(self.expect)
        share = self.quick.drifts / full
        return [r.model_copy(update={"min": max(1, math.ceil(r.min * share))})
                for r in self.expect]

    def baselines_for(self, *, quick: bool = False) -> list[str]:
        """Baseline families to run."""
        return list(self.quick.baselines or self.baselines) if quick else list(self.baselines)

    @property
    def reseedable(self) -> bool:
        """Whether ``flywheel eval --seeds N`` replays the case on more seeds of its generator.

        True for a synthetic stream judged by a goal that one draw of the stream can pass by
        luck (``match_oracle``, ``no_retrain``).
        """
        return self.stream.generator != "elec" and bool(set(self.goals) & SEEDED_GOALS)

    def seeds(self, n: int) -> list[int]:
        """The stream seeds of an ``n``-seed run: the case's own, then the next ``n - 1``.

        >>> load_cases(["sea_gradual"])[0].seeds(3)
        [12, 13, 14]
        """
        first = self.stream.seed
        return [first + k for k in range(n if self.reseedable else 1)]

    def reseeded(self, seed: int) -> Case:
        """The same case on another draw of its stream.

        The seed draws the data and, unless ``drifts.seed`` pins them, the drift positions.
        """
        return self.model_copy(update={"stream": self.stream.model_copy(update={"seed": seed})})

    def seed_baselines(self) -> list[str]:
        """Baselines the reseeded runs need: only those the seeded goals are judged against."""
        return ["oracle"] if "match_oracle" in self.goals else []


def load_case(path: str | Path) -> Case:
    """Load and check one ``case.yaml`` (or the folder holding it).

    Raises:
        InvalidInput: the file is missing, is not YAML, or breaks the schema; the message names
            the file and every bad field with what is allowed.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "case.yaml"
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise InvalidInput(f"{p}: no such case file") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidInput(f"{p}: expected a mapping of case fields, got {type(raw).__name__}")
    raw.setdefault("name", slug(p.parent.name))
    try:
        return Case.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or '(case)'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"{p}: {problems}") from None


def slug(folder: str) -> str:
    """A case's default name: its folder without the leading number.

    >>> slug("03_sea_gradual"), slug("elec")
    ('sea_gradual', 'elec')
    """
    head, _, rest = folder.partition("_")
    return rest if head.isdigit() and rest else folder


def case_dirs(root: Path = SCENARIOS) -> list[Path]:
    """Scenario folders (those holding a ``case.yaml``), in folder order."""
    return sorted(p for p in root.iterdir() if (p / "case.yaml").is_file())


def load_cases(names: list[str] | None = None, root: Path = SCENARIOS) -> list[Case]:
    """Load every case under ``root``, or only those named (by name or folder name).

    Raises:
        InvalidInput: a bad case file, a duplicate name, or an unknown name (listing the known).
    """
    cases = [load_case(d) for d in case_dirs(root)]
    seen: dict[str, int] = {}
    for c in cases:
        seen[c.name] = seen.get(c.name, 0) + 1
    dupes = sorted(n for n, k in seen.items() if k > 1)
    if dupes:
        raise InvalidInput(f"duplicate case names under {root}: {dupes}")
    if not names:
        return cases
    folders = {d.name: c for d, c in zip(case_dirs(root), cases, strict=True)}
    by_name = {c.name: c for c in cases}
    unknown = [n for n in names if n not in by_name and n not in folders]
    if unknown:
        raise InvalidInput(f"unknown scenario(s) {unknown}; known: {sorted(by_name)}")
    return [by_name.get(n) or folders[n] for n in names]
