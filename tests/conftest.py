"""Shared fixtures: a fake provider, real gateways on free ports, real Redis.

The provider is the only thing faked. Gateways run the real app under uvicorn,
and Redis-backed tests use the server on 127.0.0.1:6379: skipped locally when it
is down, a failure when CI=true (CI must never silently skip them).
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import ssl
import time
from dataclasses import dataclass
from typing import Any
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis
from httpx._transports import default as httpx_transports

from gateway.app import create_app
from gateway.config import GatewayConfig, parse_config
from gateway.jobs.redis_queue import RedisJobQueue
from gateway.jobs.sqlite_queue import SqliteJobQueue
from gateway.server import uvicorn_config
from tests.fake_upstream import FakeProvider, ServerThread, stop_all
# A real three-master Redis Cluster (session scope), for the tests that also run on one.
from tests.redis_cluster import RedisClusterServers, redis_cluster  # noqa: F401

def _share_the_default_tls_context() -> None:
    """Build httpx's default TLS context once for the whole run.

    Every httpx client (each ``httpx.post``, each SDK client a test makes) builds one, loading
    the CA bundle, about 40 ms of CPU; it was a tenth of the suite's CPU, yet the tests speak
    plain HTTP to loopback and never use it. The default context is the same every time, so
    the clients share it; any other ``verify`` or a client certificate still goes to httpx.
    (The gateway builds its own once per process: gateway/proxy/provider_http.py.)"""
    build = httpx_transports.create_ssl_context
    default = functools.cache(build)

    def tls_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
        if verify is True and cert is None and trust_env:
            return default()
        return build(verify=verify, cert=cert, trust_env=trust_env)

    httpx_transports.create_ssl_context = tls_context


_share_the_default_tls_context()

REDIS_URL = os.environ.get("MNX_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
KEY = "mnx_live_test_key_project_a"
KEY_B = "mnx_live_test_key_project_b"
PROVIDER_KEY = "sk-test-provider-key"


def redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def require_redis() -> None:
    if redis_available():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but Redis at {REDIS_URL} is unreachable: Redis-backed tests must run in CI")
    pytest.skip(f"Redis at {REDIS_URL} is unreachable")


def drop_redis_prefix(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="session")
def provider() -> Iterator[FakeProvider]:
    fake = FakeProvider()
    server = ServerThread(fake).start()
    fake.url = server.url  # type: ignore[attr-defined]
    yield fake
    server.stop()


@pytest.fixture(autouse=True)
def _clear_provider_log(provider: FakeProvider) -> None:
    provider.requests.clear()


@dataclass
class Gateway:
    url: str
    config: GatewayConfig
    provider: FakeProvider

    @property
    def api(self) -> str:
        return self.url + "/api/v1"

    def rest(self, key: str = KEY) -> httpx.Client:
        """A plain HTTP client speaking the Mnexium REST API with a project key."""
        return httpx.Client(base_url=self.api, headers={"x-mnexium-key": key}, timeout=30)

    def openai(self, key: str = KEY, **kwargs: Any):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0,
                             default_headers={"x-openai-key": PROVIDER_KEY}, **kwargs)

    def forwarded(self) -> list[dict[str, Any]]:
        """Requests the fake provider received (what the gateway forwarded)."""
        return self.provider.requests


def base_config(provider_url: str, storage: dict[str, Any], **overrides: Any) -> GatewayConfig:
    data: dict[str, Any] = {
        "storage": storage,
        "projects": [
            {"id": "project-a", "keys": [{"name": "main", "key": KEY, "scopes": ["*"]}]},
            {"id": "project-b", "keys": [{"name": "main", "key": KEY_B, "scopes": ["*"]}]},
        ],
        "providers": {
            "openai": {"api_base": provider_url + "/v1", "timeout": {"connect": 2, "read": 5}},
            "anthropic": {"api_base": provider_url, "timeout": {"connect": 2, "read": 5}},
            "gemini": {"api_base": provider_url + "/v1beta", "timeout": {"connect": 2, "read": 5}},
        },
        "defaults": {"learn": False},
    }
    for key, value in overrides.items():
        data[key] = value
    return parse_config(data)


@pytest.fixture
def storage_sqlite(tmp_path) -> dict[str, Any]:
    return {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "gateway.db")}}


@pytest.fixture
def storage_redis() -> Iterator[dict[str, Any]]:
    require_redis()
    prefix = f"mnxtest:{secrets.token_hex(6)}:"
    yield {"backend": "redis", "redis": {"url": REDIS_URL, "key_prefix": prefix}}
    drop_redis_prefix(prefix)


@pytest.fixture
def storage_redis_cluster(request) -> Iterator[dict[str, Any]]:
    """The Redis backend on the session's three-master Redis Cluster."""
    cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
    prefix = f"mnxtest:{secrets.token_hex(6)}:"
    yield {"backend": "redis", "redis": {"url": cluster.url, "key_prefix": prefix, "cluster": True}}
    cluster.drop_prefix(prefix)


