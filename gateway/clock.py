"""Timestamps in the one format the API returns: ISO 8601, UTC, milliseconds, ``Z``.

Formatting is on the hot path (every history message, recall event and counted memory has
one), and ``datetime.strftime`` took a few percent of a full turn's CPU: a timestamp from epoch
seconds is formatted here by hand, the date and time of day once per second.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, UTC
from functools import lru_cache


def now_iso() -> str:
    return from_timestamp(time.time())


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def from_timestamp(seconds: float) -> str:
    """``iso(datetime.fromtimestamp(seconds, UTC))``, rounded the same way (to the microsecond,
    half to even, then cut to the millisecond)."""
    fraction, whole = math.modf(seconds)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    return _second(int(whole)) + f"{micros // 1000:03d}Z"


@lru_cache(maxsize=8)
def _second(whole: int) -> str:
    """The date and time of day of an epoch second, up to its dot."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole))
