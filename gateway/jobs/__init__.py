"""Durable background jobs (learning from a turn): a queue per backend and one worker.

The factories below are registered as ``mnx_gateway.queues`` entry points (pyproject.toml) and
called by ``gateway.registry``; each imports its backend only when it is the one chosen.
"""

from __future__ import annotations

from typing import Any

from gateway.config import StorageConfig
from gateway.jobs.queue import Job, JobQueue


def open_sqlite_queue(config: StorageConfig, redis: Any) -> JobQueue:
    from gateway.jobs.sqlite_queue import SqliteJobQueue

    return SqliteJobQueue(config.sqlite.path)


def open_redis_queue(config: StorageConfig, redis: Any) -> JobQueue:
    """``redis``: the gateway's shared Redis client (gateway.store.redis_client), else the configured URL."""
    from gateway.jobs.redis_queue import RedisJobQueue

    return RedisJobQueue(redis if redis is not None else config.redis.url, config.redis.key_prefix,
                         cluster=config.redis.cluster)


__all__ = ["Job", "JobQueue", "open_redis_queue", "open_sqlite_queue"]
