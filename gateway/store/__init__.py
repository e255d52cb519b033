"""Storage backends behind one protocol (see ``base``): SQLite embedded, Redis in production."""

from __future__ import annotations

from gateway.config import StorageConfig
from gateway.store.base import Collection, Document, DocumentStore


def open_store(config: StorageConfig) -> DocumentStore:
    if config.backend == "redis":
        from gateway.store.redis import RedisDocumentStore

        return RedisDocumentStore(config.redis.url, config.redis.key_prefix)
    from gateway.store.sqlite import SqliteDocumentStore

    return SqliteDocumentStore(config.sqlite.path)


__all__ = ["Collection", "Document", "DocumentStore", "open_store"]
