"""``flywheel run``: the background loop — tick the monitor, advance incidents, keep shard leases.

Services hash to a fixed number of shards; each worker owns some shards by expiring leases (a fair
share of the live workers) and takes over a dead worker's shards when their leases lapse. Each
incident is advanced under its own lease, so no two workers ever work one incident at once. A live
worker renews its leases in the background, even during a long pass; a killed one loses them
within their TTL. Redis outages back off and retry; SIGTERM finishes the current pass and exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from apps.logs import AuditTail, fields
from fleet.keys import Keys
from fleet.leases import Leases, shard_of

log = logging.getLogger("flywheel.loop")


@dataclass(frozen=True)
class LoopConfig:
    """Tunables of one loop worker."""

    shards: int = 16
    """Fixed number of service shards (every worker must use the same)."""
    tick_interval_s: float = 5.0
    """Pause between passes."""
    shard_ttl_s: float = 30.0
    """Shard lease TTL, renewed each pass: a dead worker's shards are free after this."""
    incident_ttl_s: float = 30.0
    """Incident lease TTL, renewed in the background while a thread runs: a worker killed
    mid-incident frees it after this."""
    heartbeat_ttl_s: float = 30.0
    """A worker silent for this long no longer counts toward the fair share."""


@dataclass
class PassReport:
    """What one pass of the loop did (also logged as one JSON line)."""

    shards: list[int] = field(default_factory=list)
    services: int = 0
    signals: int = 0
    started: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    trainer: str = "ok"
    """The trainer's health: ``ok``, ``rebuilt N times`` or ``broken: why``."""
    pruned: dict[str, Any] | None = None
    """Counts of the retention pass, on the passes that ran one (see fleet.retention)."""

    @property
    def busy(self) -> bool:
        """Whether the pass did or found anything beyond ticking (logged at INFO, else DEBUG)."""
        return bool(self.signals or self.started or self.resumed or self.expired
                    or self.executed or self.errors or self.pruned or self.trainer != "ok")


class ShardOwner:
    """Keeps this worker's fair share of shard leases, and gives up the rest."""

    def __init__(self, r: redis.Redis, keys: Keys, leases: Leases, cfg: LoopConfig):
        self.r, self.keys, self.leases, self.cfg = r, keys, leases, cfg
        self.owned: set[int] = set()

    def refresh(self) -> set[int]:
        """Heartbeat, renew owned shards, take free ones up to the fair share."""
        now = time.time()
        self.r.zadd(self.keys.loop_workers, {self.leases.owner: now})
        self.r.zremrangebyscore(self.keys.loop_workers, 0, now - self.cfg.heartbeat_ttl_s)
        alive = max(1, int(self.r.zcard(self.keys.loop_workers)))
        share = math.ceil(self.cfg.shards / alive)
        kept = {s for s in self.owned
                if self.leases.renew(self.keys.loop_shard(s), self.cfg.shard_ttl_s)}
        # Too many (a worker joined): release the surplus so it can take them.
        for s in sorted(kept)[share:]:
            self.leases.release(self.keys.loop_shard(s))
            kept.discard(s)
        for s in range(self.cfg.shards):
            if len(kept) >= share:
                break
            if s not in kept and self.leases.acquire(self.keys.loop_shard(s), self.cfg.shard_ttl_s):
                kept.add(s)
        self.owned = kept
        return kept

    def keep_alive(self, stop: threading.Event) -> None:
        """Renew the heartbeat and the owned shards every third of their TTL until ``stop``.

        Run in a thread by :meth:`Loop.run_forever`, so a long pass (a training run, a slow
        incident) never lets them lapse; a killed worker's leases lapse within their TTL.
        """
        period = min(self.cfg.shard_ttl_s, self.cfg.heartbeat_ttl_s) / 3
        while not stop.wait(period):
            try:
                self.r.zadd(self.keys.loop_workers, {self.leases.owner: time.time()})
                for s in list(self.owned):
                    self.leases.renew(self.keys.loop_shard(s), self.cfg.shard_ttl_s)
            except redis.RedisError as exc:  # the pass backs off; the next renewal may work
                log.warning("loop.keepalive_failed", extra=fields(error=str(exc)))

    def owns(self, service: str) -> bool:
        """Whether this worker owns ``service``'s shard."""
        return shard_of(service, self.cfg.shards) in self.owned

    def release_all(self) -> None:
        """Give up every shard (graceful shutdown) and leave the worker set."""
        for s in self.owned:
            self.leases.release(self.keys.loop_shard(s))
        self.owned = set()
        self.r.zrem(self.keys.loop_workers, self.leases.owner)
        self.r.hdel(self.keys.loop_trainers, self.leases.owner)


