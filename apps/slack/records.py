"""Slack's shared state in Redis, so every process agrees on what was posted and handled.

Which message shows which approval or incident, who posts it, who locks it, and which
deliveries were already handled.

Each operation touches one key (keys built by :class:`fleet.keys.Keys`), so it works the same on
Redis Cluster.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import redis

from fleet.keys import Keys

DELIVERY_TTL_S = 3600
"""How long a handled delivery is remembered; Slack stops retrying within minutes."""
CLAIM_TTL_S = 60
"""A process posting a message holds its claim this long; a crashed poster's claim lapses."""
RECORD_TTL_S = 7 * 86_400
"""How long a message record is kept after its approval or incident is settled."""


@dataclass(frozen=True)
class Posted:
    """Where a message was posted."""

    channel: str
    ts: str


class SlackRecords:
    """Message records, post claims and handled deliveries, shared by every process."""

    def __init__(self, r: redis.Redis, keys: Keys, owner: str = ""):
        self.r, self.keys, self.owner = r, keys, owner or "flywheel"

    # --- deliveries -----------------------------------------------------------------------
    def first(self, delivery_id: str) -> bool:
        """Record a delivery; True only for the first process that sees it (retries: False)."""
        return bool(self.r.set(self.keys.slack_delivery(delivery_id), self.owner, nx=True,
                               ex=DELIVERY_TTL_S))

    # --- posting --------------------------------------------------------------------------
    def claim_post(self, ref: str) -> bool:
        """Claim the right to post the message of ``ref`` (``approval:ID`` / ``incident:ID``)."""
        return bool(self.r.set(self.keys.slack_claim(ref), self.owner, nx=True, ex=CLAIM_TTL_S))

    def release_post(self, ref: str) -> None:
        """Give the claim back after a failed post, so the next pass (anywhere) retries."""
        self.r.delete(self.keys.slack_claim(ref))

    # --- approval prompts -----------------------------------------------------------------
    def prompt(self, approval_id: str) -> Posted | None:
        """Where the prompt of ``approval_id`` was posted, if it was."""
        channel, ts = self.r.hmget(self.keys.slack_approval(approval_id), ["channel", "ts"])
        return Posted(channel, ts) if channel and ts else None

    def posted_prompt(self, approval_id: str, where: Posted) -> None:
        """Remember a posted prompt and list it as open (to lock once decided)."""
        self.r.hset(self.keys.slack_approval(approval_id),
                    mapping={"channel": where.channel, "ts": where.ts})
        self.r.sadd(self.keys.slack_open, approval_id)

    def open_prompts(self) -> list[str]:
        """Approval ids whose prompt is posted and not locked yet."""
        return sorted(self.r.smembers(self.keys.slack_open))

    def claim_lock(self, approval_id: str) -> bool:
        """Claim the one ``chat.update`` that locks the prompt; True for the first caller only."""
        key = self.keys.slack_approval(approval_id)
        if not self.r.hsetnx(key, "locked", self.owner):
            return False
        self.r.expire(key, RECORD_TTL_S)
        return True

    def locked(self, approval_id: str) -> None:
        """The prompt is locked: stop watching it."""
        self.r.srem(self.keys.slack_open, approval_id)

    def release_lock(self, approval_id: str) -> None:
        """A lock that failed to reach Slack: let the next pass try again."""
        self.r.hdel(self.keys.slack_approval(approval_id), "locked")

    # --- incident threads -----------------------------------------------------------------
    def thread(self, incident_id: str) -> tuple[Posted | None, str]:
        """Where the thread of ``incident_id`` is, and the last audit id summarised in it."""
        channel, ts, cursor = self.r.hmget(self.keys.slack_incident(incident_id),
                                           ["channel", "ts", "cursor"])
        return (Posted(channel, ts) if channel and ts else None), cursor or "0"

    def opened_thread(self, incident_id: str, where: Posted, cursor: str) -> None:
        """Remember a posted incident thread and list it as open."""
        self.r.hset(self.keys.slack_incident(incident_id),
                    mapping={"channel": where.channel, "ts": where.ts, "cursor": cursor})
        self.r.sadd(self.keys.slack_incidents, incident_id)

    def advanced(self, incident_id: str, cursor: str) -> None:
        """The thread has summarised every audit entry up to ``cursor``."""
        self.r.hset(self.keys.slack_incident(incident_id), "cursor", cursor)

    def announced(self, incident_id: str) -> str:
        """The last outcome (escalated, resolved, failed) the thread announced ('' if none)."""
        return self.r.hget(self.keys.slack_incident(incident_id), "announced") or ""

    def announce(self, incident_id: str, status: str) -> None:
        """Remember the outcome the thread just announced."""
        self.r.hset(self.keys.slack_incident(incident_id), "announced", status)

    def open_threads(self) -> list[str]:
        """Incident ids whose thread is not closed yet."""
        return sorted(self.r.smembers(self.keys.slack_incidents))

    def closed_thread(self, incident_id: str) -> None:
        """The incident ended and its thread says so: stop following it."""
        self.r.srem(self.keys.slack_incidents, incident_id)
        self.r.expire(self.keys.slack_incident(incident_id), RECORD_TTL_S)


class LocalDeliveries:
    """Ids of recent deliveries in this process only, bounded; ``first(id)`` is true once per id.

    The fallback when no Redis is shared (:meth:`SlackRecords.first` is the fleet-wide one).
    """

    def __init__(self, size: int = 10_000):
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def first(self, key: str) -> bool:
        """Record ``key``; return whether it had not been seen."""
        with self._lock:
            if key in self._ids:
                return False
            self._ids[key] = None
            if len(self._ids) > self.size:
                self._ids.popitem(last=False)
            return True
