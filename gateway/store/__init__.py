"""Storage backends behind one protocol (see ``base``): SQLite embedded, Redis in production.

The factories below are registered as ``mnx_gateway.stores`` entry points (pyproject.toml) and
called by ``gateway.registry``; each imports its backend only when it is the one chosen.
"""

from __future__ import annotations

from typing import Any

from gateway.config import StorageConfig
from gateway.store.base import Collection, Document, DocumentStore, Increment, Tally


def open_sqlite_store(config: StorageConfig, redis: Any) -> DocumentStore:
    from gateway.store.sqlite import SqliteDocumentStore

    return SqliteDocumentStore(config.sqlite.path)


def open_redis_store(config: StorageConfig, redis: Any) -> DocumentStore:
    """``redis``: the gateway's shared Redis client (gateway.store.redis_client), else the configured URL."""
    from gateway.store.redis import RedisDocumentStore

    return RedisDocumentStore(redis if redis is not None else config.redis.url, config.redis.key_prefix,
                              cluster=config.redis.cluster)


__all__ = ["Collection", "Document", "DocumentStore", "Increment", "Tally", "open_redis_store", "open_sqlite_store"]
