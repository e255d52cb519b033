"""Lexical features of memory text: BM25 sparse vectors and the stemmed terms behind them.

Qdrant's own BM25 (from qdrant-edge) turns text into sparse vectors on our side of
the index, for every backend: no model, no download, the same tokens everywhere.
The same tokenizer gives the term sets used to calibrate scores, so "which share
of the query's words does this memory contain" agrees with what BM25 matched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection

from qdrant_edge import Bm25, Bm25Config, SparseVector


@dataclass(frozen=True)
class IndexedText:
    vector: SparseVector
    # The memory's own terms, and those only the memory before it has: kept with the
    # memory so that scoring a hit needs no tokenizing.
    terms: list[int]
    context_terms: list[int]


class Lexicon:
    def __init__(self, language: str = "english") -> None:
        # BM25's standard parameters (k 1.2, b 0.75, avg_len 256). Matching avg_len to
        # short memories (8-32 tokens) measured worse on bench/locomo: it over-rewards
        # the shortest memories.
        self._bm25 = Bm25(Bm25Config(language=language))

    def document_vector(self, text: str) -> SparseVector:
        return self._bm25.embed_document(text)

    def index_text(self, text: str, previous: str) -> IndexedText:
        """How a memory is indexed: BM25 of its text, plus BM25 of the memory stored just
        before it (same subject) joined with its text, as one vector; and its terms.

        A memory's neighbour often carries the words a later question uses: "we went there
        in May" after "I visited Kyoto". Adding the two vectors makes a search score the sum
        of both matches in one lookup (a dot product is linear), which measured as well on
        LoCoMo as fusing two separate lexical searches, at the cost of one.
        """
        own = self.document_vector(text)
        if not previous:
            return IndexedText(own, list(own.indices), [])
        joined = self.document_vector(f"{previous}\n{text}")
        weights = dict(zip(joined.indices, joined.values))
        for index, value in zip(own.indices, own.values):
            weights[index] = weights.get(index, 0.0) + value
        terms = list(own.indices)
        mine = set(terms)
        return IndexedText(SparseVector(list(weights), list(weights.values())), terms,
                           [index for index in joined.indices if index not in mine])

    def query_vector(self, text: str) -> SparseVector:
        return self._bm25.embed_query(text)

    def terms(self, text: str) -> frozenset[int]:
        """The distinct stemmed, stopword-free terms of ``text`` (as BM25 token ids)."""
        return frozenset(self._bm25.embed_query(text).indices)


def coverage(query_terms: frozenset[int], doc_terms: Collection[int]) -> float:
    """The share of the query's terms the document contains: 1.0 when it has them all."""
    if not query_terms:
        return 0.0
    return len(query_terms.intersection(doc_terms)) / len(query_terms)
