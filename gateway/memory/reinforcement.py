"""How often a memory was recalled and stated again: tallies kept beside its document.

A recall (the memory went into a turn) and a reinforcement (a learned duplicate of it)
each add one to a tally of the memory (``DocumentStore.increment``: one small write,
never a rewrite of the memory's document, and no increment lost between gateways).
The document keeps what it counted before tallies existed; the API shows the sum.

Ranking reads the counts from the vector index (search never touches the store), where
they are refreshed only when a ranking could tell the difference (``index_is_behind``):
the reinforcement term stops growing at ``SEEN_SATURATION`` recalls, and decay over a
minute is a change in the fourth decimal of a memory's weight.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Iterable

from gateway.clock import from_timestamp
from gateway.memory.scoring import SEEN_SATURATION
from gateway.store import Increment, Tally

# Tally names.
SEEN = "seen"  # recalled into a turn
REINFORCED = "reinforced"  # stated again: a learned duplicate was skipped in its favour

# How stale the index's "last seen" may be before a recall or reinforcement rewrites it.
INDEX_STALENESS_SECONDS = 60.0


def with_tallies(doc: dict[str, Any], tallies: dict[str, Tally] | None) -> dict[str, Any]:
    """``doc`` with its tallies added to the counts it carries (in place; returned for chaining)."""
    if not tallies:
        return doc
    seen, reinforced = tallies.get(SEEN), tallies.get(REINFORCED)
    latest = doc.get("_last_seen") or 0.0
    if seen is not None:
        doc["seen_count"] = doc.get("seen_count", 0) + seen.count
        doc["last_seen_at"] = from_timestamp(seen.last_at)
        latest = max(latest, seen.last_at)
    if reinforced is not None:
        doc["reinforcement_count"] = doc.get("reinforcement_count", 0) + reinforced.count
        doc["last_reinforced_at"] = from_timestamp(reinforced.last_at)
        latest = max(latest, reinforced.last_at)
    if latest:
        doc["_last_seen"] = latest
    return doc


def seen_counts(doc: dict[str, Any], tallies: dict[str, Tally] | None) -> tuple[int, float | None]:
    """(seen_count, last seen or reinforced, epoch seconds) of ``doc`` with its tallies: what the
    index keeps of them, read without formatting the API's timestamps."""
    seen_count, latest = doc.get("seen_count", 0), doc.get("_last_seen") or 0.0
    seen, reinforced = (tallies or {}).get(SEEN), (tallies or {}).get(REINFORCED)
    if seen is not None:
        seen_count += seen.count
        latest = max(latest, seen.last_at)
    if reinforced is not None:
        latest = max(latest, reinforced.last_at)
    return seen_count, latest or None


def seen_increments(recalls: Iterable[tuple[str, float]]) -> list[Increment]:
    """The seen tallies' increments for recalls, each (memory id, when): one per memory, however
    many turns of a batch recalled it (one row to write, not one per turn)."""
    counted: dict[str, tuple[int, float]] = {}
    for memory_id, when in recalls:
        times, latest = counted.get(memory_id, (0, 0.0))
        counted[memory_id] = (times + 1, max(latest, when))
    return [Increment(memory_id, SEEN, latest, times) for memory_id, (times, latest) in counted.items()]


def index_is_behind(indexed: dict[str, Any], seen_count: int, last_seen: float) -> bool:
    """Whether the index's copy of a memory's counts (``indexed``: a hit's fields) is far enough
    behind ``seen_count`` / ``last_seen`` for a ranking to tell the difference."""
    indexed_seen = int(indexed.get("seen_count") or 0)
    if indexed_seen < SEEN_SATURATION and seen_count != indexed_seen:
        return True
    return last_seen - float(indexed.get("last_seen_at") or 0.0) > INDEX_STALENESS_SECONDS
