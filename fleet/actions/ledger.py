"""Idempotency records of side effects: each runs at most once per incident, action and args.

A record ``keys.action(key)`` is claimed atomically before the side effect runs (state
``running`` with an owner and a lease) and closed after it (``done`` with the JSON result, or
``failed`` with the error). A later call with the same key returns the stored result without
running again, so a graph resumed after a crash never deploys, trains or registers twice.

States and what a new call does:

- ``done``: return the stored result; never run again.
- ``failed``: the function raised a domain error (a refusal before its effect): run again.
- ``running`` with a live lease: someone else is running it: raise :class:`ActionInProgress`.
- ``running`` with an expired lease (its owner crashed), or ``unknown`` (it raised something
  unexpected, maybe after its effect): run again only if the caller says the action is safe to
  repeat, else raise :class:`ActionOutcomeUnknown` so a person checks what happened.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from fleet.actions.spec import canonical_json, iso_time, sha256_hex
from fleet.audit import Audit
from fleet.clock import Clock, SystemClock
from fleet.errors import ActionInProgress, ActionOutcomeUnknown, FleetError
from fleet.keys import Keys

LEDGER_SCHEMA = 1
"""Version of the record layout; bump with a migration when it changes."""
DEFAULT_LEASE_S = 300.0
"""How long a claim stays live without an outcome before it counts as crashed."""
RECORD_TTL_S = 30 * 86_400
"""Real seconds a closed record is kept; far longer than any incident stays resumable."""

# Claims the record, or says why not. Time comes from the caller's clock (ARGV[1]) so leases
# follow simulated time in evals.
_CLAIM = """
local k = KEYS[1]
local now = tonumber(ARGV[1])
local state = redis.call('HGET', k, 'state')
if state == 'done' then
  return {'done', redis.call('HGET', k, 'result')}
end
if state == 'running' and tonumber(redis.call('HGET', k, 'lease_until')) > now then
  return {'busy', redis.call('HGET', k, 'owner'), redis.call('HGET', k, 'lease_until')}
end
if state and state ~= 'failed' and ARGV[4] ~= '1' then
  return {'stuck', state, redis.call('HGET', k, 'owner'), redis.call('HGET', k, 'started_at')}
end
redis.call('HSET', k, 'v', ARGV[8], 'state', 'running', 'owner', ARGV[2], 'started_at', ARGV[1],
  'lease_until', ARGV[3], 'incident', ARGV[5], 'name', ARGV[6], 'args', ARGV[7])
redis.call('HDEL', k, 'error', 'finished_at')
redis.call('PERSIST', k)
return {'claimed', tostring(redis.call('HINCRBY', k, 'attempts', 1))}
"""

# Closes the record only if this run still owns it (a slow owner whose lease was taken over
# must not overwrite the new run's outcome).
_FINISH = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], ARGV[3], ARGV[4], 'finished_at', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
"""


class ActionState(StrEnum):
    """Where one side effect is."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ActionRecord:
    """One idempotency record as read back."""

    key: str
    incident: str
    name: str
    args: dict[str, Any]
    state: ActionState
    owner: str
    started_at: float
    lease_until: float
    attempts: int
    result: Any = None
    """The function's JSON result once ``done``."""
    error: str = ""
    """Why it failed, once ``failed`` or ``unknown``."""
    finished_at: float | None = None


def action_key(incident: str, name: str, args: dict[str, Any], step: str = "") -> str:
    """The ledger key of one side effect: sha256 of incident, action name and canonical args.

    >>> action_key("inc-1", "promote", {"version": 3}) == action_key("inc-1", "promote",
    ...     {"version": 3})
    True
    >>> action_key("inc-1", "promote", {"version": 3}) == action_key("inc-2", "promote",
    ...     {"version": 3})
    False
    """
    ident: dict[str, Any] = {"incident": incident, "action": name, "args": args}
    if step:
        ident["step"] = step
    return sha256_hex(canonical_json(ident))


