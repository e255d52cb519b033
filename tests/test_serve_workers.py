"""``mnx-gateway serve --workers N``: several gateway processes on one listening socket.

Which worker answered a connection is read from /proc, as an operator would (the kernel's
table of TCP sockets gives the server side's inode, a worker's fd table holds it): the gateway
exposes no process id. The workers run on Redis (the store) and Redis's query engine (the
vector index: the one shareable vector backend this machine can run; a Qdrant server cannot
be installed here), the embedded backends are refused before anything starts.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.cli import main
from tests.conftest import KEY, PROVIDER_KEY, REDIS_URL, drop_redis_prefix, require_redis, wait_until
from tests.gateway_process import free_port
from tests.redis_stack import redis_stack  # noqa: F401  (the query-engine Redis, session scope)


def write_config(path: Path, provider_url: str, storage: dict[str, Any], memory: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({
        "storage": storage,
        "memory": memory,
        "projects": [{"id": "project-a", "keys": [{"name": "main", "key": KEY, "scopes": ["*"]}]}],
        "providers": {"openai": {"api_base": provider_url + "/v1", "timeout": {"connect": 2, "read": 5}}},
        "server": {"shutdown_timeout_seconds": 5},
    }))
    return path


def children_of(pid: int) -> set[int]:
    """The live processes whose parent is ``pid`` (from /proc/<n>/stat)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()  # after "(command)", which may hold spaces
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (an exited process its parent has not reaped yet is a zombie: not running)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def listening_on(port: int, candidates: set[int]) -> set[int]:
    """Which of ``candidates`` hold the socket listening on ``port`` (the kernel's LISTEN entry)."""
    inodes = {fields[9] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
              if (fields := line.split()) and int(fields[1].split(":")[1], 16) == port and fields[3] == "0A"}
    holders = set()
    for pid in candidates:
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in {f"socket:[{i}]" for i in inodes}
                   for fd in os.listdir(f"/proc/{pid}/fd")):
                holders.add(pid)
        except OSError:
            continue
    return holders


def owner_of_connection(server_port: int, client_port: int, candidates: set[int]) -> int | None:
    """Which of ``candidates`` holds the server side of the loopback connection from ``client_port``."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, remote_port = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        if (local_port, remote_port) == (server_port, client_port):
            inode = fields[9]
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in candidates:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
        except OSError:
            continue
    return None


def health_on_new_connection(port: int, workers: set[int]) -> int | None:
    """GET /health on a connection of its own; the worker that answered it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nhost: gateway\r\n\r\n")
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")
        return owner_of_connection(port, conn.getsockname()[1], workers)


@pytest.fixture
def redis_storage():
    require_redis()
    prefix = f"mnxtest:{secrets.token_hex(6)}:"
    yield {"backend": "redis", "redis": {"url": REDIS_URL, "key_prefix": prefix}}
    drop_redis_prefix(prefix)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL],
                         ids=["SIGTERM", "SIGINT", "parent-killed"])
def test_two_workers_share_the_socket_and_the_store_and_a_signal_stops_both(tmp_path, provider, redis_storage,
                                                                           redis_stack, stop_signal):  # noqa: F811
    vectors = {"backend": "redis", "redis": {"url": redis_stack, "key_prefix": f"mnxtest:{secrets.token_hex(6)}:",
                                             "index": f"workers_{secrets.token_hex(4)}"}}
    config = write_config(tmp_path / "gateway.yaml", provider.url, redis_storage, {"vectors": vectors})
    port = free_port()
    parent = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port),
                               "--workers", "2"], env={**os.environ, "PYTHONUNBUFFERED": "1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers: set[int] = set()
    try:
        def both_up() -> bool:  # the workers: the parent's children that hold the listening socket
            workers.clear()
            workers.update(listening_on(port, children_of(parent.pid)))
            return len(workers) == 2
        assert wait_until(both_up, timeout=30), children_of(parent.pid)

        def answering() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        assert wait_until(answering, timeout=60), parent.stderr.read1() if parent.poll() is not None else "no answer"

        # New connections are spread over both processes (the kernel gives each to one waiting in
        # accept; a worker still starting takes none yet).
        answered_by: set[int | None] = set()
        assert wait_until(lambda: answered_by.add(health_on_new_connection(port, workers)) or answered_by == workers,
                          timeout=30, interval=0.01), (answered_by, workers)

        # They share one store: a turn recorded through one is read back through the other.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            turn = client.post("/v1/chat/completions", headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY},
                               json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}],
                                     "mnx": {"subject_id": "w", "chat_id": "workers", "history": True,
                                             "learn": False}})
            assert turn.status_code == 200, turn.text
        for _ in range(10):  # fresh connections, so both workers read it
            with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=30,
                              headers={"x-mnexium-key": KEY}) as client:
                history = client.get("/chat/history/read", params={"chat_id": "workers", "subject_id": "w"}).json()
                assert [m["content"] for m in history["messages"]] == ["hi there", "echo: hi there"]

        # SIGTERM (a process manager) or SIGINT (Ctrl-C) to the parent stops every worker, cleanly
        # (none had to be killed); a parent killed outright leaves no worker serving either.
        parent.send_signal(stop_signal)
        if stop_signal == signal.SIGKILL:
            assert parent.wait(timeout=30) == -signal.SIGKILL
            assert wait_until(lambda: not any(alive(pid) for pid in workers), timeout=20)
        else:
            assert parent.wait(timeout=30) == 0
            assert not [pid for pid in workers if alive(pid)]
            assert b"did not stop" not in parent.stderr.read()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(("storage", "memory", "named"), [
    ({"backend": "sqlite", "sqlite": {"path": "DATA/gateway.db"}}, {"vectors": {"backend": "qdrant", "qdrant": {
        "url": "http://127.0.0.1:1"}}}, "storage.backend is sqlite"),
    ({"backend": "redis", "redis": {"url": REDIS_URL}}, {"vectors": {"backend": "edge", "edge": {
        "path": "DATA/memories"}}}, "memory.vectors.backend is edge"),
    ({"backend": "redis", "redis": {"url": REDIS_URL}}, {"vectors": {"backend": "qdrant", "qdrant": {
        "location": "DATA/qdrant"}}}, "memory.vectors.qdrant.location"),
])
def test_more_than_one_worker_on_an_embedded_backend_is_refused_before_anything_starts(tmp_path, provider, capsys,
                                                                                        storage, memory, named):
    data = tmp_path / "data"
    text = yaml.safe_dump({"storage": storage, "memory": memory, "projects": [
        {"id": "project-a", "keys": [{"name": "main", "key": KEY}]}]}).replace("DATA", str(data))
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    port = free_port()
    assert main(["serve", "--config", str(config), "--port", str(port), "--workers", "2"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and named in error and "--workers 2" in error
    assert not data.exists()  # nothing was opened
    with socket.socket() as probe:  # nor bound
        probe.bind(("127.0.0.1", port))
    # One worker is today's single process, which these backends are for: not refused by this check.
    assert main(["check-config", "--config", str(config)]) == 0


def test_workers_must_be_at_least_one(capsys):
    assert main(["serve", "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
