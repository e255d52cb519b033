"""How a matching memory's weight combines with its relevance (seed 003: decay, reinforcement).

``weight`` (about 0.3 to 1.0) says how much a memory deserves to be recalled
regardless of the query: importance and confidence raise it; time since it was
created or last recalled lowers it, twice as fast-fading for temporal memories
("travelling next week"); each recall reinforces it and restarts its decay.
"""

from __future__ import annotations

import math
from typing import Any

from gateway.config import RecallConfig

DAY = 86400.0
# Reinforcement saturates: the 20th recall adds little over the 10th, and from the 20th on
# further recalls add nothing (so the index need not count them: gateway/memory/reinforcement.py).
SEEN_SATURATION = 20
_REINFORCEMENT_SATURATION = math.log1p(SEEN_SATURATION)


def weight(fields: dict[str, Any], now: float, config: RecallConfig) -> float:
    return _combined(*_factors(fields, now, config))


def weight_parts(fields: dict[str, Any], now: float, config: RecallConfig) -> dict[str, float]:
    """What ``weight`` is made of, each 0-1, and the weight: how a search explains its ranking."""
    importance, confidence, reinforcement, freshness = _factors(fields, now, config)
    return {"importance": importance, "confidence": confidence, "reinforcement": reinforcement,
            "freshness": freshness, "weight": _combined(importance, confidence, reinforcement, freshness)}


def _combined(importance: float, confidence: float, reinforcement: float, freshness: float) -> float:
    standing = 0.55 + 0.25 * importance + 0.1 * confidence + 0.1 * reinforcement
    return standing * (0.6 + 0.4 * freshness)


def _factors(fields: dict[str, Any], now: float, config: RecallConfig) -> tuple[float, float, float, float]:
    """(importance, confidence, reinforcement, freshness) of a memory's index fields."""
    importance = float(fields.get("importance", 50)) / 100
    confidence = float(fields.get("confidence", 0.8))
    seen = int(fields.get("seen_count", 0))
    last_touched = max(float(fields.get("created_at", now)), float(fields.get("last_seen_at") or 0))
    half_life = config.temporal_half_life_days if fields.get("is_temporal") else config.half_life_days
    freshness = 0.5 ** (max(0.0, now - last_touched) / DAY / half_life)
    reinforcement = min(1.0, math.log1p(seen) / _REINFORCEMENT_SATURATION)
    return importance, confidence, reinforcement, freshness
