"""The Redis connection: one function builds a client from a URL, honouring AUTH, TLS and Cluster.

``redis://user:pass@host:port/db`` gives AUTH (ACL user or legacy password); ``rediss://`` gives
TLS, with ``ssl_ca_certs`` / ``ssl_cert_reqs`` taken from the URL query as redis-py reads them.
``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://`` for TLS) gives a Redis Cluster
client started from those nodes, with the same AUTH and TLS options; a plain URL of a cluster node
is detected and treated the same. Clients decode responses to
``str`` because every value flywheel stores is text or JSON.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisClusterBase
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url

from fleet.errors import InvalidInput, RedisUnavailable

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""Cluster URL scheme -> the single-node scheme whose options (AUTH, TLS) it takes."""


class ClusterClient(RedisCluster):
    """The Redis Cluster client flywheel uses (a named subclass, so callers can tell it apart).

    Unlike ``redis.Redis``, redis-py's cluster ``pipeline()`` is NOT transactional by default
    (and redis-py itself relies on that), so every WATCH/MULTI site asks for
    ``pipeline(transaction=True)`` explicitly. A transaction's keys must share one slot (see
    fleet/keys).
    """


class AsyncClusterClient(AsyncRedisClusterBase):
    """The asyncio twin of :class:`ClusterClient`."""


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://`` or ``rediss+cluster://``).

    >>> is_cluster_url("redis+cluster://127.0.0.1:7001,127.0.0.1:7002")
    True
    >>> is_cluster_url("redis://127.0.0.1:6379/0")
    False
    """
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def as_cluster_url(url: str) -> str:
    """Turn a single-node URL into the cluster URL of the same node (``FLYWHEEL_REDIS_CLUSTER``).

    >>> as_cluster_url("rediss://u:p@10.0.0.1:7001/0")
    'rediss+cluster://u:p@10.0.0.1:7001/0'
    >>> as_cluster_url("redis+cluster://h:1")
    'redis+cluster://h:1'
    """
    scheme, sep, rest = url.partition("://")
    if not sep or is_cluster_url(url):
        return url
    return f"{scheme}+cluster://{rest}"


def is_cluster(r: Any) -> bool:
    """Whether ``r`` (a client or a pipeline of one) talks to a Redis Cluster."""
    return isinstance(r, RedisCluster | AsyncRedisClusterBase)


def cluster_options(url: str, *, decode: bool, timeout: float) -> dict[str, Any]:
    """Constructor arguments of a cluster client for a ``redis+cluster://`` URL.

    The first node's URL is parsed as a single-node one, so AUTH, TLS and query options mean
    the same as for ``redis://``; the other nodes only add start-up nodes.

    Raises:
        InvalidInput: not a cluster URL, a node without a port, or a database other than 0.
    """
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise InvalidInput(f"not a Redis Cluster URL: {redact(url)}; use redis+cluster://host:port")
    creds, _, hosts = parts.netloc.rpartition("@")
    nodes = []
    for item in hosts.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise InvalidInput(
                f"cluster node {item!r} in {redact(url)} needs host:port, e.g. "
                "redis+cluster://10.0.0.1:7001,10.0.0.2:7001"
            )
        nodes.append(ClusterNode(host.strip("[]"), int(port)))
    first = f"{scheme}://{creds + '@' if creds else ''}{hosts.split(',')[0].strip()}"
    try:
        opts = parse_url(first + parts.path + (f"?{parts.query}" if parts.query else ""))
    except ValueError as exc:
        raise InvalidInput(f"bad Redis Cluster URL {redact(url)}: {exc}") from exc
    if int(opts.pop("db", 0) or 0) != 0:
        raise InvalidInput(f"Redis Cluster has only database 0: drop the /db from {redact(url)}")
    for gone in ("host", "port", "path"):
        opts.pop(gone, None)
    if opts.pop("connection_class", None) is redis.SSLConnection:
        opts["ssl"] = True
    return {
        **opts, "startup_nodes": nodes, "decode_responses": decode,
        "socket_connect_timeout": timeout, "socket_timeout": timeout,
    }


def connect(url: str, *, decode: bool = True, timeout: float = 5.0) -> Any:
    """Return a client for ``url`` after checking the server answers ``PING``.

    Args:
        url: ``redis://[[user]:password@]host:port[/db]``, ``rediss://...`` for TLS, or
            ``redis+cluster://[[user]:password@]host:port[,host:port...]`` (``rediss+cluster``
            for TLS) for a Redis Cluster, which returns a :class:`ClusterClient`. A plain URL
            whose server reports ``cluster_enabled`` is taken as its cluster URL.
        decode: decode replies to ``str`` (the default for everything but raw artifacts).
        timeout: socket connect and read timeout in seconds.

    Raises:
        RedisUnavailable: ``url`` is not a Redis URL, or the server cannot be reached or refused
            the credentials.
    """
    try:
        if is_cluster_url(url):
            client: Any = ClusterClient(**cluster_options(url, decode=decode, timeout=timeout))
        else:
            client = redis.Redis.from_url(
                url,
                decode_responses=decode,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                health_check_interval=30,
            )
        client.ping()
        if not is_cluster_url(url) and _cluster_enabled(client):
            # A plain URL naming a cluster node would fail later with MOVED on most keys.
            client.close()
            return connect(as_cluster_url(url), decode=decode, timeout=timeout)
    except ValueError as exc:  # redis-py's parse_url: a missing scheme, a bad port or db
        raise RedisUnavailable(
            f"REDIS_URL {redact(url)!r} is not a Redis URL ({exc}); use "
            "redis://[user:password@]host:port/db (rediss:// for TLS, redis+cluster:// for a "
            "cluster), or unset it to let flywheel start its own redis-server"
        ) from exc
    except redis.AuthenticationError as exc:
        raise RedisUnavailable(f"Redis at {redact(url)} refused the credentials: {exc}") from exc
    except (redis.ConnectionError, redis.TimeoutError, redis.RedisClusterException,
            OSError) as exc:
        raise RedisUnavailable(
            f"cannot reach Redis at {redact(url)}: {exc}. Check REDIS_URL, or unset it to let "
            "flywheel start its own redis-server."
        ) from exc
    return client


def _cluster_enabled(client: redis.Redis) -> bool:
    """Whether a single-node client's server is a cluster node (False if INFO is not allowed)."""
    try:
        return bool(client.info("cluster").get("cluster_enabled"))
    except redis.ResponseError:  # e.g. an ACL user without INFO: take the URL at its word
        return False