class ActionLedger:
    """Runs side effects at most once per key and remembers their results.

    Args:
        r: a decoding Redis client.
        keys: the key layout.
        clock: judges leases (simulated time in evals).
        audit: records operators clearing a record with :meth:`forget`.
        owner: names this process in records (default ``host:pid``).
    """

    def __init__(
        self,
        r: redis.Redis,
        keys: Keys,
        clock: Clock | None = None,
        *,
        audit: Audit | None = None,
        owner: str | None = None,
    ):
        self.r = r
        self.keys = keys
        self.clock = clock or SystemClock()
        self.audit = audit or Audit(r, keys, self.clock)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self._claim = r.register_script(_CLAIM)
        self._finish = r.register_script(_FINISH)

    def run_once(
        self,
        incident: str,
        name: str,
        args: dict[str, Any],
        fn: Callable[[], Any],
        *,
        retry_safe: bool = False,
        lease_s: float = DEFAULT_LEASE_S,
        step: str = "",
    ) -> Any:
        """Run ``fn`` unless this side effect already ran; return its (stored) JSON result.

        Args:
            incident: incident the action belongs to.
            name: action name, e.g. ``promote``.
            args: the action's JSON arguments; with ``incident`` and ``name`` they form the key.
            fn: does the side effect and returns a JSON-able result.
            retry_safe: repeating ``fn`` does no harm, so a run whose owner crashed may run again.
            lease_s: clock seconds after which a claim without an outcome counts as crashed.
            step: optional discriminator for a deliberate repeat in the same incident.

        Raises:
            ActionInProgress: another owner is running it and its lease has not expired.
            ActionOutcomeUnknown: an earlier run crashed or ended unexpectedly and
                ``retry_safe`` is false.
            Exception: whatever ``fn`` raised (recorded first).
        """
        key = action_key(incident, name, args, step)
        rkey = self.keys.action(key)
        now = self.clock.now()
        token = f"{self.owner}:{uuid.uuid4().hex[:8]}"
        reply = self._claim(
            keys=[rkey],
            args=[repr(now), token, repr(now + lease_s), "1" if retry_safe else "0",
                  incident, name, canonical_json(args), str(LEDGER_SCHEMA)],
        )
        verdict = reply[0]
        if verdict == "done":
            return json.loads(reply[1])
        if verdict == "busy":
            raise ActionInProgress(
                f"{name} {canonical_json(args)} for incident {incident!r} is already running "
                f"(owner {reply[1]!r}, lease until {iso_time(float(reply[2]))}); wait for it "
                "to finish, then call again to get its result"
            )
        if verdict == "stuck":
            raise ActionOutcomeUnknown(
                f"{name} {canonical_json(args)} for incident {incident!r} started at "
                f"{iso_time(float(reply[3]))} (owner {reply[2]!r}) and never recorded an "
                f"outcome (state {reply[1]!r}); it may have taken effect and is not safe to "
                f"repeat. Check what it changes, then clear it: flywheel actions forget {key}"
            )
        return self._run(rkey, token, fn)

    def _run(self, rkey: str, token: str, fn: Callable[[], Any]) -> Any:
        try:
            result = fn()
            payload = canonical_json(result)
        except FleetError as exc:
            # A domain refusal (unknown version, too few rows): nothing happened, so a later
            # call may run it again.
            self._close(rkey, token, ActionState.FAILED, "error", str(exc))
            raise
        except Exception as exc:
            # Unexpected: the effect may or may not have happened. Record that; the record only
            # runs again for actions marked safe to repeat.
            self._close(rkey, token, ActionState.UNKNOWN, "error", f"{type(exc).__name__}: {exc}")
            raise
        self._close(rkey, token, ActionState.DONE, "result", payload)
        return json.loads(payload)

    def _close(self, rkey: str, token: str, state: ActionState, field: str, value: str) -> None:
        self._finish(
            keys=[rkey],
            args=[token, state.value, field, value[:4000], repr(self.clock.now()), RECORD_TTL_S],
        )

    def get(
        self, incident: str, name: str, args: dict[str, Any], step: str = ""
    ) -> ActionRecord | None:
        """The record of one side effect, or None if it never started."""
        return self.get_key(action_key(incident, name, args, step))

    def get_key(self, key: str) -> ActionRecord | None:
        """The record stored under ``key`` (as returned by :func:`action_key`), or None."""
        h = self.r.hgetall(self.keys.action(key))
        if not h:
            return None
        return ActionRecord(
            key=key,
            incident=h.get("incident", ""),
            name=h.get("name", ""),
            args=json.loads(h.get("args") or "{}"),
            state=ActionState(h["state"]),
            owner=h.get("owner", ""),
            started_at=float(h.get("started_at") or 0.0),
            lease_until=float(h.get("lease_until") or 0.0),
            attempts=int(h.get("attempts") or 0),
            result=json.loads(h["result"]) if h.get("result") else None,
            error=h.get("error", ""),
            finished_at=float(h["finished_at"]) if h.get("finished_at") else None,
        )

    def forget(self, key: str, *, actor: str, reason: str) -> bool:
        """Delete a record so its action may run again (an operator's decision, audited).

        Returns:
            Whether a record existed.
        """
        rec = self.get_key(key)
        if rec is None:
            return False
        with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.action(key))
            self.audit.add_to(
                pipe, actor, "action.forget", reason=reason, key=key, incident=rec.incident,
                name=rec.name, args=rec.args, state=rec.state.value,
            )
            pipe.execute()
        return True
