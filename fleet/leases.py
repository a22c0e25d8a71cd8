"""Expiring, token-checked leases in Redis: who works an incident or owns a shard right now.

A lease is ``SET key token NX PX ttl``; renewing or releasing checks the token in Lua so a process
whose lease expired (and was taken over) can never extend or drop the new owner's lease. Expiry
uses Redis time, not the injected clock: leases guard real processes, which live in real time.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
import zlib
from collections.abc import Iterator

import redis

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def shard_of(service: str, shards: int) -> int:
    """The fixed shard a service hashes to (stable across processes and restarts).

    >>> shard_of("elec", 16) == shard_of("elec", 16)
    True
    """
    return zlib.crc32(service.encode()) % shards


class Leases:
    """Acquire, renew and release leases held by one owner (a process)."""

    def __init__(self, r: redis.Redis, *, owner: str | None = None):
        self.r = r
        self.owner = owner or f"{uuid.uuid4().hex[:8]}"
        self._renew = r.register_script(_RENEW)
        self._release = r.register_script(_RELEASE)

    def acquire(self, key: str, ttl_s: float) -> bool:
        """Take ``key`` for ``ttl_s`` seconds if nobody holds it (or we already do: renews)."""
        if self.r.set(key, self.owner, nx=True, px=int(ttl_s * 1000)):
            return True
        return self.renew(key, ttl_s)

    def renew(self, key: str, ttl_s: float) -> bool:
        """Extend our lease on ``key``; False if it is not ours (any more)."""
        return bool(self._renew(keys=[key], args=[self.owner, int(ttl_s * 1000)]))

    def release(self, key: str) -> bool:
        """Drop our lease on ``key``; False if it was not ours."""
        return bool(self._release(keys=[key], args=[self.owner]))

    def holder(self, key: str) -> str | None:
        """Who holds ``key`` now, if anyone."""
        v = self.r.get(key)
        return v.decode() if isinstance(v, bytes) else v

    @contextlib.contextmanager
    def hold(self, key: str, ttl_s: float, *, keepalive: bool = False) -> Iterator[bool]:
        """``with leases.hold(key, ttl) as mine:`` — released on exit when taken.

        With ``keepalive`` a background thread renews the lease every ``ttl_s / 3`` while the
        block runs, so work longer than the TTL keeps it, and a killed process loses it within
        ``ttl_s``.
        """
        mine = self.acquire(key, ttl_s)
        stop = threading.Event()
        keeper = None
        if mine and keepalive:
            keeper = threading.Thread(target=self._keep, args=(key, ttl_s, stop), daemon=True,
                                      name=f"lease-keeper:{key}")
            keeper.start()
        try:
            yield mine
        finally:
            stop.set()
            if keeper is not None:
                keeper.join()
            if mine:
                self.release(key)

    def _keep(self, key: str, ttl_s: float, stop: threading.Event) -> None:
        while not stop.wait(ttl_s / 3):
            try:
                if not self.renew(key, ttl_s):
                    log.warning("lease %s was lost (expired and taken over)", key)
                    return
            except redis.RedisError as exc:  # the next renewal may get through
                log.warning("lease %s not renewed: %s", key, exc)
