"""The one Redis client a gateway process shares between its document store, job queue,
erasure fence, subject locks and memory events: a plain ``Redis``, or a ``RedisCluster``
when ``storage.redis.cluster`` is true.

The plain client's pool blocks when every connection is busy, and waits up to
``pool_timeout`` for one to come back: redis-py's default pool raises ``MaxConnectionsError``
instead, and a proxied turn issues several store calls at once, so 200 concurrent chats made
186 of them fail. Past the timeout the call fails as a storage error (503).

redis-py's cluster client has no blocking pool: a call that finds every connection to a
master busy fails at once (``MaxConnectionsError``). ``WaitingRedisCluster`` keeps the plain
client's behaviour: at most ``max_connections`` commands and pipelines of this process are in
flight at once, a call past that waits up to ``pool_timeout`` for its turn (then 503), and each
in flight uses at most one connection per master, so no master's pool (``max_connections``
plus a spare, for the memory-event subscription) runs dry.

Cluster rules every user keeps (the key layouts are in each module's docstring):

* every key a multi-key command, a MULTI/EXEC or a Lua script touches carries one hash tag
  (``{project}``, or ``{jobs}`` for the job queue), so they all lie in one slot, on one master;
* a script queued in a pipeline goes as EVAL with its body on a cluster (``queue_script``):
  redis-py's cluster pipeline refuses EVALSHA, which a registered script sends (the plain
  pipeline loads the scripts first); and inside MULTI/EXEC an EVALSHA meeting a master without
  the script would fail alone while the transaction's other commands ran;
* nothing enumerates keys (SCAN, KEYS): on a cluster those see one master only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import redis.asyncio as redis_asyncio
import redis.exceptions
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.commands.core import AsyncScript

DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_POOL_TIMEOUT_SECONDS = 10.0
# A Redis that stops answering (frozen, partitioned) fails a call after this long instead of
# holding it (and its client) indefinitely; connecting gets the same bound.
DEFAULT_SOCKET_TIMEOUT_SECONDS = 5.0

# Either client: both take the same commands, scripts and pipelines for keys of one slot.
RedisClient = redis_asyncio.Redis | RedisCluster


# Connections to each master beyond max_connections: the memory-event subscription holds one.
_SPARE_CONNECTIONS_PER_MASTER = 2


class _Turns:
    """At most ``limit`` holders at once; a caller waits up to ``timeout`` for its turn."""

    def __init__(self, limit: int, timeout: float) -> None:
        self._free = asyncio.Semaphore(limit)
        self._limit = limit
        self._timeout = timeout

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._timeout):
                await self._free.acquire()
        except TimeoutError:
            raise redis.exceptions.ConnectionError(
                f"all {self._limit} Redis Cluster connections stayed busy for {self._timeout:g} s") from None
        try:
            yield
        finally:
            self._free.release()


class WaitingRedisCluster(RedisCluster):
    """A RedisCluster whose calls wait for a free connection (see the module docstring)."""

    def __init__(self, *args: Any, pool_timeout: float, **kwargs: Any) -> None:
        limit = kwargs["max_connections"]
        kwargs["max_connections"] = limit + _SPARE_CONNECTIONS_PER_MASTER
        super().__init__(*args, **kwargs)
        self._turns = _Turns(limit, pool_timeout)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self._turns.turn():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise redis.exceptions.RedisClusterException("shard_hint is deprecated in cluster mode")
        return _WaitingClusterPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py builds its own


class _WaitingClusterPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        client = self.cluster_client
        assert isinstance(client, WaitingRedisCluster)
        async with client._turns.turn():
            return await super().execute(raise_on_error, allow_redirections)


def connect_redis(url: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                  pool_timeout: float = DEFAULT_POOL_TIMEOUT_SECONDS,
                  socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_SECONDS, cluster: bool = False) -> RedisClient:
    """A client for ``url``; with ``cluster``, a cluster client that discovers every master from
    that one (the seed node) on its first call."""
    if cluster:
        return WaitingRedisCluster.from_url(url, max_connections=max_connections, pool_timeout=pool_timeout,
                                            socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
                                            decode_responses=True)
    pool = redis_asyncio.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=pool_timeout,
                                                         socket_timeout=socket_timeout,
                                                         socket_connect_timeout=socket_timeout,
                                                         decode_responses=True)
    # from_pool: closing the client closes the pool too.
    return redis_asyncio.Redis.from_pool(pool)


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


async def queue_script(script: AsyncScript, pipe: Any, keys: Sequence[Any], args: Sequence[Any]) -> None:
    """Queue ``script`` in ``pipe`` (see the module docstring: EVAL with its body on a cluster)."""
    if isinstance(pipe, ClusterPipeline):
        body = script.script
        assert isinstance(body, str)  # the gateway's scripts are registered as text
        pipe.eval(body, len(keys), *keys, *args)
    else:
        await script(keys=keys, args=args, client=pipe)
