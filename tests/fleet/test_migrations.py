"""The ``fleet_tag`` migration: a Redis written with the old key names (hand-written here, as the
previous layout wrote them) reads the same through the stores after ``migrate``."""

from __future__ import annotations

from fleet.audit import Audit
from fleet.keys import Keys
from fleet.migrations import FLEET_TAG, migrate, new_name


def test_old_fleet_keys_move_under_the_fleet_tag_once_and_read_the_same(r, keys: Keys, clock):
    p = keys.prefix
    # Hand-written: the old layout's untagged fleet keys and a service's incident index.
    r.xadd(f"{p}:audit", {"ts": "1.0", "actor": "system", "action": "registry.promote",
                          "service": "elec", "reason": "old entry", "details": "{}"})
    r.hset(f"{p}:incident:inc-elec-performance-1", mapping={"id": "x"})
    r.set(f"{p}:incident:fp:{{elec}}:performance", "inc-elec-performance-1")
    r.sadd(f"{p}:incidents:open", "inc-elec-performance-1")
    r.zadd(f"{p}:{{elec}}:incidents", {"inc-elec-performance-1": 1.0})
    r.set(f"{p}:{{elec}}:incident_seq", 1)
    r.sadd(f"{p}:services", "elec")
    r.hset(f"{p}:{{elec}}:service", mapping={"name": "elec"})  # a service key: stays
    r.set(f"{p}:cp:{{inc-elec-performance-1}}:ns", "x")  # a checkpoint key: stays

    assert migrate(r, keys, now=5.0) == 7
    assert [e.reason for e in Audit(r, keys, clock).read()] == ["old entry"]
    assert r.hget(keys.incident("inc-elec-performance-1"), "id") == "x"
    assert r.smembers(keys.incidents_open) == {"inc-elec-performance-1"}
    assert r.get(keys.incident_fingerprint("elec", "performance")) == "inc-elec-performance-1"
    assert r.zrange(keys.incidents_of("elec"), 0, -1) == ["inc-elec-performance-1"]
    assert r.get(keys.incident_seq("elec")) == "1" and r.smembers(keys.services) == {"elec"}
    assert r.exists(keys.service("elec"), f"{p}:cp:{{inc-elec-performance-1}}:ns") == 2
    assert not r.exists(f"{p}:audit", f"{p}:{{elec}}:incidents", f"{p}:services")
    assert r.hget(keys.schema, FLEET_TAG) == "5.0"

    # Recorded: a second start does nothing, even if an old-style key shows up again.
    r.sadd(f"{p}:services", "late")
    assert migrate(r, keys, now=6.0) == 0
    assert r.smembers(keys.services) == {"elec"}


def test_a_new_key_already_written_is_never_overwritten(r, keys: Keys):
    r.sadd(f"{keys.prefix}:services", "old")
    r.sadd(keys.services, "new")
    assert migrate(r, keys, now=1.0) == 0
    assert r.smembers(keys.services) == {"new"}
    assert r.smembers(f"{keys.prefix}:services") == {"old"}


def test_a_key_another_starting_process_moved_first_is_skipped(r, keys: Keys, monkeypatch):
    r.sadd(f"{keys.prefix}:services", "elec")
    r.xadd(f"{keys.prefix}:audit", {"a": "b"})
    # The race, replayed: our SCAN saw both keys, then another process starting at the same
    # time renamed the audit stream before our RENAMENX reached it.
    scanned = sorted(r.scan_iter(match=f"{keys.prefix}:*"))
    target = new_name(keys, f"{keys.prefix}:audit")
    assert target is not None
    r.rename(f"{keys.prefix}:audit", target)
    monkeypatch.setattr(r, "scan_iter", lambda **kw: iter(scanned))
    assert migrate(r, keys, now=1.0) == 1
    assert r.smembers(keys.services) == {"elec"} and r.xlen(keys.audit) == 1
