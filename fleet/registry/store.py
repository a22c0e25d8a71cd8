"""The registry's Redis edge: services, versions and champion/challenger pointers.

Every change is one MULTI/EXEC transaction that also appends its audit entry, so the audit trail
never disagrees with the state. Pointer changes bump the service's ``generation`` so gateways
notice and reload.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from fleet.audit import Audit
from fleet.clock import Clock, SystemClock
from fleet.errors import AlreadyExists, InvalidInput, UnknownService, UnknownVersion
from fleet.ids import check_service, check_version_number
from fleet.keys import Keys, check_service_name
from fleet.registry.artifacts import ArtifactStore
from fleet.registry.records import Mode, ServiceRecord, VersionRecord, VersionStatus
from fleet.schema import FeatureSchema, Policy, Task
from fleet.store import is_cluster


class Registry:
    """Reads and changes services and versions."""

    def __init__(
        self,
        r: redis.Redis,
        keys: Keys,
        artifacts: ArtifactStore,
        *,
        clock: Clock | None = None,
        audit: Audit | None = None,
    ):
        self.r = r
        self.keys = keys
        self.artifacts = artifacts
        self.clock = clock or SystemClock()
        self.audit = audit or Audit(r, keys, self.clock)

    # --- services -----------------------------------------------------------------
    def register_service(
        self,
        name: str,
        *,
        task: Task,
        schema: FeatureSchema,
        policy: Policy | None = None,
        owner: str = "",
        actor: str = "system",
    ) -> ServiceRecord:
        """Create a service with no versions yet.

        Raises:
            AlreadyExists: a service of that name is registered.
        """
        check_service_name(name)
        rec = ServiceRecord(
            name=name,
            task=task,
            schema=schema,
            policy=policy or Policy(),
            owner=owner,
            created_at=self.clock.now(),
        )
        key = self.keys.service(name)
        # On a Redis Cluster the services set (fleet slot) cannot join the MULTI on the service
        # hash (service slot): it is written right after. A crash in between leaves a hash that
        # is not listed yet; registering the name again lists it (and moves its audit entry).
        cluster = is_cluster(self.r)
        with self.r.pipeline(transaction=True) as pipe:
            pipe.watch(key)
            if pipe.exists(key):
                if cluster:
                    self.r.sadd(self.keys.services, name)
                    self.audit.outbox.drain(name)
                raise AlreadyExists(f"service {name!r} is already registered")
            pipe.multi()
            pipe.hset(key, mapping=rec.to_hash())
            if not cluster:
                pipe.sadd(self.keys.services, name)
            audited = self.audit.add_after(
                pipe, actor, "registry.register_service", service=name,
                reason="new service", task=task, features=schema.names,
            )
            pipe.execute()
        if cluster:
            self.r.sadd(self.keys.services, name)
        audited()
        return rec

    def services(self) -> list[str]:
        """Names of all registered services, sorted."""
        return sorted(self.r.smembers(self.keys.services))

    def service(self, name: str) -> ServiceRecord:
        """Return one service.

        Raises:
            UnknownService: naming the known services.
        """
        h = self.r.hgetall(self.keys.service(check_service(name)))
        if not h:
            raise UnknownService(name, self.services())
        return ServiceRecord.from_hash(h)

    def generation(self, name: str) -> int:
        """Cheap read of the service's pointer generation (for reload checks)."""
        g = self.r.hget(self.keys.service(check_service(name)), "generation")
        if g is None:
            raise UnknownService(name, self.services())
        return int(g)

    def update_policy(self, name: str, policy: Policy, *, actor: str, reason: str) -> None:
        """Replace a service's policy."""
        self._change(
            name, actor, "registry.update_policy", reason,
            lambda s: ({"policy": policy.model_dump_json()}, {}),
        )

    def accept_performance(self, name: str, *, actor: str, reason: str) -> ServiceRecord:
        """Record that a person accepts the champion's current performance (from now on).

        The monitor then measures the performance alarm against the error the champion has from
        here, not the one it had before: an acknowledged drift is not re-raised every time its
        incident closes, and the next change is dated on its own.
        """
        return self._change(name, actor, "registry.accept_performance", reason,
                            lambda s: ({"accepted_at": repr(self.clock.now())}, {}))

    # --- versions -----------------------------------------------------------------
    def add_version(
        self,
        service: str,
        model: Any,
        *,
        created_by: str,
        training_window: dict[str, Any] | None = None,
        data_hash: str = "",
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        parent: int | None = None,
    ) -> VersionRecord:
        """Save ``model``'s artifact and register it as a new candidate version."""
        self.service(service)  # raises if unknown
        number = int(self.r.incr(self.keys.version_counter(service)))
        uri, sha = self.artifacts.save(service, number, model)
        rec = VersionRecord(
            service=service,
            number=number,
            artifact_uri=uri,
            sha256=sha,
            training_window=training_window or {},
            data_hash=data_hash,
            params=params or {},
            metrics=metrics or {},
            parent=parent,
            created_by=created_by,
            created_at=self.clock.now(),
        )
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.version(service, number), mapping=rec.to_hash())
            audited = self.audit.add_after(
                pipe, created_by, "registry.add_version", service=service,
                reason="new candidate", version=number, parent=parent, sha256=sha,
                metrics=metrics or {},
            )
            pipe.execute()
        audited()
        return rec

    def version(self, service: str, number: int) -> VersionRecord:
        """Return one version.

        Raises:
            UnknownService, UnknownVersion: naming what exists.
        """
        h = self.r.hgetall(self.keys.version(check_service(service), check_version_number(number)))
        if not h:
            self.service(service)
            raise UnknownVersion(service, number, [v.number for v in self.versions(service)])
        return VersionRecord.from_hash(h)

    def versions(self, service: str) -> list[VersionRecord]:
        """All versions of a service, oldest first."""
        last = int(self.r.get(self.keys.version_counter(check_service(service))) or 0)
        if not last:
            return []
        with self.r.pipeline(transaction=False) as pipe:
            for n in range(1, last + 1):
                pipe.hgetall(self.keys.version(service, n))
            rows = pipe.execute()
        return [VersionRecord.from_hash(h) for h in rows if h]

    def load_model(self, service: str, number: int) -> Any:
        """Load a version's fitted model, refusing it if the artifact's sha256 does not match."""
        v = self.version(service, number)
        return self.artifacts.load(v.artifact_uri, v.sha256)

    def set_status(
        self, service: str, number: int, status: VersionStatus, *, actor: str, reason: str
    ) -> None:
        """Set a version's lifecycle status."""
        self.version(service, number)
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.version(service, number), "status", status.value)
            audited = self.audit.add_after(
                pipe, actor, "registry.set_status", service=service, reason=reason,
                version=number, status=status.value,
            )
            pipe.execute()
        audited()

    # --- pointers -----------------------------------------------------------------
    def promote(self, service: str, number: int, *, actor: str, reason: str) -> ServiceRecord:
        """Make ``number`` the champion of all traffic; the old champion becomes ``previous``."""
        self.version(service, number)

        def change(s: ServiceRecord) -> tuple[dict[str, str], dict[int, VersionStatus]]:
            statuses = {number: VersionStatus.PRODUCTION}
            if s.champion is not None and s.champion != number:
                statuses[s.champion] = VersionStatus.RETIRED
            return (
                {
                    "champion": str(number),
                    "previous": "" if s.champion in (None, number) else str(s.champion),
                    "challenger": "",
                    "mode": Mode.FULL.value,
                    "split": "0.0",
                    "champion_since": repr(self.clock.now()),
                },
                statuses,
            )

        return self._change(service, actor, "registry.promote", reason, change, version=number)

    def start_shadow(self, service: str, number: int, *, actor: str, reason: str) -> ServiceRecord:
        """Score ``number`` silently on all traffic next to the champion."""
        return self._set_challenger(service, number, Mode.SHADOW, 0.0, actor, reason)

    def start_canary(
        self, service: str, number: int, split: float, *, actor: str, reason: str
    ) -> ServiceRecord:
        """Let ``number`` answer ``split`` (0 < split < 1) of traffic, sticky by request id."""
        if not 0.0 < split < 1.0:
            raise InvalidInput(f"canary split must be between 0 and 1 (exclusive), got {split!r}")
        return self._set_challenger(service, number, Mode.CANARY, split, actor, reason)

    def clear_challenger(
        self,
        service: str,
        *,
        actor: str,
        reason: str,
        status: VersionStatus = VersionStatus.REJECTED,
    ) -> ServiceRecord:
        """Stop shadow/canary; the challenger gets ``status`` (rejected by default)."""

        def change(s: ServiceRecord) -> tuple[dict[str, str], dict[int, VersionStatus]]:
            statuses = {s.challenger: status} if s.challenger is not None else {}
            return {"challenger": "", "mode": Mode.FULL.value, "split": "0.0"}, statuses

        return self._change(service, actor, "registry.clear_challenger", reason, change)

    def rollback(
        self, service: str, *, actor: str, reason: str, to: int | None = None
    ) -> ServiceRecord:
        """Undo the last risky change.

        With a challenger in shadow or canary, that challenger is removed and rejected. Otherwise
        the champion goes back to ``to`` (default: the previous champion) and the current champion
        is rejected.

        Raises:
            InvalidInput: there is nothing to roll back to.
        """
        s = self.service(service)
        if s.challenger is not None and to is None:
            return self.clear_challenger(service, actor=actor, reason=reason)
        target = to if to is not None else s.previous
        if target is None:
            raise InvalidInput(
                f"service {service!r} has no previous champion to roll back to; "
                "pass a version number"
            )
        self.version(service, target)

        def change(cur: ServiceRecord) -> tuple[dict[str, str], dict[int, VersionStatus]]:
            statuses = {target: VersionStatus.PRODUCTION}
            if cur.champion is not None and cur.champion != target:
                statuses[cur.champion] = VersionStatus.REJECTED
            if cur.challenger is not None:
                statuses[cur.challenger] = VersionStatus.REJECTED
            return (
                {"champion": str(target), "previous": "", "challenger": "",
                 "mode": Mode.FULL.value, "split": "0.0",
                 "champion_since": repr(self.clock.now())},
                statuses,
            )

        return self._change(
            service, actor, "registry.rollback", reason, change,
            version=target, from_version=s.champion,
        )

    def retire(self, service: str, number: int, *, actor: str, reason: str) -> None:
        """Retire a version that is neither champion nor challenger."""
        s = self.service(service)
        if number in (s.champion, s.challenger):
            raise InvalidInput(
                f"version {number} of {service!r} is serving traffic; promote or roll back first"
            )
        self.set_status(service, number, VersionStatus.RETIRED, actor=actor, reason=reason)

    def _set_challenger(
        self, service: str, number: int, mode: Mode, split: float, actor: str, reason: str
    ) -> ServiceRecord:
        self.version(service, number)
        status = VersionStatus.SHADOW if mode is Mode.SHADOW else VersionStatus.CANARY

        def change(s: ServiceRecord) -> tuple[dict[str, str], dict[int, VersionStatus]]:
            if s.champion is None:
                raise InvalidInput(f"service {service!r} has no champion; promote a version first")
            if s.champion == number:
                raise InvalidInput(f"version {number} is already the champion of {service!r}")
            statuses = {number: status}
            if s.challenger not in (None, number):
                statuses[s.challenger] = VersionStatus.REJECTED  # type: ignore[index]
            fields = {"challenger": str(number), "mode": mode.value, "split": repr(split),
                      "challenger_since": repr(self.clock.now())}
            return fields, statuses

        return self._change(
            service, actor, f"registry.start_{mode.value}", reason, change,
            version=number, split=split,
        )

    def _change(
        self,
        service: str,
        actor: str,
        action: str,
        reason: str,
        change: Callable[[ServiceRecord], tuple[dict[str, str], dict[int, VersionStatus]]],
        **details: Any,
    ) -> ServiceRecord:
        """Apply ``change`` to the service hash atomically (optimistic WATCH), with its audit."""
        key = self.keys.service(service)
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    h = pipe.hgetall(key)
                    if not h:
                        raise UnknownService(service, self.services())
                    cur = ServiceRecord.from_hash(h)
                    fields, statuses = change(cur)
                    fields["generation"] = str(cur.generation + 1)
                    pipe.multi()
                    pipe.hset(key, mapping=fields)
                    for n, st in statuses.items():
                        pipe.hset(self.keys.version(service, n), "status", st.value)
                    audited = self.audit.add_after(
                        pipe, actor, action, service=service, reason=reason,
                        champion_before=cur.champion, challenger_before=cur.challenger, **details,
                    )
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        audited()
        return self.service(service)
