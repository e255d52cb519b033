"""Durable background jobs (learning from a turn): a queue per backend and one worker."""

from __future__ import annotations

from typing import Any

from gateway.config import StorageConfig
from gateway.jobs.queue import Job, JobQueue


def open_queue(config: StorageConfig, redis: Any = None) -> JobQueue:
    """``redis``: the gateway's shared Redis client (gateway.store.redis_client), for the Redis backend."""
    if config.backend == "redis":
        from gateway.jobs.redis_queue import RedisJobQueue

        return RedisJobQueue(redis if redis is not None else config.redis.url, config.redis.key_prefix)
    from gateway.jobs.sqlite_queue import SqliteJobQueue

    return SqliteJobQueue(config.sqlite.path)


__all__ = ["Job", "JobQueue", "open_queue"]
