"""Ids for documents written on every turn (messages, recall turns, jobs, claims).

Time first, then randomness: ids made one after another sort together, so a store's
unique index on ids takes each new one on its last page instead of a random page of
the whole index (SQLite writes every page a commit touches into its log: fewer pages,
a cheaper commit). 48 random bits per millisecond keep two ids made in the same
millisecond apart.
"""

from __future__ import annotations

import secrets
import time


def ordered_id(prefix: str) -> str:
    """``prefix`` + 12 hex digits of the time in milliseconds + 12 random hex digits."""
    return f"{prefix}{time.time_ns() // 1_000_000:012x}{secrets.token_hex(6)}"
