"""Audit entries of a service's changes on a Redis Cluster: written with the change, moved once.

A registry change (service slot) and the audit stream (fleet slot) cannot share a MULTI on a
cluster. So the entry is appended to the service's outbox stream ``P:{svc}:audit:outbox`` INSIDE
the change's transaction, and then moved to the audit stream. The move is exactly-once: a Lua
script in the fleet slot appends the entry only if it sets the entry's marker
``P:F:audit:moved:SVC:ID`` first (SET NX, expiring after ``MARK_TTL_S``), and the outbox entry
is deleted after. A crash at any point leaves the entry in the outbox or in the audit stream,
and the next drain (the service's next change, or ``flywheel`` starting) finishes the move
without writing it twice. Entries keep their order and their original ``ts``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fleet.keys import Keys

MARK_TTL_S = 7 * 86_400
"""How long a moved entry's marker lives: a drain must run within this after a crash."""

# KEYS: audit stream, the entry's marker. ARGV: marker TTL, then the entry's field/value pairs.
_MOVE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
  return 1
end
return 0
"""


class AuditOutbox:
    """Queues audit entries in a service's outbox and moves them to the audit stream."""

    def __init__(self, r: Any, keys: Keys):
        self.r = r
        self.keys = keys
        self._move = r.register_script(_MOVE)

    def queue(self, pipe: Any, service: str, entry: dict[str, str]) -> None:
        """Queue ``entry`` in ``service``'s outbox on ``pipe`` (the change's transaction)."""
        pipe.xadd(self.keys.audit_outbox(service), entry)

    def drain(self, service: str) -> int:
        """Move every entry of ``service``'s outbox to the audit stream, oldest first.

        Safe to run at any time and from several processes at once: each entry is appended once.

        Returns:
            How many entries this call appended.
        """
        box, moved = self.keys.audit_outbox(service), 0
        while True:
            rows = self.r.xrange(box, count=100)
            if not rows:
                return moved
            for sid, fields in rows:
                sid = sid if isinstance(sid, str) else sid.decode()
                flat = [x for pair in fields.items() for x in pair]
                mark = self.keys.audit_moved(service, sid)
                moved += int(self._move(keys=[self.keys.audit, mark], args=[MARK_TTL_S, *flat]))
                self.r.xdel(box, sid)

    def drain_all(self, services: Iterable[str]) -> int:
        """Drain the outboxes of ``services`` (at start-up, after a crash); return entries moved."""
        return sum(self.drain(s) for s in services if self.r.exists(self.keys.audit_outbox(s)))
