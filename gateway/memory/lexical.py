"""Lexical features of memory text: BM25 sparse vectors and the stemmed terms behind them.

Qdrant's own BM25 (from qdrant-edge) turns text into sparse vectors on our side of
the index, for every backend: no model, no download, the same tokens everywhere.
The same tokenizer gives the term sets used to calibrate scores, so "which share
of the query's words does this memory contain" agrees with what BM25 matched.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from collections.abc import Collection, Sequence

from qdrant_edge import Bm25, Bm25Config, SparseVector

# How much each part of a memory's vector counts (Lexicon.index_text): its own text, its
# text joined with the memory stored before it, and joined with the one stored after it.
OWN_WEIGHT = 1.0
PREVIOUS_WEIGHT = 1.5
FOLLOWING_WEIGHT = 0.5
# Adjacent-term pairs ("support group") next to single terms, relative to a term's weight.
PAIR_WEIGHT = 0.25
# A memory that only asks (every sentence a question) weighs this share of one that states:
# in a conversation the question often shares more words with a later search than the
# answer does, yet the answer is what the search is after (and gets the question's words
# through its context).
QUESTION_FACTOR = 0.6
# A memory stored after a question lends that question's own words this much more (times
# the share of its sentences that ask), on top of the previous-memory part: an answer
# ("Twice, the last time in May") often repeats no word of what it answers ("Have you been to
# Kyoto?"), yet a later search for it uses the question's words. On bench/locomo it raised
# MRR@10 0.558 -> 0.574 and any@10 0.797 -> 0.803 with every category at or above plain
# BM25's; 1.25-1.75 all do, 1.0 and 2.0 drop a category below it (bench/locomo/README.md).
ANSWERED_QUESTION_WEIGHT = 1.5

_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Pair ids are hashed into the 32-bit id space of single terms (see _pairs).
_PAIR_MULTIPLIER = 0x9E3779B1
_PAIR_SALT = 0x5BD1E995
_WORD_CACHE_LIMIT = 200_000
# Query texts whose terms are kept (a recall tokenizes its query, the conversation lines before
# it, which were the previous turn's query, and the query again to score hits): the latest
# few thousand, and only short ones, so the cache stays within a few megabytes.
_QUERY_CACHE_LIMIT = 4_096
_QUERY_CACHE_MAX_CHARS = 1_000


@dataclass(frozen=True)
class IndexedText:
    vector: SparseVector
    # The memory's own terms, and those only its neighbours have: kept with the memory
    # so that scoring a hit needs no tokenizing.
    terms: list[int]
    context_terms: list[int]


class Lexicon:
    def __init__(self, language: str = "english", *, contextual: bool = True) -> None:
        # BM25's standard parameters (k 1.2, b 0.75, avg_len 256). Matching avg_len to
        # short memories (8-32 tokens) measured worse on bench/locomo: it over-rewards
        # the shortest memories.
        self._bm25 = Bm25(Bm25Config(language=language))
        self._word_cache: dict[str, int | None] = {}
        self._query_cache: dict[str, tuple[list[int], frozenset[int]]] = {}
        # False (memory.vectors.lexical: plain): a memory's vector is BM25 of its own text
        # alone, and neither memories nor queries carry word pairs.
        self.contextual = contextual

    def document_vector(self, text: str) -> SparseVector:
        return self._bm25.embed_document(text)

    def index_text(self, text: str, previous: str, following: str = "") -> IndexedText:
        """How a memory is indexed: one vector, the weighted sum of BM25 of its text, of
        the memory stored just before it (same subject) joined with its text, and of its
        text joined with the memory stored just after it (once there is one), each with
        its adjacent-term pairs; and its terms.

        A memory's neighbours often carry the words a later question uses: "we went there
        in May" after "I visited Kyoto", or the answer after the question that names the
        topic. Summing the vectors makes a search score the weighted sum of the matches in
        one lookup (a dot product is linear): on LoCoMo this ranks better than fusing
        separate lexical searches, at the cost of one (bench/locomo/README.md). When the
        memory before it asks a question, that question's own words count once more
        (``ANSWERED_QUESTION_WEIGHT``): the memory is likely its answer.

        A plain lexicon (``contextual=False``) ignores the neighbours: BM25 of the text alone.
        """
        if not self.contextual:
            vector = self.document_vector(text)
            return IndexedText(vector, vector.indices, [])
        weights: defaultdict[int, float] = defaultdict(float)
        own_words = self._word_ids(text)
        own_pairs = _pairs(own_words)
        terms = self._add(weights, text, own_pairs, OWN_WEIGHT)
        neighbours: list[int] = []
        if previous:
            words = self._word_ids(previous)
            pairs = _pairs(words) | own_pairs | _pairs(words[-1:] + own_words[:1])
            neighbours += self._add(weights, f"{previous}\n{text}", pairs, PREVIOUS_WEIGHT)
            asked = question_share(previous)
            if asked:
                # The question's words alone (no pairs: they came with the part above).
                self._add(weights, previous, set(), ANSWERED_QUESTION_WEIGHT * asked)
        if following:
            words = self._word_ids(following)
            pairs = own_pairs | _pairs(words) | _pairs(own_words[-1:] + words[:1])
            neighbours += self._add(weights, f"{text}\n{following}", pairs, FOLLOWING_WEIGHT)
        scale = 1.0 - (1.0 - QUESTION_FACTOR) * question_share(text)
        ordered = sorted(weights)
        mine = set(terms)
        context_terms = sorted({index for index in neighbours if index not in mine})
        return IndexedText(SparseVector(ordered, [weights[i] * scale for i in ordered]), terms, context_terms)

    def query_vector(self, text: str) -> SparseVector:
        """BM25 query terms (weight 1 each: the engine applies IDF) and, for a contextual
        lexicon, their adjacent pairs."""
        ordered = self._query_terms(text)[0]
        return SparseVector(ordered, [1.0] * len(ordered))

    def query_ids(self, text: str) -> Sequence[int]:
        """The ids of ``query_vector``, in order (shared: not to be changed)."""
        return self._query_terms(text)[0]

    def forget_texts(self) -> None:
        """Empty the cache of query terms by text (a subject's erasure)."""
        self._query_cache.clear()

    def terms(self, text: str) -> frozenset[int]:
        """The distinct stemmed, stopword-free terms of ``text`` (as BM25 token ids)."""
        return self._query_terms(text)[1]

    def _query_terms(self, text: str) -> tuple[list[int], frozenset[int]]:
        """(the query vector's ids in order: terms and, for a contextual lexicon, pairs; the terms alone)."""
        cached = self._query_cache.get(text)
        if cached is not None:
            return cached
        terms = self._bm25.embed_query(text).indices
        ids = dict.fromkeys(terms, 1.0)
        if PAIR_WEIGHT and self.contextual:
            for pair in _pairs(self._word_ids(text)):
                ids.setdefault(pair, 1.0)
        found = (sorted(ids), frozenset(terms))
        if len(text) <= _QUERY_CACHE_MAX_CHARS:
            if len(self._query_cache) >= _QUERY_CACHE_LIMIT:
                self._query_cache.clear()
            self._query_cache[text] = found
        return found

    def _add(self, weights: defaultdict[int, float], text: str, pairs: set[int], factor: float) -> list[int]:
        """Add ``factor`` × BM25(text), and the text's adjacent-term ``pairs``, to ``weights``;
        return the text's terms."""
        vector = self.document_vector(text)
        indices, values = vector.indices, vector.values
        if not indices:
            return indices
        for index, value in zip(indices, values):
            weights[index] += factor * value
        if PAIR_WEIGHT:
            # A pair weighs a share of this text's mean term weight (BM25's saturation and
            # length normalisation already applied), since BM25 has no weight for it.
            pair_value = factor * PAIR_WEIGHT * sum(values) / len(values)
            for pair in pairs:
                weights[pair] += pair_value
        return indices

    def _word_ids(self, text: str) -> list[int]:
        """The text's words as BM25 term ids, in order, stopwords left out (cached per word:
        texts repeat words, and one BM25 call per word is the cost here)."""
        cache = self._word_cache
        ids = []
        for word in _WORD.findall(text.lower()):
            term = cache.get(word, -1)
            if term == -1:
                if len(cache) > _WORD_CACHE_LIMIT:
                    cache.clear()
                indices = self._bm25.embed_query(word).indices
                term = cache[word] = indices[0] if len(indices) == 1 else None
            if term is not None:
                ids.append(term)
        return ids


def _pairs(words: list[int]) -> set[int]:
    """Ids of ordered pairs of adjacent terms: "support group" matches a memory that says
    "support group" more than one with both words apart. Hashed into the term-id space
    (a collision with a term is as unlikely as between two terms)."""
    return {((a * _PAIR_MULTIPLIER + b) & 0xFFFFFFFF) ^ _PAIR_SALT for a, b in zip(words, words[1:]) if a != b}


def question_share(text: str) -> float:
    """The share of the text's sentences that are questions (0 for a statement)."""
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s]
    if not sentences:
        return 0.0
    return sum(s.rstrip().endswith("?") for s in sentences) / len(sentences)


def coverage(query_terms: frozenset[int], doc_terms: Collection[int]) -> float:
    """The share of the query's terms the document contains: 1.0 when it has them all."""
    if not query_terms:
        return 0.0
    return len(query_terms.intersection(doc_terms)) / len(query_terms)
