"""Versioning's readings of a statement: who it is about, its values, whether it says something
changed (gateway/memory/statements.py), and what they make of a new memory next to an old one.

The pairs here are written for these tests (not taken from bench/versioning): each shows one
rule a user would notice, a memory kept that must be kept, a change that must replace.
"""

from __future__ import annotations

import pytest

from gateway.config import VersioningConfig
from gateway.memory.claims import extract_claims
from gateway.memory.lexical import Lexicon
from gateway.memory.versioning import Candidate, Comparer, relation
from tests.conftest import KEY

SUBJECT = "versioned"


def judge(old: str, new: str) -> str:
    return relation(Comparer(Lexicon()), VersioningConfig(), new, extract_claims(new),
                    Candidate("old", old, extract_claims(old)))


@pytest.mark.parametrize(("old", "new"), [
    ("User is allergic to cats", "User's daughter is allergic to cats"),
    ("User's father is a pilot", "User's father-in-law is a pilot"),
    ("User's daughter Ada is 6", "User's daughter Zoe is 3"),
    ("User is 41 years old", "User's husband is 41 years old"),
    ("User's doctor is Dr. Weiss", "User's dentist is Dr. Weiss"),
    ("User's boss is Omar", "User's boss's boss is Ines"),
    ("User works at a bakery", "Her brother works at a bakery"),
    ("User is allergic to cats", "User's cat is allergic to fish"),
])
def test_facts_about_different_people_never_replace_each_other(old, new):
    assert judge(old, new) == "unrelated"


def test_a_fact_about_the_user_naming_a_relation_can_be_the_same_fact():
    assert judge("User has a dog named Pepper", "User's dog is called Pepper") == "duplicate"


@pytest.mark.parametrize(("old", "new"), [
    ("User owns two cars", "User owns 2 cars"),
    ("User was born in Zürich", "User was born in Zurich"),
    ("Pepper is my favourite dog name", "My favourite dog name is Pepper"),
    ("User likes green tea", "User really likes drinking green tea"),
    ("User takes the train to work every day", "User takes the train to work"),
])
def test_the_same_fact_in_another_spelling_is_a_duplicate(old, new):
    assert judge(old, new) == "duplicate"


@pytest.mark.parametrize(("old", "new"), [
    ("User has three grandchildren", "User has 4 grandchildren now"),
    ("User walks 8,000 steps a day", "User walks 12,000 steps a day"),
    ("User's piano lesson is on Tuesdays", "User's piano lesson moved to Fridays"),
])
def test_another_quantity_or_date_for_the_same_statement_is_an_update(old, new):
    assert judge(old, new) == "conflict"


@pytest.mark.parametrize(("old", "new"), [
    ("User has two brothers", "User has two daughters"),      # the same number, other things
    ("User went to Peru in 2015", "User went to Peru again in 2022"),  # two trips
    ("User plays chess", "User plays chess and poker"),        # a second fact joined on
    ("User's car is red", "User also has a blue bike"),
    ("User has a parrot named Kiwi", "User now has a rabbit named Bun"),   # another pet, not a new one
    ("User is allergic to cats", "User has three cats now"),
    ("User teaches yoga", "User started teaching pilates"),
])
def test_alike_statements_that_are_both_true_are_kept(old, new):
    assert judge(old, new) == "unrelated"


@pytest.mark.parametrize(("old", "new"), [
    ("User's gym is in Leeds", "User's gym moved to York"),
    ("User reports to Dana", "Since the merger the user reports to Victor"),
    ("User smokes", "User quit smoking two years ago"),
    ("User's phone is an iPhone", "User switched from iPhone to a Pixel"),
    ("User does not have a bike", "User bought a bike"),
    ("User prefers the train", "User prefers the bus"),
])
def test_a_change_said_in_words_replaces_the_old_statement(old, new):
    assert judge(old, new) == "conflict"


def test_a_restatement_of_a_state_that_has_since_ended_is_not_a_duplicate():
    comparer = Comparer(Lexicon(), paraphrase=lambda a, b: 1.0)
    new = "User has a knee injury"
    assert relation(comparer, VersioningConfig(), new, extract_claims(new),
                    Candidate("old", "User's knee injury has healed")) != "duplicate"


def test_a_change_sharing_only_a_name_with_the_old_statement_keeps_both():
    """Moving to Oslo and starting a job in Oslo are two facts, though the second says "started"."""
    assert judge("User lives in Oslo", "User started a new job in Oslo") == "unrelated"


def test_versioning_through_the_api_keeps_other_peoples_facts_replaces_changed_values_and_skips_rewordings(
        gateway_on):
    with gateway_on.rest(KEY) as rest:
        def add(text: str) -> dict:
            response = rest.post("/memories", json={"subject_id": SUBJECT, "text": text})
            assert response.status_code in (200, 201), response.text
            return response.json()

        own = add("User is allergic to cats")
        daughter = add("User's daughter is allergic to cats")
        assert daughter["created"] is True and daughter["superseded_ids"] == []
        cats = add("User has 2 cats")
        three = add("User has three cats now")
        assert three["superseded_ids"] == [cats["id"]]
        assert add("User has three cats")["skipped"] is True
        # The shipped paraphrase model (memory.versioning.paraphrase, on by default) sees a rewording.
        heights = add("User is afraid of heights")
        assert add("User has a fear of heights")["duplicate_of"] == heights["id"]
        active = {m["text"] for m in rest.get("/memories", params={"subject_id": SUBJECT}).json()["data"]}
        assert active == {"User is allergic to cats", "User's daughter is allergic to cats", "User has three cats now",
                          "User is afraid of heights"}
        assert rest.get(f"/memories/{own['id']}").json()["data"]["status"] == "active"


@pytest.mark.parametrize(("old", "new"), [
    ("User is vegetarian", "User's husband is vegetarian"),
    ("User has a cat named Luna", "User has a cat named Mochi"),
    ("User has two sisters", "User has three sisters"),
    ("User went to Peru in 2015", "User went to Peru in 2022"),
    ("User eats meat", "User does not eat meat"),
])
def test_a_paraphrase_model_never_merges_facts_on_its_own(old, new):
    """Whatever the paraphrase model says (here: the worst, that everything means the same), a
    pair that differs in holder, name, number, date or polarity is never a duplicate."""
    comparer = Comparer(Lexicon(), paraphrase=lambda a, b: 1.0)
    verdict = relation(comparer, VersioningConfig(), new, extract_claims(new),
                       Candidate("old", old, extract_claims(old)))
    assert verdict != "duplicate"


@pytest.mark.parametrize(("old", "new"), [
    # Words the paraphrase model does not know (made-up words, codes, rare names) are fragments to
    # it, alike whatever they say: two memories differing in them are two memories.
    # (0.82 by the model without this rule: what tests/faults/test_three_gateways_cluster.py's
    # made-up memories lost.)
    ("User said: Remember qqifoba qrufube qsefabi", "User said: Remember qfobaba qgabebe qhibibi"),
])
def test_texts_differing_in_words_the_paraphrase_model_cannot_read_are_never_duplicates(old, new):
    from gateway.memory.paraphrase import shared_encoder
    encoder = shared_encoder()
    comparer = Comparer(Lexicon(), encoder.similarity, encoder.unknown_words)
    assert relation(comparer, VersioningConfig(), new, extract_claims(new), Candidate("old", old)) != "duplicate"
    # ...while the same text with those words is one.
    assert relation(comparer, VersioningConfig(), old, extract_claims(old), Candidate("old", old)) == "duplicate"
