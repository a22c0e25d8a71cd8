"""The guarded executor the agents' tools call: every write on the fleet goes through here.

Each method validates its arguments, describes the write (approval need, risk, evidence, whether
repeating it is harmless) and hands it to the :class:`~fleet.operations.gate.Gate`. Safety lives
here, where actions execute, never only in a prompt.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from fleet.actions.ledger import ActionLedger
from fleet.actions.limits import Limits
from fleet.actions.spec import ActionContext, ActionSpec
from fleet.approvals import ApprovalStore
from fleet.approvals.records import EvidenceValue
from fleet.audit import Audit
from fleet.errors import FleetError, InvalidInput
from fleet.operations.gate import Gate, Leases, Write
from fleet.operations.results import DeployResult, QuarantineResult, RetrainResult
from fleet.operations.retries import retry_training
from fleet.registry import Registry, ServiceRecord
from fleet.telemetry.reader import Range, TelemetryReader, stream_id_key
from fleet.telemetry.window import LabelledWindow
from fleet.trainer import Trainer

_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_R = TypeVar("_R", DeployResult, QuarantineResult, RetrainResult)


class Operations:
    """Shadow, canary, promote, rollback, retire, quarantine and retrain, guarded.

    Every write: (a) needs a valid approval when the policy says so (else raises
    :class:`~fleet.errors.ApprovalRequired` with the pending request); (b) holds the service's
    lease and respects its cooldowns, rollback cap and failure count; (c) runs at most once per
    incident and arguments (a repeat returns the first result, ``replayed=True``); (d) is audited
    with the actor, reason and incident of its :class:`~fleet.actions.spec.ActionContext`.

    Args:
        registry: services and versions.
        approvals: approval requests and decisions.
        ledger: idempotency records.
        limits: leases, cooldowns, rollback cap, failure counts.
        trainer: trains candidates (None: :meth:`retrain` refuses).
        reader: telemetry, for training windows.
        audit: the audit trail (default: the registry's).
        leases: how long writes may hold a service lease.
    """

    def __init__(
        self,
        registry: Registry,
        approvals: ApprovalStore,
        ledger: ActionLedger,
        limits: Limits,
        trainer: Trainer | None,
        reader: TelemetryReader,
        *,
        audit: Audit | None = None,
        leases: Leases | None = None,
    ):
        self.registry = registry
        self.approvals = approvals
        self.ledger = ledger
        self.limits = limits
        self.trainer = trainer
        self.reader = reader
        self.audit = audit or registry.audit
        self.gate = Gate(approvals, ledger, limits, self.audit, leases)

    @classmethod
    def build(cls, registry: Registry, trainer: Trainer | None = None) -> Operations:
        """Wire the default stores on the registry's Redis, keys, clock and audit trail."""
        r, keys, clock, audit = registry.r, registry.keys, registry.clock, registry.audit
        return cls(
            registry,
            ApprovalStore(r, keys, clock, audit),
            ActionLedger(r, keys, clock, audit=audit),
            Limits(r, keys, clock),
            trainer,
            TelemetryReader(r, keys),
            audit=audit,
        )

    # --- reads ----------------------------------------------------------------------------
    def quarantined(self, svc: str) -> list[Range]:
        """The service's quarantined telemetry ranges ``(first_id, last_id)``, oldest first.

        Stored as members ``"<first_id>..<last_id>"`` of the set ``keys.quarantine(svc)``.
        """
        ranges: list[Range] = []
        for member in self.registry.r.smembers(self.registry.keys.quarantine(svc)):
            first, _, last = member.partition("..")
            ranges.append((first, last))
        return sorted(ranges, key=lambda rg: (stream_id_key(rg[0]), stream_id_key(rg[1])))

    def training_window(
        self, svc: str, rows: int | None = None, *, since_ts: float | None = None
    ) -> LabelledWindow:
        """The most recent labelled rows training would use, quarantined ranges left out.

        Args:
            svc: the service.
            rows: labelled rows wanted (default: the policy's ``train_window``).
            since_ts: only rows predicted at or after this time (a drift's onset), so a
                candidate learns the new concept rather than the mixture.
        """
        s = self.registry.service(svc)
        return self.reader.labelled_window(
            svc, rows or s.policy.train_window, exclude=self.quarantined(svc),
            feature_names=s.schema_.names, since_ts=since_ts,
        )

    def should_escalate(self, svc: str, kind: str) -> bool:
        """Whether ``kind`` failed on ``svc`` as often in a row as the policy tolerates."""
        return self.limits.should_escalate(svc, kind, self.registry.service(svc).policy)

    # --- deployment -----------------------------------------------------------------------
    def shadow(
        self, svc: str, version: int, ctx: ActionContext, *, approval_id: str | None = None
    ) -> DeployResult:
        """Score ``version`` silently next to the champion on all traffic."""
        s = self.registry.service(svc)

        def run() -> dict[str, Any]:
            rec = self.registry.start_shadow(svc, version, actor=ctx.actor, reason=ctx.reason)
            return DeployResult.of("shadow", version, rec).stored()

        w = Write(
            spec=ActionSpec(name="shadow", service=svc, args={"version": version}),
            policy=s.policy, run=run, check=lambda: self._challenger_ok(svc, version),
            needs_approval=s.policy.requires_approval("shadow"), risk="low",
            evidence=self._evidence(s, version), retry_safe=True,
        )
        return self._go(DeployResult, w, ctx, approval_id)

    def canary(
        self,
        svc: str,
        version: int,
        percent: float,
        ctx: ActionContext,
        *,
        approval_id: str | None = None,
    ) -> DeployResult:
        """Let ``version`` answer ``percent`` % of traffic (sticky by request id).

        Above the policy's ``max_canary_pct`` it needs an approval.

        Raises:
            InvalidInput: ``percent`` is not strictly between 0 and 100.
        """
        if (
            isinstance(percent, bool)
            or not isinstance(percent, int | float)
            or not 0.0 < float(percent) < 100.0
        ):
            raise InvalidInput(
                f"canary percent must be a number strictly between 0 and 100, got {percent!r}"
            )
        s = self.registry.service(svc)
        pct = float(percent)
        over = pct > s.policy.max_canary_pct

        def run() -> dict[str, Any]:
            rec = self.registry.start_canary(
                svc, version, pct / 100.0, actor=ctx.actor, reason=ctx.reason
            )
            return DeployResult.of("canary", version, rec).stored()

        w = Write(
            spec=ActionSpec(name="canary", service=svc, args={"version": version, "percent": pct}),
            policy=s.policy, run=run, check=lambda: self._challenger_ok(svc, version),
            needs_approval=over or s.policy.requires_approval("canary"),
            why_approval=(
                f"percent {pct:g} is above the policy's max_canary_pct "
                f"{s.policy.max_canary_pct:g}" if over else ""
            ),
            risk="medium", evidence=self._evidence(s, version), retry_safe=True,
        )
        return self._go(DeployResult, w, ctx, approval_id)

    def promote(
        self, svc: str, version: int, ctx: ActionContext, *, approval_id: str | None = None
    ) -> DeployResult:
        """Make ``version`` the champion of all traffic (needs approval by default)."""
        s = self.registry.service(svc)

        def check() -> None:
            self.registry.version(svc, version)
            if self.registry.service(svc).champion == version:
                raise InvalidInput(f"version {version} is already the champion of {svc!r}")

        def run() -> dict[str, Any]:
            rec = self.registry.promote(svc, version, actor=ctx.actor, reason=ctx.reason)
            return DeployResult.of("promote", version, rec).stored()

        w = Write(
            spec=ActionSpec(name="promote", service=svc, args={"version": version}),
            policy=s.policy, run=run, check=check,
            needs_approval=s.policy.requires_approval("promote"), risk="high",
            evidence=self._evidence(s, version),
        )
        return self._go(DeployResult, w, ctx, approval_id)

    def rollback(
        self,
        svc: str,
        ctx: ActionContext,
        *,
        to: int | None = None,
        approval_id: str | None = None,
    ) -> DeployResult:
        """Undo the last risky change: drop the challenger, else restore the previous champion.

        Needs no approval by default; capped at the policy's ``max_rollbacks_per_hour``. A
        rollback ``to`` a version that is neither the previous nor the current champion makes
        it the champion, which is a promotion by another name: it needs approval like one.
        """
        s = self.registry.service(svc)
        elsewhere = to is not None and to not in (s.previous, s.champion)

        def check() -> None:
            cur = self.registry.service(svc)
            if to is not None:
                self.registry.version(svc, to)
            elif cur.challenger is None and cur.previous is None:
                raise InvalidInput(
                    f"service {svc!r} has no challenger to drop and no previous champion to "
                    "restore; pass to=<version> to roll back to a specific version"
                )

        def run() -> dict[str, Any]:
            # With a challenger and no target, the rollback drops the challenger; otherwise it
            # restores a champion. The result names the version it acted on.
            dropped = self.registry.service(svc).challenger if to is None else None
            rec = self.registry.rollback(svc, actor=ctx.actor, reason=ctx.reason, to=to)
            acted = dropped if dropped is not None else rec.champion
            return DeployResult.of("rollback", acted, rec).stored()

        w = Write(
            spec=ActionSpec(name="rollback", service=svc, args={"to": to}),
            policy=s.policy, run=run, check=check,
            needs_approval=elsewhere or s.policy.requires_approval("rollback"),
            why_approval=(f"v{to} is not the previous champion (v{s.previous}), so rolling "
                          f"back to it promotes it" if elsewhere else ""),
            risk="high" if elsewhere else "medium",
            evidence={"champion": s.champion, "challenger": s.challenger, "to": to},
        )
        return self._go(DeployResult, w, ctx, approval_id)

    def retire(
        self, svc: str, version: int, ctx: ActionContext, *, approval_id: str | None = None
    ) -> DeployResult:
        """Retire a version that serves no traffic (needs approval by default)."""
        s = self.registry.service(svc)

        def check() -> None:
            self.registry.version(svc, version)
            cur = self.registry.service(svc)
            if version in (cur.champion, cur.challenger):
                raise InvalidInput(
                    f"version {version} of {svc!r} is serving traffic; promote another version "
                    "or roll back first"
                )

        def run() -> dict[str, Any]:
            self.registry.retire(svc, version, actor=ctx.actor, reason=ctx.reason)
            return DeployResult.of("retire", version, self.registry.service(svc)).stored()

        w = Write(
            spec=ActionSpec(name="retire", service=svc, args={"version": version}),
            policy=s.policy, run=run, check=check,
            needs_approval=s.policy.requires_approval("retire"), risk="medium",
            evidence=self._evidence(s, version), retry_safe=True,
        )
        return self._go(DeployResult, w, ctx, approval_id)

    # --- data and training ----------------------------------------------------------------
    def quarantine(
        self,
        svc: str,
        first_id: str,
        last_id: str,
        ctx: ActionContext,
        *,
        approval_id: str | None = None,
    ) -> QuarantineResult:
        """Never train on telemetry stream ids ``first_id``..``last_id`` (inclusive) again.

        Raises:
            InvalidInput: an id is not a stream id (``<ms>-<seq>``) or the range is reversed.
        """
        for name, sid in (("first_id", first_id), ("last_id", last_id)):
            if not isinstance(sid, str) or not _STREAM_ID.match(sid):
                raise InvalidInput(
                    f"{name} {sid!r} is not a telemetry stream id; expected '<ms>-<seq>', "
                    "e.g. '1700000000000-0' (a window's first_id / last_id)"
                )
        if stream_id_key(first_id) > stream_id_key(last_id):
            raise InvalidInput(f"first_id {first_id!r} comes after last_id {last_id!r}")
        s = self.registry.service(svc)
        key = self.registry.keys.quarantine(svc)

        def run() -> dict[str, Any]:
            with self.registry.r.pipeline(transaction=True) as pipe:
                pipe.sadd(key, f"{first_id}..{last_id}")
                pipe.scard(key)
                _, n = pipe.execute()
            return QuarantineResult(svc, first_id, last_id, int(n)).stored()

        w = Write(
            spec=ActionSpec(
                name="quarantine", service=svc, args={"first_id": first_id, "last_id": last_id}
            ),
            policy=s.policy, run=run,
            needs_approval=s.policy.requires_approval("quarantine"), risk="low", retry_safe=True,
        )
        return self._go(QuarantineResult, w, ctx, approval_id)

    def retrain(
        self,
        svc: str,
        ctx: ActionContext,
        *,
        rows: int | None = None,
        seed: int = 0,
        since_ts: float | None = None,
        search: bool = False,
        approval_id: str | None = None,
    ) -> RetrainResult:
        """Train and register a candidate on the recent labelled window minus quarantined ranges.

        With ``search`` the trainer tries the policy's ``window_search`` nested windows and
        keeps the one the holdout prefers (for a retrain after a change of concept).

        Blocks until the trainer is done; holds the service's training lease (not its deploy
        lease, so a rollback is never held up by training). A job that fails (its fit raised,
        its worker died) is tried again at once, until the service has failed
        ``policy.max_retrain_failures`` retrains in a row; each failure is audited.

        Raises:
            InvalidInput: ``rows`` is not positive, or the window cannot be trained on.
            TrainingFailed: the job failed on every try the policy allows; the message names
                the last error, for the person the incident is escalated to.
            LimitExceeded: retraining failed ``max_retrain_failures`` times in a row before.
        """
        s = self.registry.service(svc)
        n = s.policy.train_window if rows is None else rows
        if not isinstance(n, int) or n <= 0:
            raise InvalidInput(f"rows must be a positive integer, got {rows!r}")
        trainer = self.trainer

        def check() -> None:
            if trainer is None:
                raise FleetError(
                    "no trainer is configured for these operations; build Operations with one"
                )

        def run() -> dict[str, Any]:
            assert trainer is not None  # checked above
            excluded = self.quarantined(svc)
            window = self.training_window(svc, n, since_ts=since_ts)
            res = trainer.train(svc, window, seed=seed, created_by=ctx.actor,
                                windows=s.policy.window_search if search else 1)
            return RetrainResult.of(res, len(excluded)).stored()

        w = Write(
            spec=ActionSpec(name="retrain", service=svc, args={
                "rows": n, "seed": seed, **({} if since_ts is None else {"since_ts": since_ts}),
                **({"search": True} if search else {})}),
            policy=s.policy, run=run, check=check,
            needs_approval=s.policy.requires_approval("retrain"), risk="low",
            retry_safe=True, lane="train",
        )
        return retry_training(lambda: self._go(RetrainResult, w, ctx, approval_id),
                              self.limits, svc, s.policy)

    # --- helpers --------------------------------------------------------------------------
    def _go(
        self, cls: type[_R], w: Write, ctx: ActionContext, approval_id: str | None
    ) -> _R:
        data, replayed = self.gate.execute(w, ctx, approval_id)
        return cls.load(data, replayed=replayed)

    def _challenger_ok(self, svc: str, version: int) -> None:
        self.registry.version(svc, version)
        cur = self.registry.service(svc)
        if cur.champion is None:
            raise InvalidInput(f"service {svc!r} has no champion; promote a version first")
        if cur.champion == version:
            raise InvalidInput(f"version {version} is already the champion of {svc!r}")

    def _evidence(self, s: ServiceRecord, version: int) -> dict[str, EvidenceValue]:
        """Numbers a human needs to judge a change to ``version``: its offline metrics."""
        try:
            metrics = self.registry.version(s.name, version).metrics
        except FleetError:
            metrics = {}  # an unknown version is refused by the write's own check
        out: dict[str, EvidenceValue] = {
            "version": version, "champion": s.champion, "challenger": s.challenger,
            "mode": s.mode.value, "split": s.split,
        }
        for k, v in sorted(metrics.items())[:24]:
            out[k] = round(float(v), 6)
        return out
