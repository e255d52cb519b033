"""A memory's lexical vector is Qdrant's own BM25 of it and of it joined with its neighbours.

Lexicon.index_text sums those vectors with their weights (and adds word pairs); for any
text a user can store, every single term must carry what Qdrant's BM25 gives it, since
that is what a search's query terms match.
"""

from __future__ import annotations

import pytest
from qdrant_edge import Bm25, Bm25Config

from gateway.memory.lexical import (ANSWERED_QUESTION_WEIGHT, FOLLOWING_WEIGHT, OWN_WEIGHT, PREVIOUS_WEIGHT,
                                    QUESTION_FACTOR, Lexicon, question_share)

QDRANT_BM25 = Bm25(Bm25Config(language="english"))

TRIPLES = [
    ("I visited Kyoto in May", "We talked about travel plans", "It rained every day in Kyoto"),
    ("Running, runs and ran: the stemmer folds them", "", "Ran again today"),
    ("Café, naïve, straße and 東京 are words too", "e-mail me at bob@example.com", ""),
    ("Do you like hiking?", "I hiked the trail twice, twice!", "Yes, hiking hiking hiking"),
    ("Twice, the last time in May", "Have you been to Kyoto? I loved it.", "Did you go in spring?"),
    ("the and of", "the a an", "only stopwords before this"),
    ("ha " * 3000, "ha ha", "ho " * 2000),
]


def bm25(text: str) -> dict[int, float]:
    vector = QDRANT_BM25.embed_document(text)
    return dict(zip(vector.indices, vector.values))


@pytest.mark.parametrize("text,previous,following", TRIPLES)
def test_a_memory_and_its_neighbours_weigh_what_qdrant_bm25_gives_the_joined_texts(text, previous, following):
    indexed = Lexicon().index_text(text, previous, following)
    stored = dict(zip(indexed.vector.indices, indexed.vector.values))
    parts = [(bm25(text), OWN_WEIGHT)]
    if previous:
        parts.append((bm25(f"{previous}\n{text}"), PREVIOUS_WEIGHT))
        if question_share(previous):
            parts.append((bm25(previous), ANSWERED_QUESTION_WEIGHT * question_share(previous)))
    if following:
        parts.append((bm25(f"{text}\n{following}"), FOLLOWING_WEIGHT))
    scale = 1.0 - (1.0 - QUESTION_FACTOR) * question_share(text)
    expected: dict[int, float] = {}
    for weights, factor in parts:
        for term, weight in weights.items():
            expected[term] = expected.get(term, 0.0) + factor * weight * scale
    # Every single term is there with BM25's weight (the rest of the vector are word pairs).
    assert set(expected) <= set(stored)
    for term, weight in expected.items():
        assert stored[term] == pytest.approx(weight, rel=1e-5)
    assert indexed.terms == sorted(bm25(text))
    neighbours = set().union(*(weights for weights, _ in parts[1:])) - set(bm25(text))
    assert indexed.context_terms == sorted(neighbours)


def test_an_answer_is_found_by_the_words_of_the_question_it_follows():
    """The same reply scores higher for the words of a question it answers than for the same
    words in a statement it merely follows: an answer rarely repeats what was asked."""
    lexicon = Lexicon()
    query = lexicon.query_vector("Kyoto trip")

    def score(previous: str) -> float:
        stored = lexicon.index_text("Twice, the last time in May", previous)
        weights = dict(zip(stored.vector.indices, stored.vector.values))
        return sum(weights.get(term, 0.0) for term in query.indices)

    assert score("Have you been on a Kyoto trip?") > score("I have been on a Kyoto trip.") > 0


def test_indexing_is_deterministic_whatever_came_before():
    lexicon = Lexicon()
    first = lexicon.index_text("We went there in May", "I visited Kyoto")
    lexicon.index_text("I visited Kyoto", "", "We went there in May")
    again = lexicon.index_text("We went there in May", "I visited Kyoto")
    assert (again.vector.indices, again.vector.values) == (first.vector.indices, first.vector.values)


@pytest.mark.parametrize("text,previous,following", TRIPLES)
def test_a_plain_lexicon_indexes_the_text_alone_as_qdrant_bm25_does(text, previous, following):
    plain = Lexicon(contextual=False)
    indexed = plain.index_text(text, previous, following)
    assert dict(zip(indexed.vector.indices, indexed.vector.values)) == bm25(text)
    assert indexed.terms == sorted(bm25(text)) and indexed.context_terms == []
    # Its queries carry no word pairs either: just BM25's query terms.
    assert plain.query_vector(text).indices == sorted(QDRANT_BM25.embed_query(text).indices)
