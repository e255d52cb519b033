"""Skip, supersede or create: what a new memory does to the subject's existing ones (seed 003).

Each of the subject's closest active memories is compared with the new one:

* same claim slot (e.g. favorite_fruit): same value is a duplicate, another value
  a conflict, however the two are worded (a multi-valued predicate's values each
  fill a slot of their own: "likes sushi" and "likes ramen" do not conflict);
* otherwise by similarity (0-1): at or above ``duplicate_threshold`` a duplicate,
  at or above ``supersede_threshold`` a conflict (same topic, another value);
  a statement and its negation are a conflict, never a duplicate.

Any duplicate means the new memory is skipped; otherwise it is created and every
conflicting memory is superseded by it. Similarity is the larger of the lexical
overlap of the two texts' key terms and, with a dense model, their cosine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from collections.abc import Sequence

from gateway.config import VersioningConfig
from gateway.memory.claims import Claim, value_key
from gateway.memory.lexical import Lexicon

# Wordings of the same relation, folded together so "likes coffee" and "enjoys coffee" match.
_SYNONYMS = {
    "enjoy": "like", "enjoys": "like", "enjoyed": "like", "love": "like", "loves": "like", "loved": "like",
    "adore": "like", "adores": "like", "fond": "like", "likes": "like", "liked": "like", "prefers": "prefer",
    "hate": "dislike", "hates": "dislike", "detest": "dislike", "detests": "dislike", "dislikes": "dislike",
    "favourite": "favorite", "resides": "live", "reside": "live", "lives": "live", "based": "live",
    "employed": "work", "works": "work", "job": "work", "called": "named",
}
# Who a memory is about says nothing about what it says.
_SUBJECT_WORDS = {"user", "users", "user's", "the", "i", "me", "my", "i'm"}
# Words that only date or negate a statement; negation is compared separately.
_FILLER_WORDS = {"longer", "anymore", "now", "still", "currently", "new"}
_NEGATION = re.compile(r"\b(?:not|no|never|n't|don't|doesn't|didn't|isn't|aren't|wasn't|won't|cannot|can't|"
                       r"dislike|dislikes|hate|hates)\b|n't\b", re.I)
_WORD = re.compile(r"[\w']+")

Action = Literal["create", "skip", "supersede"]


@dataclass(frozen=True)
class Candidate:
    memory_id: str
    text: str
    claims: Sequence[Claim] = ()
    # Cosine similarity of its dense vector to the new memory's, when there is a dense model.
    similarity: float | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    duplicate_of: str | None = None
    superseded_ids: list[str] = field(default_factory=list)


class Comparer:
    """Similarity between memory texts, on the terms that carry their meaning."""

    def __init__(self, lexicon: Lexicon) -> None:
        self._lexicon = lexicon

    def key_terms(self, text: str) -> frozenset[int]:
        words = [_SYNONYMS.get(w, w) for w in _WORD.findall(text.lower())
                 if w not in _SUBJECT_WORDS and w not in _FILLER_WORDS]
        return self._lexicon.terms(" ".join(words))

    def similarity(self, a: str, b: str, dense_similarity: float | None = None) -> float:
        terms_a, terms_b = self.key_terms(a), self.key_terms(b)
        lexical = 2 * len(terms_a & terms_b) / (len(terms_a) + len(terms_b)) if terms_a and terms_b else 0.0
        return max(lexical, dense_similarity) if dense_similarity is not None else lexical


def negated(text: str) -> bool:
    return bool(_NEGATION.search(text))


def relation(comparer: Comparer, config: VersioningConfig, text: str, claims: Sequence[Claim],
             other: Candidate) -> Literal["duplicate", "conflict", "unrelated"]:
    """How one existing memory relates to a new one."""
    # By slot, as the truth graph keeps them: a multi-valued predicate's other value fills
    # another slot (gateway/memory/claims.py), and is no conflict.
    slots = {c.slot: value_key(c.value) for c in claims}
    for claim in other.claims:
        if claim.slot in slots:
            return "duplicate" if slots[claim.slot] == value_key(claim.value) else "conflict"
    similarity = comparer.similarity(text, other.text, other.similarity)
    if similarity >= config.supersede_threshold and negated(text) != negated(other.text):
        return "conflict"
    if similarity >= config.duplicate_threshold:
        return "duplicate"
    if similarity >= config.supersede_threshold:
        return "conflict"
    return "unrelated"


def decide(comparer: Comparer, config: VersioningConfig, text: str, claims: Sequence[Claim],
           candidates: Sequence[Candidate]) -> Decision:
    conflicts = []
    for candidate in candidates:
        kind = relation(comparer, config, text, claims, candidate)
        if kind == "duplicate":
            return Decision("skip", duplicate_of=candidate.memory_id)
        if kind == "conflict":
            conflicts.append(candidate.memory_id)
    return Decision("supersede" if conflicts else "create", superseded_ids=conflicts)
