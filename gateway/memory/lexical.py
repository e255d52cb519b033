"""Lexical features of memory text: BM25 sparse vectors and the stemmed terms behind them.

Qdrant's own BM25 (from qdrant-edge) turns text into sparse vectors on our side of
the index, for every backend: no model, no download, the same tokens everywhere.
The same tokenizer gives the term sets used to calibrate scores, so "which share
of the query's words does this memory contain" agrees with what BM25 matched.
"""

from __future__ import annotations

from qdrant_edge import Bm25, Bm25Config, SparseVector

class Lexicon:
    def __init__(self, language: str = "english") -> None:
        # BM25's standard parameters (k 1.2, b 0.75, avg_len 256). Matching avg_len to
        # short memories (8-32 tokens) measured worse on bench/locomo: it over-rewards
        # the shortest memories.
        self._bm25 = Bm25(Bm25Config(language=language))

    def document_vector(self, text: str) -> SparseVector:
        return self._bm25.embed_document(text)

    def memory_vector(self, text: str, previous: str) -> SparseVector:
        """The vector a memory is indexed with: BM25 of its text, plus BM25 of the memory
        stored just before it (same subject) joined with its text.

        A memory's neighbour often carries the words a later question uses: "we went there
        in May" after "I visited Kyoto". Adding the two vectors makes a search score the sum
        of both matches in one lookup (a dot product is linear), which measured as well on
        LoCoMo as fusing two separate lexical searches, at the cost of one.
        """
        own = self.document_vector(text)
        if not previous:
            return own
        weights = dict(zip(own.indices, own.values))
        joined = self.document_vector(f"{previous}\n{text}")
        for index, value in zip(joined.indices, joined.values):
            weights[index] = weights.get(index, 0.0) + value
        ordered = sorted(weights)
        return SparseVector(ordered, [weights[i] for i in ordered])

    def query_vector(self, text: str) -> SparseVector:
        return self._bm25.embed_query(text)

    def terms(self, text: str) -> frozenset[int]:
        """The distinct stemmed, stopword-free terms of ``text`` (as BM25 token ids)."""
        return frozenset(self._bm25.embed_query(text).indices)


def coverage(query_terms: frozenset[int], doc_terms: frozenset[int]) -> float:
    """The share of the query's terms the document contains: 1.0 when it has them all."""
    if not query_terms:
        return 0.0
    return len(query_terms & doc_terms) / len(query_terms)