@contextlib.asynccontextmanager
async def open_test_store(kind: str, request: Any, tmp_path: Any) -> AsyncIterator[Any]:
    """An empty document store: ``sqlite``, ``redis`` (the server above) or ``redis-cluster``
    (the session's three-master cluster)."""
    from gateway.store.redis import RedisDocumentStore
    from gateway.store.sqlite import SqliteDocumentStore

    if kind == "sqlite":
        backend: Any = SqliteDocumentStore(str(tmp_path / "store.db"))
        yield backend
        await backend.close()
        return
    prefix = f"mnxtest:{secrets.token_hex(6)}:"
    if kind == "redis-cluster":
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        backend = RedisDocumentStore(cluster.url, prefix, cluster=True)
        yield backend
        await backend.close()
        cluster.drop_prefix(prefix)
        return
    require_redis()
    backend = RedisDocumentStore(REDIS_URL, prefix)
    yield backend
    await backend.close()
    drop_redis_prefix(prefix)


@pytest.fixture(params=["sqlite", "redis"])
async def store(request, tmp_path):
    """A document store of each backend, empty (the store contract tests run on both, and on a
    Redis Cluster: their modules override this fixture with the ``redis-cluster`` param added)."""
    async with open_test_store(request.param, request, tmp_path) as backend:
        yield backend


@pytest.fixture(params=["sqlite", "redis"])
def storage(request) -> dict[str, Any]:
    """Run a test once per storage backend."""
    return request.getfixturevalue(f"storage_{request.param}")


def edge_memory(path: Any) -> dict[str, Any]:
    """The memory section for a gateway whose Qdrant Edge index lives at ``path``."""
    return {"vectors": {"backend": "edge", "edge": {"path": str(path)}}}


def serve_gateway(provider: FakeProvider, storage: dict[str, Any], tmp_path_factory: Any,
                  servers: list[ServerThread], **overrides: Any) -> Gateway:
    """A real gateway on a free port, in front of the fake provider; its server joins ``servers``
    (the caller stops them). Each gateway gets its own embedded memory index unless the test
    names one."""
    overrides.setdefault("memory", edge_memory(tmp_path_factory.mktemp("memories")))
    config = base_config(provider.url, storage, **overrides)  # type: ignore[attr-defined]
    # The production server setup (header limits included), quieter and lifespan required.
    server = ServerThread(config=uvicorn_config(create_app(config), config, log_level="warning",
                                                lifespan="on")).start()
    servers.append(server)
    return Gateway(server.url, config, provider)


@pytest.fixture
def start_gateway(provider: FakeProvider, tmp_path_factory):
    servers: list[ServerThread] = []

    def start(storage: dict[str, Any], **overrides: Any) -> Gateway:
        return serve_gateway(provider, storage, tmp_path_factory, servers, **overrides)

    yield start
    stop_all(servers)


@pytest.fixture(scope="module")
def module_gateway(provider: FakeProvider, tmp_path_factory) -> Iterator[Any]:
    """``module_gateway(storage=None, **config_sections)``: ``start_gateway`` for a whole module,
    a gateway (SQLite unless ``storage`` says otherwise) that lives as long as the module's tests.
    Starting one costs about half a second, so tests that can share one (each with its own chat
    and subject ids) do."""
    servers: list[ServerThread] = []

    def start(storage: dict[str, Any] | None = None, **overrides: Any) -> Gateway:
        if storage is None:
            storage = {"backend": "sqlite", "sqlite": {"path": str(tmp_path_factory.mktemp("db") / "gateway.db")}}
        return serve_gateway(provider, storage, tmp_path_factory, servers, **overrides)

    yield start
    stop_all(servers)


@pytest.fixture
def gateway(start_gateway, storage_sqlite) -> Gateway:
    """A gateway on the embedded default backend."""
    return start_gateway(storage_sqlite)


@pytest.fixture(scope="module")
def shared_gateway(module_gateway) -> Gateway:
    """One gateway on the embedded default backend for a module's tests that leave nothing
    behind: requests it must refuse, which then check that nothing was stored for their
    subject and nothing forwarded (the provider's log is cleared before every test). A test
    whose request may succeed takes ``gateway``, a fresh one, instead."""
    return module_gateway()


@pytest.fixture
def gateway_on(start_gateway, storage) -> Gateway:
    """A gateway on each backend in turn (SQLite, then Redis)."""
    return start_gateway(storage)


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.02) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
def make_queue(request, tmp_path):
    """Opens job queues on one backend (SQLite, Redis, a Redis Cluster); every queue a test opens
    shares its data (one file, one key prefix)."""
    prefixes: list[str] = []
    cluster = request.getfixturevalue("redis_cluster") if request.param == "redis-cluster" else None

    def make() -> Any:
        if request.param == "sqlite":
            return SqliteJobQueue(str(tmp_path / "jobs.db"))
        if cluster is None:
            require_redis()
        prefix = f"mnxtest:{secrets.token_hex(6)}:" if not prefixes else prefixes[0]
        prefixes.append(prefix)
        if cluster is not None:
            return RedisJobQueue(cluster.url, prefix, cluster=True)
        return RedisJobQueue(REDIS_URL, prefix)

    make.kind = request.param  # type: ignore[attr-defined]
    yield make
    for prefix in set(prefixes):
        if cluster is not None:
            cluster.drop_prefix(prefix)
        else:
            drop_redis_prefix(prefix)