class Loop:
    """One worker of the background loop over a composed system (see ``apps.system``)."""

    def __init__(self, system: Any, cfg: LoopConfig | None = None, *, owner: str | None = None,
                 pruner: Any = None, events: AuditTail | None = None):
        self.system = system
        self.pruner = pruner  # fleet.retention.Pruner, run when due (slow cadence)
        self.events = events  # logs this worker's services' audit entries, one line each
        self.cfg = cfg or LoopConfig()
        fleet = system.fleet
        self.leases = Leases(fleet.r, owner=owner)
        self.shards = ShardOwner(fleet.r, fleet.keys, self.leases, self.cfg)
        self.stop_event = threading.Event()
        system.driver.owns = self.shards.owns
        system.driver.claim = lambda inc: self.leases.hold(
            fleet.keys.loop_incident(inc), self.cfg.incident_ttl_s, keepalive=True)
        system.runner.worker = self.leases.owner

    def run_once(self) -> PassReport:
        """One pass: shard leases, monitor tick on owned services, incident advancement."""
        rep = PassReport(shards=sorted(self.shards.refresh()))
        services = [s for s in self.system.fleet.registry.services() if self.shards.owns(s)]
        rep.services = len(services)
        if services:
            tick = self.system.monitor.tick(services=services)
            rep.signals = len(getattr(tick, "signals", []) or [])
        step = self.system.driver.step()
        rep.started, rep.resumed, rep.expired = step.started, step.resumed, step.expired
        rep.errors = step.errors
        if getattr(self.system, "approved", None) is not None:  # approved chat-made requests
            rep.executed = sorted(self.system.approved.sweep(owns=self.shards.owns))
        rep.trainer = self.report_trainer()
        if self.pruner is not None and self.pruner.due(time.time()):
            rep.pruned = self._prune()
        if self.events is not None:  # last: the entries this pass wrote are logged by it
            self.events.emit(owns=self._logs_for)
        return rep

    def _logs_for(self, service: str) -> bool:
        """Whether this worker logs an audit entry of ``service`` (fleet-wide: shard 0's owner)."""
        return self.shards.owns(service) if service else 0 in self.shards.owned

    def _prune(self) -> dict[str, Any]:
        """One retention pass; its failure is reported, it never stops the pass."""
        try:
            return self.pruner.run(now_real=time.time()).summary()
        except (redis.ConnectionError, redis.TimeoutError):
            raise  # the loop backs off and retries
        except Exception as exc:
            log.exception("loop.retention_failed",
                          extra=fields(error=f"{type(exc).__name__}: {exc}"[:300]))
            return {"errors": [f"{type(exc).__name__}: {exc}"[:300]]}

    def report_trainer(self) -> str:
        """Check the trainer (a broken pool is replaced here) and publish its health in Redis.

        ``/healthz`` reads what every live worker published (``keys.loop_trainers``).
        """
        health = self.system.trainer.health()
        r, keys = self.system.fleet.r, self.system.fleet.keys
        r.hset(keys.loop_trainers, self.leases.owner,
               json.dumps({**health.to_dict(), "at": time.time()}))
        # A SIGKILLed worker never withdraws its report: drop the reports of workers that left
        # the heartbeat set (refresh() prunes it), so the hash stays one entry per live worker.
        gone = set(r.hkeys(keys.loop_trainers)) - set(r.zrange(keys.loop_workers, 0, -1))
        if gone:
            r.hdel(keys.loop_trainers, *gone)
        if health.state == "broken":
            log.warning("loop.trainer_broken",
                        extra=fields(worker=self.leases.owner, error=health.error))
        return health.summary

    def run_forever(self) -> None:
        """Loop until SIGTERM/SIGINT or :meth:`stop`; Redis outages back off and retry."""
        self._install_signals()
        backoff = 1.0
        log.info("loop.start", extra=fields(worker=self.leases.owner))
        keeping = threading.Event()
        keeper = threading.Thread(target=self.shards.keep_alive, args=(keeping,), daemon=True,
                                  name="loop-keepalive")
        keeper.start()
        try:
            while not self.stop_event.is_set():
                try:
                    rep = self.run_once()
                    backoff = 1.0
                    # A quiet pass (nothing started, resumed, expired, run or failed) is DEBUG:
                    # at INFO the log carries only what changed.
                    log.log(logging.INFO if rep.busy else logging.DEBUG, "loop.pass",
                            extra=fields(worker=self.leases.owner, **rep.__dict__))
                    self.stop_event.wait(self.cfg.tick_interval_s)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    log.warning("loop.redis_down", extra=fields(error=str(exc),
                                                                retry_in_s=backoff))
                    self.stop_event.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                except Exception as exc:  # a bug in one pass must not stop the daemon
                    log.exception("loop.error", extra=fields(
                        worker=self.leases.owner, error=f"{type(exc).__name__}: {exc}"[:300],
                        retry_in_s=backoff))
                    self.stop_event.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
        finally:
            keeping.set()
            keeper.join()
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                self.shards.release_all()  # if Redis is down, the leases expire by themselves
            log.info("loop.stop", extra=fields(worker=self.leases.owner))

    def stop(self) -> None:
        """Ask the loop to finish its current pass and exit."""
        self.stop_event.set()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())
