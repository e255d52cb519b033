"""Timestamps in the one format the API returns: ISO 8601, UTC, milliseconds, ``Z``."""

from __future__ import annotations

from datetime import datetime, UTC


def now_iso() -> str:
    return iso(datetime.now(UTC))


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def from_timestamp(seconds: float) -> str:
    return iso(datetime.fromtimestamp(seconds, UTC))
