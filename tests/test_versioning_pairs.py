"""The versioning thresholds, justified by a labelled set of memory pairs.

``tests/data/versioning_pairs.json`` holds pairs (old memory, new memory) labelled
duplicate (same meaning: skip), conflict (same topic, another value: supersede)
or unrelated (create both). The defaults of ``memory.versioning`` must classify
them with high precision and recall; running this file prints the figures.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from gateway.config import VersioningConfig
from gateway.memory.claims import extract_claims
from gateway.memory.lexical import Lexicon
from gateway.memory.versioning import Candidate, Comparer, decide, relation

PAIRS = json.loads((Path(__file__).parent / "data" / "versioning_pairs.json").read_text())
LABELS = ("duplicate", "conflict", "unrelated")


def classify(config: VersioningConfig) -> list[str]:
    comparer = Comparer(Lexicon())
    return [relation(comparer, config, pair["new"], extract_claims(pair["new"]),
                     Candidate("old", pair["old"], extract_claims(pair["old"]))) for pair in PAIRS]


def precision_recall(predicted: list[str]) -> dict[str, tuple[float, float]]:
    hits, guessed, actual = Counter(), Counter(predicted), Counter(p["expected"] for p in PAIRS)
    for guess, pair in zip(predicted, PAIRS):
        if guess == pair["expected"]:
            hits[guess] += 1
    return {label: (hits[label] / guessed[label] if guessed[label] else 0.0, hits[label] / actual[label])
            for label in LABELS}


def test_the_set_covers_every_label():
    counts = Counter(p["expected"] for p in PAIRS)
    assert all(counts[label] >= 10 for label in LABELS), counts


@pytest.mark.parametrize("label", LABELS)
def test_default_thresholds_classify_the_pairs(label):
    precision, recall = precision_recall(classify(VersioningConfig()))[label]
    print(f"{label}: precision {precision:.2f} recall {recall:.2f}")
    assert precision >= 0.9 and recall >= 0.9


def test_the_defaults_beat_their_neighbours():
    """Moving either threshold by 0.1 classifies no better: the defaults are not arbitrary."""
    def accuracy(config: VersioningConfig) -> float:
        return sum(g == p["expected"] for g, p in zip(classify(config), PAIRS)) / len(PAIRS)

    default = VersioningConfig()
    best = accuracy(default)
    for duplicate, supersede in ((0.95, 0.65), (0.75, 0.65), (0.85, 0.55), (0.85, 0.75)):
        assert accuracy(VersioningConfig(duplicate_threshold=duplicate, supersede_threshold=supersede)) <= best


def test_a_duplicate_anywhere_skips_and_every_conflict_is_superseded():
    comparer = Comparer(Lexicon())
    config = VersioningConfig()
    text = "my new favorite fruit is strawberry"
    conflicting = [Candidate("a", "Favorite fruit is blueberry", extract_claims("Favorite fruit is blueberry")),
                   Candidate("b", "User works remotely")]
    decision = decide(comparer, config, text, extract_claims(text), conflicting)
    assert (decision.action, decision.superseded_ids) == ("supersede", ["a"])
    repeated = conflicting + [Candidate("c", "Strawberry is my favorite fruit",
                                        extract_claims("Strawberry is my favorite fruit"))]
    decision = decide(comparer, config, text, extract_claims(text), repeated)
    assert (decision.action, decision.duplicate_of) == ("skip", "c")
