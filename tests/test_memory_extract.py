"""``POST /memories/extract`` (contract §6): the configured extractor on a given text, stored
(with ``learn``) through the same policy, versioning and claims path as a chat turn's learning."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import KEY_B


def extract(rest: httpx.Client, **body):
    return rest.post("/memories/extract", json=body)


def test_without_learn_it_answers_what_it_found_and_stores_nothing(gateway_on):
    with gateway_on.rest() as rest:
        found = extract(rest, subject_id="ann", text="Hi, I'm Alice and I love tea.")
        assert found.status_code == 200, found.text
        body = found.json()
        assert (body["ok"], body["learned"], body["extracted_count"]) == (True, False, 2)
        assert [m["text"] for m in body["memories"]] == ["User's name is Alice", "User loves drinking tea"]
        assert body["memories"][0]["kind"] and "claims" in body["memories"][0]
        assert rest.get("/memories", params={"subject_id": "ann"}).json()["data"] == []
        assert rest.get("/profiles", params={"subject_id": "ann"}).json()["data"] == {}


def test_learn_stores_through_versioning_with_claims_and_skips_what_it_knows(gateway_on):
    with gateway_on.rest() as rest:
        first = extract(rest, subject_id="ann", text="My favorite fruit is blueberry.", learn=True).json()
        assert (first["learned"], first["extracted_count"], first["learned_memory_count"]) == (True, 1, 1)
        stored = first["memories"][0]
        assert stored["memory_id"].startswith("mem_") and stored["claim_ids"]
        assert first["learned_claim_count"] == len(stored["claim_ids"])
        memory = rest.get(f"/memories/{stored['memory_id']}").json()["data"]
        assert (memory["text"], memory["source_type"]) == (stored["text"], "inferred")
        claim = rest.get(f"/claims/{stored['claim_ids'][0]}").json()["claim"]
        assert claim["source_memory_id"] == stored["memory_id"] and claim["object_value"] == "blueberry"

        # The same again is a duplicate: nothing new stored.
        again = extract(rest, subject_id="ann", text="My favorite fruit is blueberry.", learn=True).json()
        assert again["learned_memory_count"] == 0 and again["memories"][0]["memory_id"] is None
        assert again["memories"][0]["skipped"] is True

        # A new favourite supersedes the old memory, as chat learning does.
        newer = extract(rest, subject_id="ann", text="My favorite fruit is mango.", learn=True).json()
        assert newer["learned_memory_count"] == 1
        superseded = rest.get("/memories/superseded", params={"subject_id": "ann"}).json()["data"]
        assert [m["id"] for m in superseded] == [stored["memory_id"]]
        truth = rest.get("/claims/subject/ann/slot/favorite_fruit").json()
        assert truth["object_value"] == "mango"


def test_learn_and_force_may_come_in_the_query_string(gateway):
    with gateway.rest() as rest:
        forced = rest.post("/memories/extract", params={"learn": "true", "force": "true"},
                           json={"subject_id": "ann", "text": "hmm, okay then"}).json()
        assert forced["learned"] is True and forced["learned_memory_count"] == 1
        assert [m["text"] for m in rest.get("/memories", params={"subject_id": "ann"}).json()["data"]] == [
            "hmm, okay then"]


def test_the_projects_memory_policy_filters_what_is_learned(gateway):
    with gateway.rest() as rest:
        policy = {"id": "mp_no_prefs", "name": "n", "policy_text": "No preferences.", "is_default": True,
                  "config": {"exclude_kinds": ["preference"]}}
        assert rest.post("/memory/policies", json=policy).status_code == 201
        kept = extract(rest, subject_id="ann", text="I love tea.", learn=True).json()
        assert kept["extracted_count"] == 0 and kept["learned_memory_count"] == 0
        # ``memory_policy: false`` learns without it.
        unfiltered = extract(rest, subject_id="ann", text="I love tea.", learn=True, memory_policy=False).json()
        assert unfiltered["learned_memory_count"] == 1


def test_learned_profile_fields_are_written(gateway):
    with gateway.rest() as rest:
        extract(rest, subject_id="ann", text="Hi, I'm Alice and I love tea.", learn=True)
        assert rest.get("/profiles", params={"subject_id": "ann"}).json()["data"].get("name") == "Alice"


@pytest.mark.parametrize("body, params, status, code", [
    ({"text": "I love tea"}, {}, 400, "subject_id_required"),
    ({"subject_id": "ann"}, {}, 400, "text_required"),
    ({"subject_id": "ann", "text": "   "}, {}, 400, "text_required"),
    ({"subject_id": "ann", "text": "x" * 10_001}, {}, 400, "text_too_long"),
    ({"subject_id": "ann", "text": "I love tea", "learn": "maybe"}, {}, 400, None),
    ({"subject_id": "ann", "text": "I love tea"}, {"learn": "maybe"}, 400, "invalid_learn"),
    ({"subject_id": "ann", "text": "I love tea", "conversation_context": "not a list"}, {}, 400, None),
    ({"subject_id": "ann", "text": "I love tea", "conversation_context": [1, 2]}, {}, 400, None),
    ({"subject_id": 7, "text": "I love tea"}, {}, 400, None),
    ({"subject_id": "ann\x00", "text": "I love tea"}, {}, 400, None),
    ({"subject_id": "a" * 257, "text": "I love tea"}, {}, 400, None),
    ({"subject_id": "ann", "text": "I love tea", "conversation_context": ["earlier"] * 21}, {}, 400,
     "invalid_conversation_context"),
])
def test_bad_input_is_400_and_stores_nothing(gateway, body, params, status, code):
    with gateway.rest() as rest:
        response = rest.post("/memories/extract", params=params, json={"learn": True, **body} if
                             "learn" not in body and not params else body)
        assert response.status_code == status, response.text
        if code:
            assert response.json()["error"] == code
        assert rest.get("/memories", params={"subject_id": "ann"}).json()["data"] == []


def test_unauthorized_and_other_projects(gateway):
    unauthenticated = httpx.post(gateway.api + "/memories/extract", json={"subject_id": "ann", "text": "I love tea"})
    assert unauthenticated.status_code == 401
    with gateway.rest() as rest, gateway.rest(KEY_B) as other:
        stored = extract(other, subject_id="ann", text="I love tea.", learn=True).json()
        assert stored["learned_memory_count"] == 1
        # Project A's subject "ann" is another subject: nothing of project B shows.
        assert rest.get("/memories", params={"subject_id": "ann"}).json()["data"] == []
        assert rest.get(f"/memories/{stored['memories'][0]['memory_id']}").status_code == 404