def connect_async(url: str, *, decode: bool = False, timeout: float = 5.0) -> Any:
    """Return an asyncio client for ``url`` (not yet connected; the first command connects).

    Same URL forms as :func:`connect`; a cluster URL gives an :class:`AsyncClusterClient`.
    ``decode`` defaults to False because the async user is the checkpointer, which stores bytes.
    """
    if is_cluster_url(url):
        opts = cluster_options(url, decode=decode, timeout=timeout)
        opts["startup_nodes"] = [
            aredis.cluster.ClusterNode(n.host, n.port) for n in opts["startup_nodes"]
        ]
        return AsyncClusterClient(**opts)
    return aredis.Redis.from_url(
        url, decode_responses=decode, socket_connect_timeout=timeout, socket_timeout=timeout
    )


def raw_twin(r: Any) -> Any:
    """A non-decoding client on the same server or cluster as ``r`` (for bytes: checkpoints)."""
    if isinstance(r, RedisCluster):
        kw = dict(r.nodes_manager.connection_kwargs)
        kw["decode_responses"] = False
        nodes = [ClusterNode(n.host, n.port) for n in r.get_primaries()]
        return ClusterClient(startup_nodes=nodes, **kw)
    kw = dict(r.connection_pool.connection_kwargs)
    kw["decode_responses"] = False
    return redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=r.connection_pool.connection_class, **kw))


def redact(url: str) -> str:
    """Hide the password in a Redis URL for messages and logs.

    >>> redact("redis://user:secret@host:6379/0")
    'redis://user:***@host:6379/0'
    >>> redact("redis://localhost:6379")
    'redis://localhost:6379'
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0] if ":" in creds else ""
    return f"{scheme}://{user}:***@{host}"
