"""What is particular to a Redis Cluster: the client from each URL form, AUTH, slots spread over
the nodes, scripts a node has never seen, and a registration cut between its two slots."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import RedisClusterException

from fleet.errors import AlreadyExists, RedisUnavailable
from fleet.keys import Keys
from fleet.registry import ArtifactStore, Registry
from fleet.schema import FeatureSchema
from fleet.store import ClusterClient, connect, raw_twin
from fleet.telemetry import TelemetryWriter
from fleet.telemetry.buffer import TelemetryBuffer
from tests.redis_cluster import LoopbackCluster


def test_each_url_form_of_a_cluster_gives_a_cluster_client(redis_cluster: LoopbackCluster):
    port = redis_cluster.ports[1]
    for url in (redis_cluster.url, f"redis://127.0.0.1:{port}/0",
                f"redis+cluster://127.0.0.1:{port}"):
        client = connect(url)
        try:
            assert isinstance(client, ClusterClient), url
            # A key owned by another node is followed there, not answered with MOVED.
            for i in range(20):
                client.set(f"urlform:{i}", i)
            assert client.get("urlform:19") == "19"
            raw = raw_twin(client)
            assert raw.get("urlform:19") == b"19"
            raw.close()
        finally:
            client.delete(*(f"urlform:{i}" for i in range(20)))
            client.close()


@pytest.fixture(scope="module")
def auth_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackCluster]:
    cluster = LoopbackCluster(tmp_path_factory.mktemp("auth-cluster"), password="s3cret").start()
    yield cluster
    cluster.stop()


def test_a_cluster_with_a_password_takes_it_from_the_url_and_refuses_a_wrong_one(
        auth_cluster: LoopbackCluster):
    client = connect(auth_cluster.url)
    assert isinstance(client, ClusterClient) and client.ping()
    client.close()
    wrong = auth_cluster.url.replace(":s3cret@", ":nope@")
    with pytest.raises(RedisUnavailable) as err:
        connect(wrong)
    assert "nope" not in str(err.value) and "***" in str(err.value)


def test_the_fleet_slot_and_the_service_slots_spread_over_the_nodes(r, keys: Keys):
    owners = {r.get_node_from_key(keys.service(f"svc{i}")).name for i in range(30)}
    assert len(owners) == 3  # services spread over all three masters
    fleet_owner = r.get_node_from_key(keys.audit).name
    assert {r.get_node_from_key(k).name for k in (keys.incidents_open, keys.approvals_pending,
                                                  keys.action("x"), keys.services)} == {
        fleet_owner}


def test_buffered_telemetry_is_written_once_even_on_nodes_without_the_script(r, keys: Keys):
    writer = TelemetryWriter(r, keys)
    for node in r.get_primaries():
        r.get_redis_connection(node).script_flush()
    buf = TelemetryBuffer(writer, background=False, max_batch=10_000)
    streams = [keys.telemetry(f"svc{i}") for i in range(12)]
    for n, stream in enumerate(streams):
        for j in range(n + 1):
            buf.add(stream, f'{{"n": {j}}}')
    assert buf.flush() == sum(range(1, 13))
    assert [r.xlen(s) for s in streams] == list(range(1, 13))


def test_a_registration_cut_before_the_fleet_write_is_listed_when_registered_again(
        r, keys: Keys, clock, tmp_path: Path):
    registry = Registry(r, keys, ArtifactStore(tmp_path), clock=clock)
    schema = FeatureSchema.numeric(["a", "b"])
    registry.register_service("first", task="classification", schema=schema)
    assert registry.services() == ["first"]
    assert [e.action for e in registry.audit.read(service="first")] == [
        "registry.register_service"]
    # A crash after the service's hash committed but before the fleet set got the name:
    r.hset(keys.service("cut"), mapping=r.hgetall(keys.service("first")) | {"name": "cut"})
    assert registry.services() == ["first"]
    with pytest.raises(AlreadyExists):
        registry.register_service("cut", task="classification", schema=schema)
    assert registry.services() == ["cut", "first"]


def test_a_transaction_across_two_slots_is_still_refused(r, keys: Keys):
    """The guard the stores rely on: a MULTI that spans slots fails before it writes."""
    with pytest.raises(RedisClusterException, match="slot"), \
            r.pipeline(transaction=True) as pipe:
        pipe.set(keys.service("a"), 1)
        pipe.set(keys.audit, 1)
        pipe.execute()
    assert not r.exists(keys.service("a"))


def _status_entries(audit) -> list[str]:
    return [e.reason for e in audit.read(service="first", action_prefix="registry.accept")]


def test_a_registry_changes_audit_entry_reaches_the_audit_once_whatever_the_crash_point(
        r, keys: Keys, clock, tmp_path: Path):
    registry = Registry(r, keys, ArtifactStore(tmp_path), clock=clock)
    registry.register_service("first", task="classification",
                              schema=FeatureSchema.numeric(["a", "b"]))
    audit, box = registry.audit, keys.audit_outbox("first")
    registry.accept_performance("first", actor="t", reason="plain")
    assert _status_entries(audit) == ["plain"] and r.xlen(box) == 0

    # Crash right after the change committed: its entry waits in the service's outbox.
    with r.pipeline(transaction=True) as pipe:
        pipe.hset(keys.service("first"), "accepted_at", "1.0")
        audit.add_after(pipe, "t", "registry.accept_performance", service="first", reason="cut")
        pipe.execute()
    assert _status_entries(audit) == ["plain"] and r.xlen(box) == 1
    # The next start (or the service's next change) moves it, once.
    assert audit.outbox.drain_all(registry.services()) == 1
    assert audit.outbox.drain("first") == 0
    assert _status_entries(audit) == ["plain", "cut"] and r.xlen(box) == 0

    # Crash after the move, before the outbox entry was deleted: never appended twice.
    with r.pipeline(transaction=True) as pipe:
        audit.add_after(pipe, "t", "registry.accept_performance", service="first", reason="moved")
        pipe.execute()
    sid, fields = r.xrange(box)[0]
    flat = [x for pair in fields.items() for x in pair]
    assert audit.outbox._move(keys=[keys.audit, keys.audit_moved("first", sid)],
                              args=[60, *flat]) == 1
    assert audit.outbox.drain("first") == 0
    assert _status_entries(audit) == ["plain", "cut", "moved"] and r.xlen(box) == 0


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make test certs")
def test_a_tls_cluster_is_reached_by_rediss_cluster_with_its_ca(tmp_path: Path):
    cluster = LoopbackCluster(tmp_path / "tls-cluster", tls=True).start()
    try:
        assert cluster.url.startswith("rediss+cluster://")
        client = connect(cluster.url)
        assert isinstance(client, ClusterClient)
        for i in range(20):  # keys on every node, each reached over TLS
            client.set(f"tls:{i}", i)
        assert [client.get(f"tls:{i}") for i in (0, 19)] == ["0", "19"]
        assert raw_twin(client).get("tls:19") == b"19"
        client.close()
        # Without TLS the same nodes do not answer.
        with pytest.raises(RedisUnavailable):
            connect(cluster.url.replace("rediss+cluster", "redis+cluster").split("?")[0],
                    timeout=1.0)
    finally:
        cluster.stop()
