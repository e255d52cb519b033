"""Storage backends behind one protocol (see ``base``): SQLite embedded, Redis in production."""

from __future__ import annotations

from typing import Any

from gateway.config import StorageConfig
from gateway.store.base import Collection, Document, DocumentStore


def open_store(config: StorageConfig, redis: Any = None) -> DocumentStore:
    """``redis``: the gateway's shared Redis client (gateway.store.redis_client), for the Redis backend."""
    if config.backend == "redis":
        from gateway.store.redis import RedisDocumentStore

        return RedisDocumentStore(redis if redis is not None else config.redis.url, config.redis.key_prefix)
    from gateway.store.sqlite import SqliteDocumentStore

    return SqliteDocumentStore(config.sqlite.path)


__all__ = ["Collection", "Document", "DocumentStore", "open_store"]
