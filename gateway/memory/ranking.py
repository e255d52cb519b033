"""How a search is asked of the vector index, and how its hits are scored and ordered."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from collections.abc import Sequence

from qdrant_edge import SparseVector

from gateway.clock import from_timestamp
from gateway.config import RecallConfig
from gateway.memory.lexical import Lexicon, coverage
from gateway.memory.scoring import weight
from gateway.memory.vector_index import VectorHit

# Weight of conversation context next to the query itself, in the lexical query.
CONTEXT_TERM_WEIGHT = 0.3
# A query term found only in the memory stored before a memory (its context) counts half:
# a hit's score is the share of query terms in its text plus half the share only in its context.
CONTEXT_MATCH_WEIGHT = 0.5


@dataclass(frozen=True)
class SearchHit:
    memory_id: str
    text: str
    fields: dict[str, Any]
    # How well the memory matches the query, 0-1 (share of its terms; cosine with a dense model).
    score: float
    # The ranking key: ``relevance`` times the memory's weight (gateway/memory/scoring.py).
    effective_score: float
    # The engine's score for the memory relative to the best hit's, 0-1.
    relevance: float

    def to_api(self) -> dict[str, Any]:
        return {"id": self.memory_id, "text": self.text, "kind": self.fields.get("kind"),
                "importance": self.fields.get("importance"), "is_temporal": self.fields.get("is_temporal", False),
                "created_at": from_timestamp(self.fields["created_at"]) if self.fields.get("created_at") else None,
                "score": round(self.score, 4), "effective_score": round(self.effective_score, 4)}


class Ranking:
    def __init__(self, lexicon: Lexicon, recall: RecallConfig) -> None:
        self._lexicon = lexicon
        self._recall = recall

    def query_vector(self, query: str, context: Sequence[str]) -> SparseVector:
        """The lexical query: the query's terms, and at a lower weight those of the conversation context."""
        weights = dict.fromkeys(self._lexicon.query_ids(query), 1.0)
        for line in context:
            for index in self._lexicon.query_ids(line):
                weights.setdefault(index, CONTEXT_TERM_WEIGHT)
        ordered = sorted(weights)
        return SparseVector(ordered, [weights[i] for i in ordered])

    def rank(self, query: str, hits: Sequence[VectorHit], min_score: float) -> list[SearchHit]:
        """The hits scoring at least ``min_score``, best (by effective score) first."""
        if not hits:
            return []
        query_terms = self._lexicon.terms(query)
        best = max(hit.rank_score for hit in hits) or 1.0
        now = time.time()
        ranked = []
        for hit in hits:
            text = hit.fields.get("text", "")
            score = (coverage(query_terms, hit.fields.get("terms", ()))
                     + CONTEXT_MATCH_WEIGHT * coverage(query_terms, hit.fields.get("context_terms", ())))
            if hit.similarity is not None:
                score = max(score, hit.similarity)
            if score < min_score:
                continue
            relevance = hit.rank_score / best
            ranked.append(SearchHit(hit.memory_id, text, hit.fields, score,
                                    relevance * weight(hit.fields, now, self._recall), relevance))
        ranked.sort(key=lambda h: h.effective_score, reverse=True)
        return ranked
