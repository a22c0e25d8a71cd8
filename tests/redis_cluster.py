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

    def __init__(self, data_dir: Path, *, password: str | None = None, tls: bool = False):
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if not server or not cli:
            raise RuntimeError(
                "the cluster tests need redis-server and redis-cli on PATH "
                "(Debian/Ubuntu: apt-get install -y redis-server redis-tools)")
        self.server, self.cli = server, cli
        self.data_dir = data_dir
        self.ports = _ports(NODES)
        self.password = password
        self.ca = make_test_certs(data_dir / "tls") if tls else None
        """The CA that signed the nodes' certificate, when the cluster speaks TLS only."""
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL naming every node."""
        auth = f":{self.password}@" if self.password else ""
        nodes = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        if self.ca is not None:
            return f"rediss+cluster://{auth}{nodes}?ssl_ca_certs={self.ca}"
        return f"redis+cluster://{auth}{nodes}"

    def _args(self, port: int, d: Path) -> list[str]:
        """``redis-server`` arguments of the node on ``port`` with its data in ``d``."""
        args = [self.server, "--bind", "127.0.0.1", "--dir", str(d), "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000",
                "--appendonly", "no", "--save", "", "--daemonize", "no",
                "--logfile", str(d / "redis.log")]
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        if self.ca is None:
            return [*args, "--port", str(port)]
        # TLS only, for clients and for the cluster bus between the nodes.
        return [*args, "--port", "0", "--tls-port", str(port), "--tls-cluster", "yes",
                "--tls-cert-file", str(self.ca.parent / "node.crt"),
                "--tls-key-file", str(self.ca.parent / "node.key"),
                "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no"]

    def start(self, timeout: float = 30.0) -> LoopbackCluster:
        """Start the nodes, create the cluster, and wait until every node says it is ok."""
        for port in self.ports:
            d = self.data_dir / str(port)
            d.mkdir(parents=True, exist_ok=True)
            self.procs.append(subprocess.Popen(
                self._args(port, d),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        for port in self.ports:
            self._wait(lambda p=port: self._ask(p, "PING"), deadline)
        env = {"REDISCLI_AUTH": self.password} if self.password else {}
        tls = ["--tls", "--cacert", str(self.ca)] if self.ca is not None else []
        subprocess.run(
            [self.cli, *tls, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout, env={"PATH": "/usr/bin:/bin", **env})
        for port in self.ports:
            self._wait(lambda p=port: b"cluster_state:ok" in self._ask(p, "CLUSTER", "INFO"),
                       deadline)
        return self

    def _ask(self, port: int, *command: str) -> object:
        client = self._node(port)
        try:
            return client.execute_command(*command)
        finally:
            client.close()

    def _node(self, port: int) -> redis.Redis:
        tls = {"ssl": True, "ssl_ca_certs": str(self.ca)} if self.ca is not None else {}
        return redis.Redis(host="127.0.0.1", port=port, password=self.password,
                           socket_connect_timeout=1, **tls)

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


def make_test_certs(d: Path) -> Path:
    """Write a throwaway CA and a node certificate for 127.0.0.1 into ``d``; return the CA file.

    Generated by ``openssl`` for the test run only (valid two days, never leaves the temp dir).
    """
    d.mkdir(parents=True, exist_ok=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=flywheel-test-ca")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr",
        "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "node.crt", "-days", "2", "-extfile", "ext.cnf")
    return d / "ca.crt"
