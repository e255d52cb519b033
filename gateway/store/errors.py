"""What a storage backend raises when it cannot be reached or cannot write.

Requests that meet one answer ``503 storage_unavailable`` (gateway.routing): the
failure is the gateway's, temporary, and worth retrying, which a 500 does not say.
"""

from __future__ import annotations

import sqlite3

import redis.exceptions

STORAGE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,   # includes a pool that stayed exhausted past its timeout
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    # A Redis Cluster between states: a master failing over (CLUSTER DOWN, MASTERDOWN), a slot
    # migrating (TRYAGAIN), or no master known for a slot yet; redis-py retries these first.
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    sqlite3.OperationalError,           # locked, disk full, unreadable file
)
