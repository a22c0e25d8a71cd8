"""Redis URL forms (single node, ``redis+cluster://``, ``FLYWHEEL_REDIS_CLUSTER``) and the key
layout's hash tags: which keys share a Redis Cluster slot. No server needed."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from redis.connection import SSLConnection
from redis.crc import key_slot

from apps.settings import Settings
from fleet.errors import InvalidInput
from fleet.keys import Keys
from fleet.store import as_cluster_url, cluster_options, is_cluster_url, redact
from graphs.checkpoint_layout import CheckpointKeys


def test_a_cluster_url_gives_every_node_and_the_single_node_auth_options():
    opts = cluster_options("redis+cluster://app:s3cret@10.0.0.1:7001,10.0.0.2:7002/0",
                           decode=True, timeout=2.0)
    assert [(n.host, n.port) for n in opts["startup_nodes"]] == [("10.0.0.1", 7001),
                                                               ("10.0.0.2", 7002)]
    assert (opts["username"], opts["password"]) == ("app", "s3cret")
    assert opts["decode_responses"] is True and opts["socket_timeout"] == 2.0
    assert "ssl" not in opts and "db" not in opts


def test_a_tls_cluster_url_turns_tls_on_with_the_query_options():
    opts = cluster_options("rediss+cluster://:pw@h1:7001?ssl_cert_reqs=none", decode=False,
                           timeout=1.0)
    assert opts["ssl"] is True and opts["password"] == "pw"
    assert opts["ssl_cert_reqs"] == "none"
    assert "connection_class" not in opts or opts["connection_class"] is not SSLConnection


@pytest.mark.parametrize("url, words", [
    ("redis+cluster://h1:7001/3", "only database 0"),
    ("redis+cluster://h1", "needs host:port"),
    ("redis+cluster://h1:7001,h2", "needs host:port"),
    ("redis://h1:7001", "not a Redis Cluster URL"),
])
def test_a_bad_cluster_url_is_refused_saying_what_to_write(url: str, words: str):
    with pytest.raises(InvalidInput, match=words):
        cluster_options(url, decode=True, timeout=1.0)


def test_the_password_of_a_cluster_url_is_redacted():
    assert redact("redis+cluster://u:pw@h1:1,h2:2") == "redis+cluster://u:***@h1:1,h2:2"


def test_the_cluster_flag_turns_redis_url_into_its_cluster_form():
    s = Settings(redis_url=SecretStr("rediss://u:p@h:7001/0"), redis_cluster=True)
    assert s.redis_url is not None
    assert s.redis_url.get_secret_value() == "rediss+cluster://u:p@h:7001/0"
    plain = Settings(redis_url=SecretStr("redis://h:7001/0"))
    assert plain.redis_url is not None and not is_cluster_url(plain.redis_url.get_secret_value())
    assert as_cluster_url("redis+cluster://h:1") == "redis+cluster://h:1"


def _fleet_keys(k: Keys) -> list[str]:
    return [k.services, k.dlq, k.audit, k.monitor_fleet, k.schema, k.incidents_open,
            k.incidents_all, k.incident("inc-a-performance-1"),
            k.incident_fingerprint("a", "performance"), k.incident_closed("a", "performance"),
            k.incidents_of("a"), k.incident_seq("a"), k.approvals_pending, k.approval("ap1"),
            k.approval_open("inc-1", "d"), k.approval_step("inc-1", "s", "d"), k.action("x"),
            k.loop_shard(3), k.loop_incident("inc-1"), k.loop_workers]


def _service_keys(k: Keys, svc: str) -> list[str]:
    return [k.service(svc), k.version_counter(svc), k.version(svc, 2), k.faults(svc),
            k.telemetry(svc), k.labels(svc), k.quarantine(svc), k.monitor(svc), k.lock(svc),
            k.train_lock(svc), k.cooldown(svc), k.rollbacks(svc), k.failures(svc)]


def test_every_fleet_key_shares_one_slot_and_each_service_has_its_own():
    k = Keys("fw")
    fleet = {key_slot(x.encode()) for x in _fleet_keys(k)}
    assert fleet == {key_slot(b"fw:fleet")}
    # The {svc} inside a fingerprint key does not move it: the first tag decides.
    assert key_slot(k.incident_fingerprint("zz", "drift").encode()) in fleet
    for svc in ("a", "elec", "fleet"):
        assert {key_slot(x.encode()) for x in _service_keys(k, svc)} == {key_slot(svc.encode())}
    # Another prefix (another tenant, or a test) has its fleet keys elsewhere.
    assert key_slot(Keys("other").audit.encode()) != key_slot(k.audit.encode())


def test_checkpoint_keys_carry_their_threads_tag_not_the_fleet_tag():
    cp = CheckpointKeys(Keys("fw").checkpoint_prefix())
    a, b = cp.namespaces("inc-a-1"), cp.namespaces("inc-b-2")
    assert key_slot(a.encode()) == key_slot(b"inc-a-1")
    assert key_slot(a.encode()) != key_slot(b.encode())
    assert key_slot(cp.index("inc-a-1", "").encode()) == key_slot(a.encode())


@pytest.mark.parametrize("prefix", ["", "a{b", "fw}"])
def test_a_prefix_that_would_break_the_hash_tags_is_refused(prefix: str):
    with pytest.raises(InvalidInput, match="FLYWHEEL_PREFIX"):
        Keys(prefix)


def test_an_unreachable_cluster_is_one_clear_error():
    from fleet.embedded_redis import free_port
    from fleet.errors import RedisUnavailable
    from fleet.store import connect

    with pytest.raises(RedisUnavailable, match="cannot reach Redis at redis\\+cluster://"):
        connect(f"redis+cluster://127.0.0.1:{free_port()}", timeout=1.0)
