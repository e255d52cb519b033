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
from typing import Collection

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

_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Pair ids are hashed into the 32-bit id space of single terms (see _pairs).
_PAIR_MULTIPLIER = 0x9E3779B1
_PAIR_SALT = 0x5BD1E995
_WORD_CACHE_LIMIT = 200_000
_ANALYSIS_CACHE_LIMIT = 4096


@dataclass(frozen=True)
class IndexedText:
    vector: SparseVector
    # The memory's own terms, and those only its neighbours have: kept with the memory
    # so that scoring a hit needs no tokenizing.
    terms: list[int]
    context_terms: list[int]


@dataclass(frozen=True)
class _Analysis:
    """One text tokenized once: what index_text needs of it as a memory or as a neighbour."""
    counts: dict[int, int]  # BM25 term id -> occurrences
    length: int  # the tokens BM25 counts (stopwords left out)
    words: list[int]  # term ids in order, for adjacent pairs
    pairs: set[int]
    question_share: float


class Lexicon:
    def __init__(self, language: str = "english") -> None:
        # BM25's standard parameters (k 1.2, b 0.75, avg_len 256). Matching avg_len to
        # short memories (8-32 tokens) measured worse on bench/locomo: it over-rewards
        # the shortest memories.
        config = Bm25Config(language=language)
        self._bm25 = Bm25(config)
        self._k, self._b, self._avg_len = config.k, config.b, config.avg_len
        self._word_cache: dict[str, int | None] = {}
        # Recent texts' analyses, in two generations (the older one dropped when the newer
        # fills): a memory's text is indexed again as the context of the subject's next
        # memory and of its previous one, so most lookups are recent.
        self._analyses: dict[str, _Analysis] = {}
        self._older_analyses: dict[str, _Analysis] = {}

    def index_text(self, text: str, previous: str, following: str = "") -> IndexedText:
        """How a memory is indexed: one vector, the weighted sum of BM25 of its text, of
        the memory stored just before it (same subject) joined with its text, and of its
        text joined with the memory stored just after it (once there is one), each with
        its adjacent-term pairs; and its terms.

        A memory's neighbours often carry the words a later question uses: "we went there
        in May" after "I visited Kyoto", or the answer after the question that names the
        topic. Summing the vectors makes a search score the weighted sum of the matches in
        one lookup (a dot product is linear): on LoCoMo this ranks better than fusing
        separate lexical searches, at the cost of one (bench/locomo/README.md).

        A joined text's BM25 is computed from its parts' term counts (the tokenizer splits
        at the line break, so its tokens are theirs): each text is tokenized once, however
        many memories it is context for.
        """
        own = self._analysis(text)
        # (text's term counts, its length, weight, adjacent pairs) for each joined text.
        parts = [(own.counts, own.length, OWN_WEIGHT, own.pairs)]
        if previous:
            before = self._analysis(previous)
            parts.append((_summed(before.counts, own.counts), before.length + own.length, PREVIOUS_WEIGHT,
                          before.pairs | own.pairs | _pairs(before.words[-1:] + own.words[:1])))
        if following:
            after = self._analysis(following)
            parts.append((_summed(own.counts, after.counts), own.length + after.length, FOLLOWING_WEIGHT,
                          own.pairs | after.pairs | _pairs(own.words[-1:] + after.words[:1])))
        weights: defaultdict[int, float] = defaultdict(float)
        for counts, length, factor, pairs in parts:
            self._add(weights, counts, length, pairs, factor)
        scale = 1.0 - (1.0 - QUESTION_FACTOR) * own.question_share
        ordered = sorted(weights)
        neighbours = set().union(*(counts for counts, _, _, _ in parts[1:])).difference(own.counts)
        return IndexedText(SparseVector(ordered, [weights[i] * scale for i in ordered]), sorted(own.counts),
                           sorted(neighbours))

    def query_vector(self, text: str) -> SparseVector:
        """BM25 query terms (weight 1 each: the engine applies IDF) and their adjacent pairs."""
        weights = dict.fromkeys(self._bm25.embed_query(text).indices, 1.0)
        if PAIR_WEIGHT:
            for pair in _pairs(self._word_ids(text)):
                weights.setdefault(pair, 1.0)
        ordered = sorted(weights)
        return SparseVector(ordered, [weights[i] for i in ordered])

    def terms(self, text: str) -> frozenset[int]:
        """The distinct stemmed, stopword-free terms of ``text`` (as BM25 token ids)."""
        return frozenset(self._bm25.embed_query(text).indices)

    def _add(self, weights: defaultdict[int, float], counts: dict[int, int], length: int, pairs: set[int],
             factor: float) -> None:
        """Add ``factor`` × the BM25 vector of a text with these term ``counts`` and
        ``length``, and the text's adjacent-term ``pairs``, to ``weights``."""
        if not counts:
            return
        k1, norm = self._k + 1.0, self._k * (1.0 - self._b + self._b * length / self._avg_len)
        once = k1 / (1.0 + norm)
        total = 0.0
        for term, count in counts.items():
            value = once if count == 1 else count * k1 / (count + norm)
            weights[term] += factor * value
            total += value
        if PAIR_WEIGHT:
            # A pair weighs a share of this text's mean term weight (BM25's saturation and
            # length normalisation already applied), since BM25 has no weight for it.
            pair_value = factor * PAIR_WEIGHT * total / len(counts)
            for pair in pairs:
                weights[pair] += pair_value

    def _analysis(self, text: str) -> _Analysis:
        analysis = self._analyses.get(text) or self._older_analyses.get(text)
        if analysis is None:
            counts, length = self._term_counts(text)
            words = self._word_ids(text)
            analysis = _Analysis(counts, length, words, _pairs(words), question_share(text))
        if len(self._analyses) >= _ANALYSIS_CACHE_LIMIT:
            self._older_analyses, self._analyses = self._analyses, {}
        self._analyses[text] = analysis
        return analysis

    def _term_counts(self, text: str) -> tuple[dict[int, int], int]:
        """The text's BM25 term counts and length, read back from Qdrant's own BM25 vector
        of it (its tokenizer is the one queries go through): a term's weight is
        c(k+1)/(c + k(1 - b + b·L/avg_len)) with L the sum of the counts, so the counts
        and L follow from the weights."""
        vector = self._bm25.embed_document(text)
        indices, values = vector.indices, vector.values
        if not indices:
            return {}, 0
        k, b, avg_len = self._k, self._b, self._avg_len
        k1 = k + 1.0
        # Most memories name each term once: then every weight is that of a count of 1.
        once = k1 / (1.0 + k * (1.0 - b + b * len(indices) / avg_len))
        if max(values) - min(values) <= 1e-6 * once and abs(values[0] - once) <= 1e-6 * once:
            return dict.fromkeys(indices, 1), len(indices)
        # Each count is v·K/(k+1-v) with K = k(1-b) + (k·b/avg_len)·L; summed, they give L.
        ratios = [v / (k1 - v) for v in values]
        share = sum(ratios)
        length = round(share * k * (1.0 - b) / max(1e-9, 1.0 - share * k * b / avg_len))
        for _ in range(8):  # the closed form loses precision on long repetitive texts: settle L
            norm = k * (1.0 - b + b * length / avg_len)
            counts = {index: max(1, round(ratio * norm)) for index, ratio in zip(indices, ratios)}
            if sum(counts.values()) == length:
                break
            length = sum(counts.values())
        # Read back exactly, or the vector would not be Qdrant's BM25: check the weights.
        norm = k * (1.0 - b + b * length / avg_len)
        for (index, count), value in zip(counts.items(), values):
            if abs(count * k1 / (count + norm) - value) > 1e-4 * value:
                raise ValueError(f"BM25 weights of {text[:40]!r} are not BM25's formula: the Bm25 model changed?")
        return counts, length

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


def _summed(first: dict[int, int], second: dict[int, int]) -> dict[int, int]:
    """Term counts of two texts joined."""
    counts = dict(first)
    for term, count in second.items():
        counts[term] = counts.get(term, 0) + count
    return counts


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
