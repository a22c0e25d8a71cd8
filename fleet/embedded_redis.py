"""A private ``redis-server`` child process on a free port, for when no ``REDIS_URL`` is given.

It runs with AOF on in its own directory (a temp dir unless one is given), binds to loopback only,
and is stopped when its owner exits (context manager or ``atexit``).
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from fleet.errors import RedisUnavailable

INSTALL_HINT = (
    "redis-server not found on PATH. Install it (Debian/Ubuntu: sudo apt-get install -y "
    "redis-server; macOS: brew install redis) or set REDIS_URL to an existing Redis >= 6."
)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_redis_server() -> str:
    """Return the path of ``redis-server`` (or ``valkey-server``), or raise with how to install."""
    for name in ("redis-server", "valkey-server"):
        path = shutil.which(name)
        if path:
            return path
    raise RedisUnavailable(INSTALL_HINT)


class EmbeddedRedis:
    """Start and stop one private redis-server.

    Usage::

        with EmbeddedRedis() as server:
            client = redis.Redis.from_url(server.url)
    """

    def __init__(
        self,
        *,
        data_dir: str | Path | None = None,
        port: int | None = None,
        appendonly: bool = True,
        appendfsync: str = "everysec",
        maxmemory: str | None = None,
    ):
        self.binary = find_redis_server()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="flywheel-redis-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.appendonly = appendonly
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(
                f"appendfsync must be 'always', 'everysec' or 'no', not {appendfsync!r}")
        self.appendfsync = appendfsync
        """``always`` fsyncs every write: a crash (not only a stop) then loses nothing."""
        self.maxmemory = maxmemory
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` of the running server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers ``PING``."""
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
        ]
        if self.maxmemory:
            args += ["--maxmemory", self.maxmemory]
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = (self._proc.stderr.read() if self._proc.stderr else b"").decode()[-500:]
                log = self.data_dir / "redis.log"
                tail = log.read_text()[-500:] if log.exists() else ""
                raise RedisUnavailable(f"redis-server exited at start: {err or tail}")
            try:
                client.ping()
                client.close()
                return self
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.02)
        self.stop()
        raise RedisUnavailable(f"redis-server did not answer on port {self.port} in {timeout}s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its temp dir if we made it."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc is not None and proc.stderr:
            proc.stderr.close()
        if self._own_dir:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def crash(self) -> None:
        """SIGKILL the server, as a crash would: no shutdown, the data directory stays.

        :meth:`start` brings it back on the same port; AOF replays whatever was fsynced.
        """
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        if proc is not None and proc.stderr:
            proc.stderr.close()

    def restart(self) -> None:
        """Stop and start the server on the same port and directory (AOF replays the data)."""
        own, self._own_dir = self._own_dir, False
        self.stop()
        self._own_dir = own
        self.start()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
