"""A real 3-master Redis Cluster on loopback for the ``cluster`` tests: start, wait, stop.

Three ``redis-server --cluster-enabled yes`` children, joined by ``redis-cli --cluster create``;
it is ready when every node reports ``cluster_state:ok``. Each node's cluster bus is its port +
10000, so ports are chosen where both are free.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

NODES = 3


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(n: int) -> list[int]:
    """``n`` ports below 55535 whose cluster bus port (+10000) is free too."""
    found: list[int] = []
    while len(found) < n:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 55535 and port not in found and _free(port + 10000):
            found.append(port)
    return found


class LoopbackCluster:
    """Start and stop a 3-master Redis Cluster in ``data_dir`` (one sub-directory per node)."""

    def __init__(self, data_dir: Path, *, password: str | None = None):
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if not server or not cli:
            raise RuntimeError(
                "the cluster tests need redis-server and redis-cli on PATH "
                "(Debian/Ubuntu: apt-get install -y redis-server redis-tools)")
        self.server, self.cli = server, cli
        self.data_dir = data_dir
        self.ports = _ports(NODES)
        self.password = password
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL naming every node."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis+cluster://{auth}" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self, timeout: float = 30.0) -> LoopbackCluster:
        """Start the nodes, create the cluster, and wait until every node says it is ok."""
        auth = ["--requirepass", self.password, "--masterauth", self.password] \
            if self.password else []
        for port in self.ports:
            d = self.data_dir / str(port)
            d.mkdir(parents=True, exist_ok=True)
            self.procs.append(subprocess.Popen(
                [self.server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", "5000", "--appendonly", "no", "--save", "",
                 "--daemonize", "no", "--logfile", str(d / "redis.log"), *auth],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        for port in self.ports:
            self._wait(lambda p=port: self._node(p).ping(), deadline)
        env = {"REDISCLI_AUTH": self.password} if self.password else {}
        subprocess.run(
            [self.cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout, env={"PATH": "/usr/bin:/bin", **env})
        for port in self.ports:
            self._wait(lambda p=port: b"cluster_state:ok" in self._node(p).execute_command(
                "CLUSTER", "INFO"), deadline)
        return self

    def _node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=self.password, socket_connect_timeout=1)

    def _wait(self, ready: object, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                if ready():  # type: ignore[operator]
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the loopback Redis Cluster on {self.ports} did not become ready")

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL)."""
        procs, self.procs = self.procs, []
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
