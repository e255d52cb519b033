"""Decay and reinforcement (seed 003): how a memory's weight moves with time and use."""

from __future__ import annotations

from gateway.config import RecallConfig
from gateway.memory.reinforcement import INDEX_STALENESS_SECONDS, index_is_behind
from gateway.memory.scoring import DAY, SEEN_SATURATION, weight

NOW = 1_800_000_000.0
CONFIG = RecallConfig()


def memory(age_days: float, **fields) -> dict:
    return {"importance": 50, "confidence": 0.8, "seen_count": 0, "created_at": NOW - age_days * DAY, **fields}


def test_unused_memories_fade_and_temporal_ones_fade_faster():
    fresh, old = weight(memory(0), NOW, CONFIG), weight(memory(365), NOW, CONFIG)
    assert old < fresh
    temporal_month = weight(memory(30, is_temporal=True), NOW, CONFIG)
    permanent_month = weight(memory(30), NOW, CONFIG)
    assert temporal_month < permanent_month
    # Decay has a floor: an old fact is weaker, never worthless.
    assert weight(memory(10_000), NOW, CONFIG) > 0.3 * fresh


def test_recall_reinforces_and_restarts_decay():
    forgotten = memory(365)
    recalled = memory(365, seen_count=5, last_seen_at=NOW)
    assert weight(recalled, NOW, CONFIG) > weight(forgotten, NOW, CONFIG)
    # Reinforcement itself (same recency) adds weight, with diminishing returns.
    once, often, very_often = (weight(memory(0, seen_count=n), NOW, CONFIG) for n in (1, 10, 1000))
    assert once < often < very_often and very_often - often < often - once


def test_importance_and_confidence_raise_weight():
    assert weight(memory(0, importance=90), NOW, CONFIG) > weight(memory(0, importance=10), NOW, CONFIG)
    assert weight(memory(0, confidence=0.95), NOW, CONFIG) > weight(memory(0, confidence=0.2), NOW, CONFIG)
    assert 0 < weight(memory(0, importance=100, confidence=1, seen_count=10**6), NOW, CONFIG) <= 1.0


def test_the_index_copy_of_recall_counts_is_refreshed_only_when_a_ranking_could_tell():
    """Recall counts live in the store; the index's copy (what ranking reads) is rewritten only
    when the weight it gives would differ: below saturation, or once it is a minute stale."""
    indexed = {"seen_count": 3, "last_seen_at": NOW}
    assert index_is_behind(indexed, 4, NOW)  # one more recall below saturation counts
    assert not index_is_behind(indexed, 3, NOW + 30)  # same count, 30 s later: no ranking can tell
    assert index_is_behind(indexed, 3, NOW + INDEX_STALENESS_SECONDS + 1)
    saturated = {"seen_count": SEEN_SATURATION, "last_seen_at": NOW}
    assert not index_is_behind(saturated, SEEN_SATURATION + 50, NOW + 30)
    # ...because from SEEN_SATURATION on, more recalls do not change the weight at all,
    assert weight(memory(0, seen_count=SEEN_SATURATION), NOW, CONFIG) == weight(
        memory(0, seen_count=SEEN_SATURATION + 50), NOW, CONFIG)
    # and a minute of decay moves it by less than one part in ten thousand.
    fresh, minute_old = (weight(memory(30, last_seen_at=NOW - age, is_temporal=True), NOW, CONFIG)
                         for age in (0, INDEX_STALENESS_SECONDS))
    assert 0 < fresh - minute_old < 1e-4
    assert index_is_behind({}, 1, NOW)  # never recalled before
