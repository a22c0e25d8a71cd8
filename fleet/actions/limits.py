"""Rate limits on writes: one action at a time per service, cooldowns, a rollback cap, failures.

All time comes from the injected clock, so leases and windows follow simulated time in evals.
Lease values carry their own expiry (``{"token", "holder", "exp"}``) and are judged by that clock
instead of a Redis TTL.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import redis

from fleet.actions.spec import iso_time
from fleet.clock import Clock, SystemClock
from fleet.errors import LimitExceeded, ServiceBusy
from fleet.keys import Keys
from fleet.schema import Policy

HOUR_S = 3600.0
COOLDOWN_EXEMPT = frozenset({"rollback", "quarantine"})
"""Safety actions never wait for a cooldown: a bad deploy is rolled back at once (rollbacks have
their own hourly cap) and bad data is quarantined at once."""

Lane = Literal["deploy", "train"]
"""Which lease an action takes. Training holds its own lease for minutes, so a retrain never
blocks a rollback of a bad deploy on the same service."""

# Take the lease if it is free or its holder's lease has expired by the caller's clock.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, held = pcall(cjson.decode, cur)
  if ok and tonumber(held['exp']) > tonumber(ARGV[2]) then return cur end
end
redis.call('SET', KEYS[1], ARGV[1])
return false
"""

