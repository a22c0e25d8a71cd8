"""The Redis connection: one function builds a client from a URL, honouring AUTH and TLS.

``redis://user:pass@host:port/db`` gives AUTH (ACL user or legacy password); ``rediss://`` gives
TLS, with ``ssl_ca_certs`` / ``ssl_cert_reqs`` taken from the URL query as redis-py reads them.
Clients decode responses to ``str`` because every value flywheel stores is text or JSON.
"""

from __future__ import annotations

import redis

from fleet.errors import RedisUnavailable


def connect(url: str, *, decode: bool = True, timeout: float = 5.0) -> redis.Redis:
    """Return a client for ``url`` after checking the server answers ``PING``.

    Args:
        url: ``redis://[[user]:password@]host:port[/db]`` or ``rediss://...`` for TLS.
        decode: decode replies to ``str`` (the default for everything but raw artifacts).
        timeout: socket connect and read timeout in seconds.

    Raises:
        RedisUnavailable: ``url`` is not a Redis URL, or the server cannot be reached or refused
            the credentials.
    """
    try:
        client = redis.Redis.from_url(
            url,
            decode_responses=decode,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            health_check_interval=30,
        )
    except ValueError as exc:  # redis-py's parse_url: a missing scheme, a bad port or db
        raise RedisUnavailable(
            f"REDIS_URL {redact(url)!r} is not a Redis URL ({exc}); use "
            "redis://[user:password@]host:port/db (rediss:// for TLS), or unset it to let "
            "flywheel start its own redis-server"
        ) from exc
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise RedisUnavailable(f"Redis at {redact(url)} refused the credentials: {exc}") from exc
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise RedisUnavailable(
            f"cannot reach Redis at {redact(url)}: {exc}. Check REDIS_URL, or unset it to let "
            "flywheel start its own redis-server."
        ) from exc
    return client


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
