"""Key-layout migrations of an existing Redis, applied once per prefix, recorded in ``P:F:schema``.

``fleet_tag``: fleet-wide keys moved from ``P:suffix`` to ``P:{P:fleet}:suffix`` (one Redis Cluster
slot, see fleet/keys), and a service's incident index and counter from ``P:{svc}:incidents`` /
``P:{svc}:incident_seq`` to fleet keys. Only a single-node Redis can hold the old layout (on a
cluster it never worked), so a cluster is just marked migrated.
"""

from __future__ import annotations

from typing import Any

import redis

from fleet.keys import Keys
from fleet.store import is_cluster

FLEET_TAG = "fleet_tag"
"""Name of the migration in ``P:F:schema``."""

_FLEET_HEADS = frozenset({
    "services", "dlq", "audit", "monitor", "schema", "incidents", "incident", "approvals",
    "approval", "act", "loop",
})
"""First segments of the old untagged fleet keys (``P:audit``, ``P:incident:ID``, ...)."""

_MOVED_SERVICE_KEYS = {"incidents": "incidents:of:", "incident_seq": "incident_seq:"}
"""Old service-key suffix -> new fleet suffix head (the service name follows)."""


def new_name(keys: Keys, key: str) -> str | None:
    """The new-layout name of an old-layout ``key``, or None if it keeps its name.

    >>> k = Keys("fw")
    >>> new_name(k, "fw:incident:fp:{elec}:performance")
    'fw:{fw:fleet}:incident:fp:{elec}:performance'
    >>> new_name(k, "fw:{elec}:incidents")
    'fw:{fw:fleet}:incidents:of:elec'
    >>> new_name(k, "fw:{elec}:tel") is None, new_name(k, "fw:cp:{t}:ns") is None
    (True, True)
    """
    head = f"{keys.prefix}:"
    if not key.startswith(head):
        return None
    rest = key[len(head):]
    if rest.startswith("{"):
        svc, sep, suffix = rest[1:].partition("}:")
        if sep and suffix in _MOVED_SERVICE_KEYS and ":" not in svc:
            return keys._fleet(_MOVED_SERVICE_KEYS[suffix] + svc)
        return None
    return keys._fleet(rest) if rest.split(":", 1)[0] in _FLEET_HEADS else None


def migrate(r: Any, keys: Keys, *, now: float) -> int:
    """Apply the ``fleet_tag`` migration if this prefix has not had it; return keys renamed.

    Run it before any process writes with the new layout (``open_fleet`` does, on start). A key
    whose new name already exists is left where it is (RENAMENX), never overwritten.
    """
    schema = keys.schema
    if r.hexists(schema, FLEET_TAG):
        return 0
    moved = 0
    if not is_cluster(r):
        pattern = f"{_glob_escape(keys.prefix)}:*"
        for key in list(r.scan_iter(match=pattern, count=1000)):
            target = new_name(keys, key if isinstance(key, str) else key.decode())
            if target is None:
                continue
            try:
                moved += int(r.renamenx(key, target))
            except redis.ResponseError:  # gone: another process starting now moved it first
                continue
    r.hset(schema, FLEET_TAG, repr(now))
    return moved


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
