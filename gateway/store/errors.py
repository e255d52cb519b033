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
    sqlite3.OperationalError,           # locked, disk full, unreadable file
)
