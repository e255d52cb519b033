"""The one Redis client a gateway process shares between its document store, job queue and
erasure fence.

Its pool blocks when every connection is busy, and waits up to ``pool_timeout`` for one
to come back: redis-py's default pool raises ``MaxConnectionsError`` instead, and a
proxied turn issues several store calls at once, so 200 concurrent chats made 186 of
them fail. Past the timeout the call fails as a storage error (503).
"""

from __future__ import annotations

import redis.asyncio as redis_asyncio

DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_POOL_TIMEOUT_SECONDS = 10.0
# A Redis that stops answering (frozen, partitioned) fails a call after this long instead of
# holding it (and its client) indefinitely; connecting gets the same bound.
DEFAULT_SOCKET_TIMEOUT_SECONDS = 5.0


def connect_redis(url: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                  pool_timeout: float = DEFAULT_POOL_TIMEOUT_SECONDS,
                  socket_timeout: float = DEFAULT_SOCKET_TIMEOUT_SECONDS) -> redis_asyncio.Redis:
    pool = redis_asyncio.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=pool_timeout,
                                                         socket_timeout=socket_timeout,
                                                         socket_connect_timeout=socket_timeout,
                                                         decode_responses=True)
    # from_pool: closing the client closes the pool too.
    return redis_asyncio.Redis.from_pool(pool)
