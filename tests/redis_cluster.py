"""A real three-master Redis Cluster for the tests, started from the local ``redis-server``.

``redis_cluster`` (session scope; with pytest-xdist each worker starts its own) runs three
``redis-server --cluster-enabled yes`` processes on free ports in a temporary directory,
joins them with ``redis-cli --cluster create`` (no replicas), waits for ``cluster_state:ok``
on every node and stops them when the session ends. Nothing is persisted (no RDB, no AOF).

Without the binaries, or when the cluster does not come up, its tests are skipped locally
and fail when CI=true (CI must never silently skip them), as for the plain Redis tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from tests.fake_upstream import free_socket

MASTERS = 3
_START_SECONDS = 15.0
# A node pings every other node it has not heard from in half of this: with the default (15 s)
# the masters learnt of each other by gossip in 1 to 4 s, and ``redis-cli --cluster create``,
# which checks once a second, took that long; with 2 s it returns after its 2 s minimum. Short
# enough for that, long enough that a node starved of CPU on a busy machine is not failed.
_NODE_TIMEOUT_MS = 2000


@dataclass
class RedisClusterServers:
    ports: list[int]
    directory: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The seed node's URL, as ``storage.redis.url`` takes it with ``cluster: true``."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def client(self) -> RedisCluster:
        """A synchronous cluster client (for a test's own checks and clean-up)."""
        return RedisCluster.from_url(self.url, decode_responses=True)

    def drop_prefix(self, prefix: str) -> None:
        """Delete every key under ``prefix`` on every master (SCAN is per node on a cluster)."""
        for port in self.ports:
            node = redis.Redis(port=port, decode_responses=True)
            try:
                keys = list(node.scan_iter(match=prefix + "*", count=1000))
                for key in keys:  # one by one: the keys of one node may still lie in different slots
                    node.delete(key)
            finally:
                node.close()

    def keys_per_master(self, prefix: str) -> dict[int, int]:
        """How many keys under ``prefix`` each master (by port) holds."""
        counts = {}
        for port in self.ports:
            node = redis.Redis(port=port, decode_responses=True)
            try:
                counts[port] = sum(1 for _ in node.scan_iter(match=prefix + "*", count=1000))
            finally:
                node.close()
        return counts

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def _free_ports(count: int) -> list[int]:
    # Held together until all are chosen, so the same port is not handed out twice; a cluster
    # node also listens on port + 10000 (its bus), so ports whose bus port is taken are skipped,
    # and so are ports that are another chosen node's bus port (33351 and 43351 once made the
    # node on 43351 fail to start: the one on 33351 had its bus there).
    sockets, ports, claimed = [], [], set()
    while len(ports) < count:
        sock = free_socket()
        port = int(sock.getsockname()[1])
        sockets.append(sock)
        bus = port + 10000
        if bus <= 65535 and not {port, bus} & claimed and _port_free(bus):
            ports.append(port)
            claimed.update((port, bus))
    for sock in sockets:
        sock.close()
    return ports


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_ok(port: int) -> bool:
    node = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=1, decode_responses=True)
    try:
        return "cluster_state:ok" in str(node.execute_command("CLUSTER", "INFO"))
    except redis.RedisError:
        return False
    finally:
        node.close()


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def start_cluster() -> RedisClusterServers:
    """Three masters on free ports, joined and serving every slot (RuntimeError if not)."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        raise RuntimeError("redis-server and redis-cli must be on PATH to start a Redis Cluster")
    cluster = RedisClusterServers(_free_ports(MASTERS), Path(tempfile.mkdtemp(prefix="mnx-redis-cluster-")))
    try:
        for port in cluster.ports:
            cluster.processes.append(subprocess.Popen(
                [server, "--cluster-enabled", "yes", "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-config-file", str(cluster.directory / f"nodes-{port}.conf"),
                 "--dir", str(cluster.directory), "--save", "", "--appendonly", "no", "--daemonize", "no",
                 "--cluster-node-timeout", str(_NODE_TIMEOUT_MS)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def answering() -> bool:
            for port in cluster.ports:
                node = redis.Redis(port=port, socket_connect_timeout=0.2)
                try:
                    node.ping()
                except redis.RedisError:
                    return False
                finally:
                    node.close()
            return True
        if not _wait_for(answering, _START_SECONDS):
            raise RuntimeError(f"redis-server did not answer on ports {cluster.ports}")
        created = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{port}" for port in cluster.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, timeout=_START_SECONDS)
        if created.returncode != 0:
            raise RuntimeError("redis-cli --cluster create failed: " + created.stdout.decode()[-500:]
                               + created.stderr.decode()[-500:])
        if not _wait_for(lambda: all(_cluster_ok(port) for port in cluster.ports), _START_SECONDS):
            raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
    except BaseException:
        cluster.stop()
        raise
    return cluster


# Free ports are probed, then released for redis-server to bind: another test's connection may
# take one in between (the suite runs on several workers), so a start that fails is tried again
# on other ports.
_START_ATTEMPTS = 3


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    for attempt in range(1, _START_ATTEMPTS + 1):
        try:
            cluster = start_cluster()
            break
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
            if attempt < _START_ATTEMPTS and shutil.which("redis-server") and shutil.which("redis-cli"):
                continue
            if os.environ.get("CI") == "true":
                pytest.fail(f"CI=true but no Redis Cluster could be started: {error}")
            pytest.skip(f"no Redis Cluster: {error}")
    yield cluster
    cluster.stop()