# Release only our own lease: a holder whose lease expired and was taken over must not free the
# new holder's.
_RELEASE = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local ok, held = pcall(cjson.decode, cur)
if ok and held['token'] == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
"""


@dataclass(frozen=True)
class Lease:
    """A held per-service lease; give it back with :meth:`Limits.release`."""

    key: str
    service: str
    token: str
    holder: str
    expires_at: float


class Limits:
    """Checks and records the per-service limits of a :class:`~fleet.schema.Policy`."""

    def __init__(self, r: redis.Redis, keys: Keys, clock: Clock | None = None):
        self.r = r
        self.keys = keys
        self.clock = clock or SystemClock()
        self._acquire = r.register_script(_ACQUIRE)
        self._release = r.register_script(_RELEASE)

    # --- one action at a time -------------------------------------------------------------
    def acquire(
        self, service: str, *, holder: str, lease_s: float, lane: Lane = "deploy"
    ) -> Lease:
        """Take the service's lease for ``lease_s`` clock seconds.

        Args:
            service: the service.
            holder: what holds it, for the busy message, e.g. ``promote (incident 'inc-1')``.
            lease_s: how long before the lease counts as abandoned.
            lane: ``deploy`` for serving changes and data, ``train`` for training runs.

        Raises:
            ServiceBusy: someone else holds an unexpired lease.
        """
        key = self.keys.lock(service) if lane == "deploy" else self.keys.train_lock(service)
        token = uuid.uuid4().hex
        exp = self.clock.now() + lease_s
        value = json.dumps({"token": token, "holder": holder, "exp": exp})
        held = self._acquire(keys=[key], args=[value, repr(self.clock.now())])
        if held:
            other = json.loads(held)
            raise ServiceBusy(
                f"service {service!r} is busy: {other['holder']} holds its {lane} lease until "
                f"{iso_time(other['exp'])}; one action runs at a time per service. Retry after "
                "it finishes"
            )
        return Lease(key=key, service=service, token=token, holder=holder, expires_at=exp)

    def release(self, lease: Lease) -> bool:
        """Give the lease back; False if it had expired and someone else took it."""
        return bool(self._release(keys=[lease.key], args=[lease.token]))

    @contextmanager
    def hold(
        self, service: str, *, holder: str, lease_s: float, lane: Lane = "deploy"
    ) -> Iterator[Lease]:
        """Hold the service's lease for the ``with`` block (see :meth:`acquire`)."""
        lease = self.acquire(service, holder=holder, lease_s=lease_s, lane=lane)
        try:
            yield lease
        finally:
            self.release(lease)

    # --- cooldowns and the rollback cap -----------------------------------------------------
    def check(self, service: str, kind: str, policy: Policy) -> None:
        """Refuse ``kind`` on ``service`` if a limit forbids it now.

        Limits: the cooldown after the last run of the same kind (rollback and quarantine are
        exempt), the rollback cap per hour, and for retrain the consecutive-failure count.

        Raises:
            LimitExceeded: naming the limit, the policy value and when it clears.
        """
        now = self.clock.now()
        if kind == "rollback":
            self._check_rollbacks(service, policy, now)
        if kind == "retrain" and self.should_escalate(service, kind, policy):
            raise LimitExceeded(
                f"retrain on {service!r} refused: it failed {self.failures(service, kind)} times "
                f"in a row (policy max_retrain_failures={policy.max_retrain_failures}). Escalate "
                "to a human; a person clears the count once the cause is fixed",
                limit="max_retrain_failures",
            )
        until = self.cooldown_until(service, kind, policy)
        if until is not None:
            last = until - policy.cooldown_s
            raise LimitExceeded(
                f"{kind} on {service!r} refused: the last {kind} ran at {iso_time(float(last))} "
                f"and the cooldown (policy cooldown_s={policy.cooldown_s:g}) runs until "
                f"{iso_time(until)}. Wait, or escalate to a human if it cannot wait",
                limit="cooldown",
                retry_at=until,
            )

    def cooldown_until(self, service: str, kind: str, policy: Policy) -> float | None:
        """When the cooldown of ``kind`` on ``service`` ends, or None if it is not running."""
        if kind in COOLDOWN_EXEMPT or policy.cooldown_s <= 0:
            return None
        last = self.r.hget(self.keys.cooldown(service), kind)
        if last is None or self.clock.now() >= float(last) + policy.cooldown_s:
            return None
        return float(last) + policy.cooldown_s

    def _check_rollbacks(self, service: str, policy: Policy, now: float) -> None:
        key = self.keys.rollbacks(service)
        with self.r.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", repr(now - HOUR_S))
            pipe.zrange(key, 0, -1, withscores=True)
            _, recent = pipe.execute()
        cap = policy.max_rollbacks_per_hour
        if len(recent) >= cap:
            # The oldest counted rollback leaves the one-hour window first.
            retry_at = recent[-cap][1] + HOUR_S if cap > 0 else None
            raise LimitExceeded(
                f"rollback on {service!r} refused: {len(recent)} rollbacks in the last hour "
                f"reach the cap (policy max_rollbacks_per_hour={cap}). Escalate to a human: "
                "something keeps failing and more rollbacks will not fix it",
                limit="max_rollbacks_per_hour",
                retry_at=retry_at,
            )

    def record(self, service: str, kind: str, *, ref: str = "") -> None:
        """Note that ``kind`` ran on ``service`` now (starts its cooldown; counts rollbacks).

        Args:
            service: the service.
            kind: the action kind.
            ref: tells apart rollbacks recorded at the same instant (e.g. the ledger key).
        """
        now = self.clock.now()
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.cooldown(service), kind, repr(now))
            if kind == "rollback":
                pipe.zadd(self.keys.rollbacks(service), {f"{now!r}:{ref or uuid.uuid4().hex}": now})
            pipe.execute()

    def rollbacks_in_last_hour(self, service: str) -> int:
        """How many rollbacks of ``service`` fall in the last hour."""
        now = self.clock.now()
        return int(self.r.zcount(self.keys.rollbacks(service), f"({now - HOUR_S!r}", "+inf"))

    # --- consecutive failures ---------------------------------------------------------------
    def record_failure(self, service: str, kind: str) -> int:
        """Count one more consecutive failure of ``kind``; return the new count."""
        return int(self.r.hincrby(self.keys.failures(service), kind, 1))

    def reset_failures(self, service: str, kind: str) -> None:
        """Reset the consecutive-failure count of ``kind`` (after a success, or by a person)."""
        self.r.hdel(self.keys.failures(service), kind)

    def failures(self, service: str, kind: str) -> int:
        """Consecutive failures of ``kind`` on ``service`` since its last success."""
        return int(self.r.hget(self.keys.failures(service), kind) or 0)

    def should_escalate(self, service: str, kind: str, policy: Policy) -> bool:
        """Whether ``kind`` failed ``policy.max_retrain_failures`` times in a row (or more).

        The policy has one failure threshold; it applies to every action kind.
        """
        return self.failures(service, kind) >= policy.max_retrain_failures
