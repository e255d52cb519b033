"""The claims truth graph (contract §7) through HTTP and the mnexium SDK: truths, retraction,
memory versioning kept in agreement, learned claims' provenance, recall, isolation, bad input."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from mnexium import Mnexium, ProviderConfig
from mnexium.types import ClaimCreateOptions

from gateway.memory.memories import LEGACY_CLAIMS
from gateway.memory.truth_graph import ASSERTIONS, CLAIMS, EDGES, SNAPSHOTS, TRUTHS
from gateway.pipeline.recall import PREAMBLE, TRUTHS_PREAMBLE
from gateway.store import open_redis_store, open_sqlite_store
from gateway.store.sqlite import SqliteDocumentStore
from tests.conftest import KEY, KEY_B, PROVIDER_KEY, edge_memory, wait_until

SUBJECT = "claimant"


def claim(rest: httpx.Client, predicate: str, value: Any, subject: str = SUBJECT, **fields: Any) -> dict[str, Any]:
    response = rest.post("/claims", json={"subject_id": subject, "predicate": predicate, "object_value": value,
                                          **fields})
    assert response.status_code in (200, 201), response.text
    return response.json()


def truth(rest: httpx.Client, subject: str = SUBJECT) -> dict[str, str]:
    """slot -> value of the subject's current truths."""
    body = rest.get(f"/claims/subject/{subject}/truth").json()
    assert body["slot_count"] == len(body["slots"])
    return {row["slot"]: row["object_value"] for row in body["slots"]}


def memory(rest: httpx.Client, text: str, subject: str = SUBJECT, **fields: Any) -> dict[str, Any]:
    response = rest.post("/memories", json={"subject_id": subject, "text": text, **fields})
    assert response.status_code in (200, 201), response.text
    return response.json()


def status(rest: httpx.Client, memory_id: str) -> tuple[str, str | None]:
    doc = rest.get(f"/memories/{memory_id}").json()["data"]
    return doc["status"], doc["superseded_by"]


def superseded_by_claim(rest: httpx.Client, memory_id: str) -> str | None:
    return rest.get(f"/memories/{memory_id}").json()["data"]["superseded_by_claim_id"]


class RacingStore(SqliteDocumentStore):
    """A SQLite store that runs ``race`` (once) just before a truth snapshot is stored."""

    race: Any = None

    async def put(self, collection, project_id, doc_id, doc, *, ttl_seconds=None):
        if collection is SNAPSHOTS and self.race is not None:
            race, self.race = self.race, None
            await race()
        await super().put(collection, project_id, doc_id, doc, ttl_seconds=ttl_seconds)


def test_one_truth_per_slot_retract_restores_the_previous_one(gateway_on):
    with gateway_on.rest() as rest:
        red = claim(rest, "favorite_color", "red", confidence=0.6, tags=["ui"])
        assert red["claim_id"].startswith("clm_") and red["created"] is True
        assert {k: red[k] for k in ("slot", "claim_type", "confidence", "linking_triggered")} == {
            "slot": "favorite_color", "claim_type": "preference", "confidence": 0.6, "linking_triggered": True}
        blue = claim(rest, "favorite_color", "blue")
        assert blue["superseded_claim_ids"] == [red["claim_id"]]
        claim(rest, "age", 34)  # a number, stored JSON-encoded
        assert truth(rest) == {"favorite_color": "blue", "age": "34"}

        # The same value again is one more assertion of the truth, not a new claim.
        again = rest.post("/claims", json={"subject_id": SUBJECT, "predicate": "favorite_color",
                                           "object_value": "Blue ", "confidence": 0.95})
        assert again.status_code == 200
        assert (again.json()["created"], again.json()["duplicate_of"]) == (False, blue["claim_id"])
        got = rest.get(f"/claims/{blue['claim_id']}").json()
        assert got["claim"]["confidence"] == 0.95 and len(got["assertions"]) == 2
        assert got["supersession_chain"] == [e for e in got["edges"] if e["edge_type"] == "supersedes"]
        assert [(e["from_claim_id"], e["to_claim_id"]) for e in got["supersession_chain"]] == [
            (blue["claim_id"], red["claim_id"])]

        slot = rest.get(f"/claims/subject/{SUBJECT}/slot/favorite_color").json()
        assert (slot["active_claim_id"], slot["object_value"], slot["subject_id"]) == (blue["claim_id"], "blue",
                                                                                      SUBJECT)
        assert slot["source"] == {"memory_id": None, "observation_id": None}

        retracted = rest.post(f"/claims/{blue['claim_id']}/retract")
        assert retracted.status_code == 200
        assert retracted.json() == {"success": True, "claim_id": blue["claim_id"], "slot": "favorite_color",
                                    "previous_claim_id": red["claim_id"], "restored_previous": True,
                                    "reason": "manual_retraction", "superseded_memory_ids": [],
                                    "restored_memory_ids": []}
        assert truth(rest) == {"favorite_color": "red", "age": "34"}
        twice = rest.post(f"/claims/{blue['claim_id']}/retract", json={"reason": "again"})
        assert twice.status_code == 409 and twice.json()["error"] == "claim_already_retracted"
        gone = rest.get(f"/claims/{blue['claim_id']}").json()
        assert (gone["claim"]["status"], gone["claim"]["retract_reason"]) == ("retracted", "manual_retraction")
        assert {e["edge_type"] for e in gone["edges"]} == {"supersedes", "retracts"}

        # Retracting the truth again: nothing older to come back, the slot is empty.
        last = rest.post(f"/claims/{red['claim_id']}/retract", json={"reason": "not true"}).json()
        assert (last["restored_previous"], last["previous_claim_id"], last["reason"]) == (False, None, "not true")
        assert truth(rest) == {"age": "34"}
        missing = rest.get(f"/claims/subject/{SUBJECT}/slot/favorite_color")
        assert missing.status_code == 404
        assert missing.json() | {"message": ""} == {"error": "slot_not_found", "subject_id": SUBJECT,
                                                      "slot": "favorite_color", "message": ""}

        history = rest.get(f"/claims/subject/{SUBJECT}/history", params={"slot": "favorite_color"}).json()
        assert [c["object_value"] for c in history["data"]] == ["blue", "red"]  # newest first
        assert history["total_claims"] == 2 and list(history["by_slot"]) == ["favorite_color"]
        assert [e["edge_type"] for e in history["edges"]] == ["supersedes"]
        slots = rest.get(f"/claims/subject/{SUBJECT}/slots").json()
        assert (slots["total"], slots["active_count"]) == (2, 1)
        assert [row["slot"] for row in slots["slots"]["active"]] == ["age"]
        assert [(row["slot"], row["status"]) for row in slots["slots"]["other"]] == [("favorite_color", "retracted")]
        graph = rest.get(f"/claims/subject/{SUBJECT}/graph", params={"limit": 500}).json()
        assert (graph["claims_count"], graph["edges_by_type"]) == (3, {"supersedes": 1, "retracts": 1})


def test_multi_valued_predicates_keep_a_set(gateway):
    with gateway.rest() as rest:
        sushi = claim(rest, "likes_food", "sushi")
        ramen = claim(rest, "likes_food", "ramen")
        assert (sushi["slot"], ramen["slot"], ramen["superseded_claim_ids"]) == (
            "likes_food:sushi", "likes_food:ramen", [])
        claim(rest, "likes_food", "Sushi")  # the same value: a duplicate, not a third truth
        claim(rest, "speaks", "portuguese")
        # A slot given by the client is one truth, whatever the predicate.
        claim(rest, "likes_food", "pizza", slot="main_craving")
        claim(rest, "likes_food", "tacos", slot="main_craving")
        assert truth(rest) == {"likes_food:sushi": "sushi", "likes_food:ramen": "ramen",
                               "speaks:portuguese": "portuguese", "main_craving": "tacos"}
        assert rest.get(f"/claims/subject/{SUBJECT}/slot/likes_food:ramen").json()["object_value"] == "ramen"


def test_claims_and_memory_versioning_agree(gateway_on):
    with gateway_on.rest() as rest:
        paris = memory(rest, "User lives in Paris")
        [stated] = rest.get(f"/memories/{paris['id']}/claims").json()["data"]
        assert {k: stated[k] for k in ("predicate", "value", "type", "status", "slot")} == {
            "predicate": "lives_in", "value": "paris", "type": "string", "status": "active", "slot": "lives_in"}
        paris_claim = stated["claim_id"]
        row = rest.get(f"/claims/subject/{SUBJECT}/slot/lives_in").json()
        assert (row["active_claim_id"], row["source"]["memory_id"]) == (paris_claim, paris["id"])

        # Versioning: a new memory in the slot supersedes the old one, and its claim the old claim.
        berlin = memory(rest, "I moved to Berlin")
        assert berlin["superseded_ids"] == [paris["id"]]
        [berlin_stated] = rest.get(f"/memories/{berlin['id']}/claims").json()["data"]
        assert rest.get(f"/memories/{paris['id']}/claims").json()["data"][0]["status"] == "superseded"
        assert truth(rest) == {"lives_in": "berlin"}

        # A claim posted through the API that supersedes a memory's claim supersedes the memory.
        lisbon = claim(rest, "lives_in", "lisbon", source="sdk")
        assert lisbon["superseded_claim_ids"] == [berlin_stated["claim_id"]]
        assert lisbon["superseded_memory_ids"] == [berlin["id"]]
        # superseded_by names memories only: a claim posted through the API has none.
        assert status(rest, berlin["id"]) == ("superseded", None)
        assert superseded_by_claim(rest, berlin["id"]) == lisbon["claim_id"]
        superseded = rest.get("/memories/superseded", params={"subject_id": SUBJECT}).json()["data"]
        assert {m["id"] for m in superseded} == {paris["id"], berlin["id"]}
        assert rest.get("/memories/search", params={"subject_id": SUBJECT, "q": "Berlin"}).json()["data"] == []

        # Retracting it: Berlin's claim is the truth again, and its memory (superseded by this claim) is back.
        undone = rest.post(f"/claims/{lisbon['claim_id']}/retract").json()
        assert (undone["previous_claim_id"], undone["restored_memory_ids"]) == (berlin_stated["claim_id"],
                                                                                [berlin["id"]])
        assert status(rest, berlin["id"]) == ("active", None) and truth(rest) == {"lives_in": "berlin"}

        # Retracting a memory's claim takes the memory out of use, and brings back the memory
        # (and claim) it had superseded.
        undone = rest.post(f"/claims/{berlin_stated['claim_id']}/retract", json={"reason": "wrong city"}).json()
        assert (undone["previous_claim_id"], undone["superseded_memory_ids"], undone["restored_memory_ids"]) == (
            paris_claim, [berlin["id"]], [paris["id"]])
        assert status(rest, berlin["id"]) == ("superseded", paris["id"]) and status(rest, paris["id"]) == (
            "active", None)
        assert superseded_by_claim(rest, berlin["id"]) == paris_claim
        assert truth(rest) == {"lives_in": "paris"}
        assert [h["id"] for h in rest.get("/memories/search", params={"subject_id": SUBJECT, "q": "Paris"}).json()[
            "data"]] == [paris["id"]]

        # Restoring the Berlin memory makes its claims true again... except the retracted one.
        assert rest.post(f"/memories/{berlin['id']}/restore").json()["restored"] is True
        assert truth(rest) == {"lives_in": "paris"}
        # Deleting a memory retracts its claims; editing its text retracts the old and asserts the new.
        assert rest.delete(f"/memories/{paris['id']}").json()["deleted"] is True
        assert truth(rest) == {}
        assert rest.get(f"/claims/{paris_claim}").json()["claim"]["retract_reason"] == "memory_deleted"
        rest.patch(f"/memories/{berlin['id']}", json={"text": "My favorite city is Porto"})
        assert truth(rest) == {"favorite_city": "porto"}
        assert [(c["predicate"], c["status"]) for c in rest.get(f"/memories/{berlin['id']}/claims").json()["data"]] == [
            ("lives_in", "retracted"), ("favorite_city", "active")]


def test_restoring_a_memory_makes_its_claims_the_truth_again(gateway):
    with gateway.rest() as rest:
        blueberry = memory(rest, "Favorite fruit is blueberry")
        strawberry = memory(rest, "my new favorite fruit is strawberry")
        assert strawberry["superseded_ids"] == [blueberry["id"]] and truth(rest) == {"favorite_fruit": "strawberry"}
        assert rest.post(f"/memories/{blueberry['id']}/restore").json()["restored"] is True
        assert truth(rest) == {"favorite_fruit": "blueberry"}
        # Restore undoes one supersede and changes no other memory (tests/test_memories.py's seed
        # walkthrough): the other stays active, its claim superseded (history shows both).
        assert status(rest, strawberry["id"]) == ("active", None)
        history = rest.get(f"/claims/subject/{SUBJECT}/history").json()["data"]
        assert [(c["object_value"], c["status"]) for c in history] == [("strawberry", "superseded"),
                                                                       ("blueberry", "active")]
        # A memory stored as is (no_supersede) asserts no truths, as it replaces nothing.
        memory(rest, "My favorite fruit is kiwi", no_supersede=True)
        assert truth(rest) == {"favorite_fruit": "blueberry"}


def test_learned_claims_carry_their_provenance(gateway):
    with httpx.Client(timeout=30) as client:
        answer = client.post(gateway.url + "/v1/chat/completions", json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "My favorite fruit is mango."}],
            "mnx": {"subject_id": SUBJECT, "chat_id": "learn-claims", "learn": True, "history": False}},
            headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY})
    assert answer.status_code == 200
    with gateway.rest() as rest:
        assert wait_until(lambda: truth(rest) == {"favorite_fruit": "mango"} and not rest.get("/jobs").json()["data"])
        [learned] = rest.get("/memories", params={"subject_id": SUBJECT}).json()["data"]
        claim_id = rest.get(f"/claims/subject/{SUBJECT}/slot/favorite_fruit").json()["active_claim_id"]
        stored = rest.get(f"/claims/{claim_id}").json()
        origin = stored["claim"]["origin"]
        assert origin == {"memory_id": learned["id"], "chat_id": "learn-claims", "job_id": learned["origin"]["job_id"],
                          "message_ids": learned["origin"]["message_ids"], "learned_at": learned["created_at"]}
        assert stored["claim"]["source_memory_id"] == learned["id"] and stored["claim"]["source_type"] == "inferred"
        assert [a["memory_id"] for a in stored["assertions"]] == [learned["id"]]


def recall_sections(forwarded: dict[str, Any]) -> tuple[list[str], list[tuple[str, str]]]:
    """(the memory texts, the (claim, value) truths) the gateway injected into a forwarded request."""
    system = forwarded["messages"][0]["content"] if forwarded["messages"][0]["role"] == "system" else ""
    memories = json.loads(system.split(PREAMBLE + "\n", 1)[1].split("\n\n", 1)[0]) if PREAMBLE in system else []
    truths = json.loads(system.split(TRUTHS_PREAMBLE + "\n", 1)[1].split("\n\n", 1)[0]) if (
        TRUTHS_PREAMBLE in system) else []
    return [m["memory"] for m in memories], [(t["claim"], t["value"]) for t in truths]


def recall_turn(gateway, text: str, **mnx: Any) -> tuple[list[str], list[tuple[str, str]]]:
    with httpx.Client(timeout=30) as client:
        answer = client.post(gateway.url + "/v1/chat/completions", json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}],
            "mnx": {"subject_id": SUBJECT, "chat_id": "recall-claims", "history": False, "learn": False, **mnx}},
            headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY})
    assert answer.status_code == 200, answer.text
    return recall_sections(gateway.forwarded()[-1]["body"])


def test_recall_injects_the_current_truths_once(start_gateway, storage_sqlite, tmp_path):
    gateway = start_gateway(storage_sqlite, memory={**edge_memory(tmp_path / "a"), "recall": {"truths": 3}})
    with gateway.rest() as rest:
        memory(rest, "User lives in Lisbon")
        claim(rest, "favorite_color", "blue")
        claim(rest, "favorite_color", "green")  # superseded: never injected
    # The Lisbon memory is recalled: its truth is not repeated; the color is there once, its latest value.
    memories, truths = recall_turn(gateway, "What is the weather in Lisbon today?", recall=True)
    assert memories == ["User lives in Lisbon"] and truths == [("favorite_color", "green")]
    # Nothing recalled: the truths alone, the memory's among them.
    memories, truths = recall_turn(gateway, "Tell me a joke", recall=True)
    assert memories == [] and truths == [("favorite_color", "green"), ("lives_in", "lisbon")]
    assert recall_turn(gateway, "Tell me a joke") == ([], [])  # recall off
    with gateway.rest() as rest:
        for n in range(5):
            claim(rest, f"fact_{n}", f"value {n}")
    assert recall_turn(gateway, "Tell me a joke", recall=True)[1] == [
        ("fact_4", "value 4"), ("fact_3", "value 3"), ("fact_2", "value 2")]  # at most memory.recall.truths
    off = start_gateway(storage_sqlite, memory={**edge_memory(tmp_path / "b"), "recall": {"truths": 0}})
    assert recall_turn(off, "Tell me a joke", recall=True) == ([], [])


def test_projects_are_isolated(gateway):
    with gateway.rest() as rest:
        mine = claim(rest, "favorite_color", "red")
        paris = memory(rest, "User lives in Paris")
    with gateway.rest(KEY_B) as other:
        assert other.get(f"/claims/{mine['claim_id']}").status_code == 404
        refused = other.post(f"/claims/{mine['claim_id']}/retract")
        assert refused.status_code == 404 and refused.json()["error"] == "claim_not_found"
        assert other.get(f"/claims/subject/{SUBJECT}/truth").json() == {
            "subject_id": SUBJECT, "project_id": "project-b", "slot_count": 0, "slots": []}
        assert other.get(f"/claims/subject/{SUBJECT}/slot/favorite_color").status_code == 404
        assert other.get(f"/claims/subject/{SUBJECT}/slots").json()["total"] == 0
        assert other.get(f"/claims/subject/{SUBJECT}/graph").json()["claims_count"] == 0
        assert other.get(f"/claims/subject/{SUBJECT}/history").json()["data"] == []
        linked = other.post("/claims", json={"subject_id": SUBJECT, "predicate": "lives_in", "object_value": "rome",
                                             "source_memory_id": paris["id"]})
        assert linked.status_code == 404 and linked.json()["error"] == "memory_not_found"
        # B's own claim in the same subject id and slot is B's alone.
        theirs = claim(other, "favorite_color", "black")
        assert theirs["superseded_claim_ids"] == [] and truth(other) == {"favorite_color": "black"}
    with gateway.rest() as rest:
        assert truth(rest) == {"favorite_color": "red", "lives_in": "paris"}
        assert rest.get(f"/claims/{mine['claim_id']}").json()["claim"]["status"] == "active"
        assert status(rest, paris["id"]) == ("active", None)
    for method, path in (("POST", "/claims"), ("GET", f"/claims/{mine['claim_id']}"),
                         ("POST", f"/claims/{mine['claim_id']}/retract"), ("GET", f"/claims/subject/{SUBJECT}/truth"),
                         ("GET", f"/claims/subject/{SUBJECT}/slot/favorite_color"),
                         ("GET", f"/claims/subject/{SUBJECT}/slots"), ("GET", f"/claims/subject/{SUBJECT}/graph"),
                         ("GET", f"/claims/subject/{SUBJECT}/history")):
        assert httpx.request(method, gateway.api + path).status_code == 401


BAD_BODIES = [
    ({"predicate": "age", "object_value": "3"}, "subject_id_required"),
    ({"subject_id": "", "predicate": "age", "object_value": "3"}, "subject_id_required"),
    ({"subject_id": SUBJECT, "object_value": "3"}, "predicate_required"),
    ({"subject_id": SUBJECT, "predicate": "  ", "slot": None, "object_value": "3"}, "predicate_required"),
    ({"subject_id": SUBJECT, "predicate": "age"}, "object_value_required"),
    ({"subject_id": SUBJECT, "predicate": "age", "object_value": "   "}, "object_value_required"),
    ({"subject_id": SUBJECT, "predicate": "age", "object_value": None, "value": None}, "object_value_required"),
    ({"subject_id": 7, "predicate": "age", "object_value": "3"}, "invalid_subject_id"),
    ({"subject_id": SUBJECT, "predicate": ["age"], "object_value": "3"}, "invalid_predicate"),
    ({"subject_id": SUBJECT, "predicate": "a" * 101, "object_value": "3"}, "predicate_too_long"),
    ({"subject_id": SUBJECT, "slot": "a" * 101, "value": "3"}, "predicate_too_long"),
    ({"subject_id": SUBJECT, "predicate": "age", "object_value": "x" * 2001}, "object_value_too_long"),
    ({"subject_id": SUBJECT, "predicate": "a\tge", "object_value": "3"}, "invalid_predicate"),
    ({"subject_id": SUBJECT, "predicate": "age", "object_value": "3", "confidence": 1.5}, "invalid_confidence"),
    ({"subject_id": SUBJECT, "predicate": "age", "object_value": "3", "confidence": "high"}, "invalid_confidence"),
    ({"subject_id": SUBJECT, "predicate": "age", "object_value": "3", "importance": -1}, "invalid_importance"),
    ({"subject_id": SUBJECT, "predicate": "age", "object_value": "3", "tags": "x"}, "invalid_tags"),
    ({"subject_id": SUBJECT, "predicate": "age", "object_value": "3", "valid_from": "yesterday"},
     "invalid_valid_from"),
    ({"subject_id": SUBJECT, "predicate": "age", "object_value": "3", "claim_id": "subject"}, "invalid_claim_id"),
    ({"subject_id": SUBJECT, "predicate": "age", "object_value": "3", "claim_id": "a/b"}, "invalid_claim_id"),
    ({"subject_id": SUBJECT, "predicate": "age", "object_value": "3", "source_memory_id": "mem_nope"},
     "memory_not_found"),
]


@pytest.mark.parametrize(("body", "code"), BAD_BODIES, ids=[code for _, code in BAD_BODIES])
def test_bad_claims_are_refused_and_store_nothing(shared_gateway, body, code):
    with shared_gateway.rest() as rest:
        response = rest.post("/claims", json=body)
        assert response.status_code in (400, 404) and response.json()["error"] == code, response.text
        assert response.json()["message"]
        assert rest.get(f"/claims/subject/{SUBJECT}/graph").json()["claims_count"] == 0


def test_bad_requests_name_what_is_wrong(shared_gateway):
    with shared_gateway.rest() as rest:
        for response in (rest.post("/claims", content=b"{not json"), rest.post("/claims", json=[1]),
                         rest.post("/claims", content=b"")):
            assert response.status_code == 400 and response.json()["error"] == "invalid_json_body"
        for response in (rest.get("/claims/clm_nope"), rest.post("/claims/clm_nope/retract"),
                         rest.post("/claims/clm_nope/retract", json={"reason": "x"})):
            assert response.status_code == 404 and response.json()["error"] == "claim_not_found"
        assert rest.post("/claims/clm_nope/retract", json={"reason": 5}).json()["error"] == "invalid_reason"
        assert rest.post("/claims/clm_nope/retract", content=b"[").json()["error"] == "invalid_json_body"
        assert rest.get(f"/claims/subject/{SUBJECT}/truth", params={"include_source": "maybe"}).json()[
            "error"] == "invalid_include_source"
        assert rest.get(f"/claims/subject/{'s' * 300}/truth").json()["error"] == "invalid_subject_id"
        assert rest.get(f"/claims/subject/{SUBJECT}/slots", params={"limit": "many"}).status_code == 400
        assert rest.get(f"/claims/subject/{SUBJECT}/slot/{'x' * 300}").json()["error"] == "slot_not_found"
        assert rest.get(f"/claims/subject/{SUBJECT}/graph").json()["claims_count"] == 0


def test_truth_without_sources_and_a_claim_from_a_memory(gateway):
    with gateway.rest() as rest:
        made = memory(rest, "Note for later", no_supersede=True)
        linked = claim(rest, "project", {"name": "atlas", "stage": 2}, source_memory_id=made["id"],
                       source_observation_id="obs_1", valid_from="2025-01-01T00:00:00Z", importance=0.9)
        assert linked["object_value"] == '{"name": "atlas", "stage": 2}' and linked["observation_id"] == "obs_1"
        [row] = rest.get(f"/claims/subject/{SUBJECT}/truth", params={"include_source": "false"}).json()["slots"]
        assert "source" not in row and row["object_value"] == linked["object_value"]
        assert rest.get(f"/memories/{made['id']}/claims").json()["data"][0]["claim_id"] == linked["claim_id"]
        # Its own memory is never superseded by it; a later claim in the slot supersedes both.
        later = claim(rest, "project", "zephyr")
        assert later["superseded_memory_ids"] == [made["id"]] and status(rest, made["id"])[0] == "superseded"


def test_the_mnexium_sdk_claims_clients(gateway):
    with Mnexium(api_key=KEY, base_url=gateway.api, max_retries=0,
                 openai=ProviderConfig(api_key=PROVIDER_KEY)) as sdk:
        created = sdk.claims.create(ClaimCreateOptions(subject_id="sdk-user", slot="favorite_tea", value="sencha",
                                                       confidence=0.9, source="sdk"))
        assert created["object_value"] == "sencha" and created["slot"] == "favorite_tea"
        assert sdk.claims.get(created["claim_id"])["claim"]["confidence"] == 0.9
        assert sdk.claims.get_by_slot("sdk-user", "favorite_tea")["object_value"] == "sencha"
        assert sdk.claims.get_by_slot("sdk-user", "nothing_here") is None
        user = sdk.subject("sdk-user")
        matcha = user.claims.set("favorite_tea", "matcha", confidence=0.8, source="chat")
        assert user.claims.get("favorite_tea")["active_claim_id"] == matcha["claim_id"]
        assert user.claims.get("missing") is None
        user.claims.set("tea_count", {"cups": 3})
        assert {row["slot"]: row["object_value"] for row in user.claims.truth()["slots"]} == {
            "favorite_tea": "matcha", "tea_count": '{"cups": 3}'}
        assert sdk.claims.list_slots("sdk-user")["active_count"] == 2 == user.claims.list()["active_count"]
        assert [c["object_value"] for c in user.claims.history()] == ['{"cups": 3}', "matcha", "sencha"]
        assert user.claims.retract(matcha["claim_id"])["previous_claim_id"] == created["claim_id"]
        assert user.claims.get("favorite_tea")["object_value"] == "sencha"
        assert sdk.claims.retract(created["claim_id"]) is None
        assert sdk.claims.get_by_slot("sdk-user", "favorite_tea") is None


def _store(config) -> Any:
    opener = open_redis_store if config.storage.backend == "redis" else open_sqlite_store
    return opener(config.storage, None)


def test_erasing_a_subject_removes_its_claims_and_the_old_collections_rows(gateway_on):
    """Claims stored before the truth graph (rows of the old memory_claims collection) are still
    read for their memory, and erased with their subject."""
    with gateway_on.rest() as rest:
        old = memory(rest, "Note number one", no_supersede=True)
        first = claim(rest, "favorite_color", "red")
        claim(rest, "favorite_color", "blue")
        claim(rest, "age", "30", subject="someone-else")

    async def write_legacy_row() -> None:
        store = _store(gateway_on.config)
        await store.put(LEGACY_CLAIMS, "project-a", "ast_old", {
            "id": "ast_old", "memory_id": old["id"], "subject_id": SUBJECT, "predicate": "note", "type": "string",
            "value": "one", "claim_type": "fact", "confidence": 0.8, "status": "active",
            "first_seen_at": "2024-01-01T00:00:00.000Z", "last_seen_at": "2024-01-01T00:00:00.000Z"})
        await store.close()

    async def stored(subject: str) -> dict[str, int]:
        """How many documents of each claims collection the subject has in the store."""
        store = _store(gateway_on.config)
        try:
            return {collection.name: await store.count(collection, "project-a", {"subject_id": subject})
                    for collection in (CLAIMS, ASSERTIONS, EDGES, TRUTHS, SNAPSHOTS, LEGACY_CLAIMS)}
        finally:
            await store.close()

    asyncio.run(write_legacy_row())
    with gateway_on.rest() as rest:
        assert truth(rest) == {"favorite_color": "blue"}  # read once: the snapshot is kept
        assert truth(rest, "nobody") == {}  # reading a subject with no claims stores nothing
        assert asyncio.run(stored(SUBJECT)) == {"claims": 2, "claim_assertions": 2, "claim_edges": 1,
                                                "claim_truths": 1, "claim_truth_snapshots": 1, "memory_claims": 1}
        [row] = rest.get(f"/memories/{old['id']}/claims").json()["data"]
        assert (row["id"], row["value"], row["status"], row["claim_id"]) == ("ast_old", "one", "active", None)
        erased = rest.delete(f"/subjects/{SUBJECT}")
        assert erased.status_code == 200, erased.text
        assert rest.get(f"/claims/{first['claim_id']}").status_code == 404
        assert rest.get(f"/claims/subject/{SUBJECT}/graph").json() == {
            "subject_id": SUBJECT, "claims_count": 0, "edges_count": 0, "edges_by_type": {}, "claims": [], "edges": []}
        assert truth(rest, "someone-else") == {"age": "30"}
    assert set(asyncio.run(stored(SUBJECT)).values()) == {0}
    assert set(asyncio.run(stored("nobody")).values()) == {0}


def test_a_truth_written_through_one_gateway_is_read_through_another(start_gateway, storage_redis):
    """The snapshot a gateway keeps of a subject's truths is in Redis with the rows: a change
    written through another gateway makes every gateway's next read rebuild it."""
    writer, reader = start_gateway(storage_redis), start_gateway(storage_redis)
    with writer.rest() as write, reader.rest() as read:
        claim(write, "favorite_color", "red")
        assert truth(read) == {"favorite_color": "red"}
        blue = claim(write, "favorite_color", "blue")
        assert truth(read) == {"favorite_color": "blue"}
        write.post(f"/claims/{blue['claim_id']}/retract")
        assert truth(read) == {"favorite_color": "red"}


def test_a_snapshot_built_from_rows_read_before_a_change_is_never_served(tmp_path):
    """A read rebuilds the snapshot from the rows; a change landing between its reading the
    rows and its storing them must not leave the older rows in use."""
    from gateway.memory.truth_graph import NewClaim, TruthGraph

    async def scenario() -> list[str]:
        store = RacingStore(str(tmp_path / "race.db"))
        graph = TruthGraph(store)
        await graph.assert_claim("p", NewClaim(SUBJECT, "favorite_color", "red"))
        store.race = lambda: graph.assert_claim("p", NewClaim(SUBJECT, "favorite_color", "blue"))
        seen = []
        for _ in range(2):
            _, slots = await graph.truth_json("p", SUBJECT)
            seen.append(json.loads(slots)[0]["object_value"])
        await store.close()
        return seen

    # The first read built its snapshot from the red row, and blue came in before it was
    # stored: the count of changes moved meanwhile, so the read deleted what it stored, and the
    # next read rebuilds it.
    assert asyncio.run(scenario()) == ["red", "blue"]


def test_claims_that_move_memories_publish_memory_events(tmp_path):
    from gateway.config import parse_config
    from gateway.memory.changes import NewMemory
    from gateway.memory.truth_graph import NewClaim
    from gateway.services import Services

    async def scenario() -> tuple[str, str, list[tuple[str, dict[str, Any]]]]:
        services = Services.build(parse_config({
            "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "g.db")}},
            "memory": edge_memory(tmp_path / "index"), "projects": [{"id": "p", "keys": [{"key": "mnx_k"}]}]}))
        memories = services.memories
        paris, _ = await memories.create("p", NewMemory("ann", "User lives in Paris"))
        seen = []
        with memories.events.subscribe("p", "ann") as subscription:
            asserted, superseded = await memories.add_claim("p", NewClaim("ann", "lives_in", "berlin"))
            assert superseded == [paris["id"]]
            await memories.retract_claim("p", asserted.claim["claim_id"])
            while (event := subscription.take_nowait()) is not None:
                seen.append((event.type, event.data))
        await services.aclose()
        return paris["id"], asserted.claim["claim_id"], seen

    paris, berlin, events = asyncio.run(scenario())
    assert [(kind, {k: v for k, v in data.items() if k != "timestamp"}) for kind, data in events] == [
        ("memory.superseded", {"id": paris, "superseded_by": None, "superseded_by_claim_id": berlin}),
        ("memory.updated", {"id": paris, "status": "active"})]


def source_of(rest: httpx.Client, slot: str) -> str | None:
    """The memory behind the slot's truth (None: an API call's)."""
    return rest.get(f"/claims/subject/{SUBJECT}/slot/{slot}").json()["source"]["memory_id"]


def test_a_claim_another_memory_or_an_api_call_still_states_stands(gateway_on):
    """A memory leaving (superseded, deleted) takes its claim down only if nothing else states it."""
    with gateway_on.rest() as rest:
        first = memory(rest, "My favorite fruit is mango")
        claim_id = rest.get(f"/claims/subject/{SUBJECT}/slot/favorite_fruit").json()["active_claim_id"]
        # A memory that replaces it saying the same: the claim stays the truth, on the new memory.
        second = memory(rest, "Favorite fruit is mango", supersedes=first["id"])
        assert status(rest, first["id"]) == ("superseded", second["id"])
        assert truth(rest) == {"favorite_fruit": "mango"} and source_of(rest, "favorite_fruit") == second["id"]
        stored = rest.get(f"/claims/{claim_id}").json()
        assert (stored["claim"]["status"], stored["claim"]["source_memory_id"]) == ("active", second["id"])
        # Stated through the API too, then its last memory deleted: the API's statement stands.
        assert claim(rest, "favorite_fruit", "mango")["duplicate_of"] == claim_id
        assert rest.delete(f"/memories/{second['id']}").json()["deleted"] is True
        assert truth(rest) == {"favorite_fruit": "mango"} and source_of(rest, "favorite_fruit") is None
        assert rest.get(f"/claims/{claim_id}").json()["claim"]["status"] == "active"


def test_concurrent_writes_to_one_slot_leave_one_truth(start_gateway, storage_redis):
    """Each write reads whole documents and stores them again; on Redis every step awaits, so
    writes to one subject at once would interleave without the subject's lock: two truths in a
    slot, or a retraction lost."""
    gateway = start_gateway(storage_redis)

    async def burst() -> None:
        async with httpx.AsyncClient(base_url=gateway.api, headers={"x-mnexium-key": KEY}, timeout=30) as client:
            async def post(value: str) -> httpx.Response:
                return await client.post("/claims", json={"subject_id": SUBJECT, "predicate": "favorite_color",
                                                          "object_value": value})
            made = await asyncio.gather(*(post(f"color {n}") for n in range(8)))
            assert all(response.status_code == 201 for response in made)
            truth_id = (await client.get(f"/claims/subject/{SUBJECT}/slot/favorite_color")).json()["active_claim_id"]
            # Retracting the truth while new values arrive: each ends as one truth, never two.
            await asyncio.gather(client.post(f"/claims/{truth_id}/retract"), *(post(f"late {n}") for n in range(4)))

    asyncio.run(burst())
    with gateway.rest() as rest:
        claims = rest.get(f"/claims/subject/{SUBJECT}/history", params={"slot": "favorite_color"}).json()["data"]
        active = [c["claim_id"] for c in claims if c["status"] == "active"]
        assert len(claims) == 12 and len(active) == 1
        assert rest.get(f"/claims/subject/{SUBJECT}/slot/favorite_color").json()["active_claim_id"] == active[0]
        assert len(rest.get(f"/claims/subject/{SUBJECT}/truth").json()["slots"]) == 1


def test_rewriting_a_memory_keeps_the_chain_and_retires_what_it_contradicts(gateway):
    with gateway.rest() as rest:
        paris = claim(rest, "favorite_city", "paris")
        lisbon = memory(rest, "My favorite city is Lisbon")
        lisbon_claim = rest.get(f"/claims/subject/{SUBJECT}/slot/favorite_city").json()["active_claim_id"]
        # The same claim in other words: kept as it is.
        rest.patch(f"/memories/{lisbon['id']}", json={"text": "My favorite city is Lisbon!"})
        assert rest.get(f"/claims/subject/{SUBJECT}/slot/favorite_city").json()["active_claim_id"] == lisbon_claim
        # A new value: the old claim is retracted and the new one follows it in the chain...
        rest.patch(f"/memories/{lisbon['id']}", json={"text": "My favorite city is Porto"})
        assert truth(rest) == {"favorite_city": "porto"}
        porto_claim = rest.get(f"/claims/subject/{SUBJECT}/slot/favorite_city").json()["active_claim_id"]
        assert rest.get(f"/claims/{lisbon_claim}").json()["claim"]["retract_reason"] == "memory_edited"
        # ...so retracting it makes true again what the old one had superseded.
        undone = rest.post(f"/claims/{porto_claim}/retract").json()
        assert undone["previous_claim_id"] == paris["claim_id"] and truth(rest) == {"favorite_city": "paris"}

        # Another memory rewritten into the slot takes it over, and the memory whose truth it
        # displaced (it states no other) is superseded: recall would otherwise inject
        # "My favorite city is Rome" beside the truth madrid.
        rome = memory(rest, "My favorite city is Rome")
        note = memory(rest, "Note to self: buy milk")
        rest.patch(f"/memories/{note['id']}", json={"text": "My favorite city is Madrid"})
        assert truth(rest) == {"favorite_city": "madrid"}
        assert status(rest, rome["id"]) == ("superseded", note["id"])


def test_a_memory_stating_another_truth_stays_in_use(gateway):
    """Superseding or retracting one of a memory's claims leaves its other slots alone."""
    with gateway.rest() as rest:
        paris = memory(rest, "User lives in Paris")
        claim(rest, "favorite_color", "blue", source_memory_id=paris["id"])
        berlin = claim(rest, "lives_in", "berlin")
        assert berlin["superseded_memory_ids"] == [] and status(rest, paris["id"]) == ("active", None)
        assert truth(rest) == {"lives_in": "berlin", "favorite_color": "blue"}
        color = rest.get(f"/claims/subject/{SUBJECT}/slot/favorite_color").json()["active_claim_id"]
        undone = rest.post(f"/claims/{color}/retract").json()
        assert undone["superseded_memory_ids"] == [paris["id"]]  # its last truth gone: out of use
        assert status(rest, paris["id"]) == ("superseded", None) and truth(rest) == {"lives_in": "berlin"}

        rome = memory(rest, "User lives in Rome")
        rome_claim = rest.get(f"/claims/subject/{SUBJECT}/slot/lives_in").json()["active_claim_id"]
        claim(rest, "favorite_color", "red", source_memory_id=rome["id"])
        undone = rest.post(f"/claims/{rome_claim}/retract").json()
        assert undone["superseded_memory_ids"] == [] and status(rest, rome["id"]) == ("active", None)
        assert truth(rest) == {"favorite_color": "red", "lives_in": "berlin"}


def test_deleting_a_memory_retracts_its_superseded_claims_too(gateway):
    with gateway.rest() as rest:
        blueberry = memory(rest, "Favorite fruit is blueberry")
        old_claim = rest.get(f"/claims/subject/{SUBJECT}/slot/favorite_fruit").json()["active_claim_id"]
        memory(rest, "my new favorite fruit is strawberry")
        assert rest.delete(f"/memories/{blueberry['id']}").json()["deleted"] is True
        stored = rest.get(f"/claims/{old_claim}").json()["claim"]
        assert (stored["status"], stored["retract_reason"]) == ("retracted", "memory_deleted")
        new_claim = rest.get(f"/claims/subject/{SUBJECT}/slot/favorite_fruit").json()["active_claim_id"]
        # Retracting the truth brings back nothing a deleted memory said.
        assert rest.post(f"/claims/{new_claim}/retract").json()["restored_previous"] is False
        assert truth(rest) == {}


def test_recall_fills_its_truths_past_a_memory_behind_several(start_gateway, storage_sqlite, tmp_path):
    """A recalled memory may be the source of more truths than its text states: the truths
    left out for it are made up from older ones."""
    gateway = start_gateway(storage_sqlite, memory={**edge_memory(tmp_path / "a"), "recall": {"truths": 1}})
    with gateway.rest() as rest:
        claim(rest, "favorite_color", "green")
        lisbon = memory(rest, "User lives in Lisbon")
        claim(rest, "lives_near", "the sea", source_memory_id=lisbon["id"])
    memories, truths = recall_turn(gateway, "What is the weather in Lisbon today?", recall=True)
    assert memories == ["User lives in Lisbon"] and truths == [("favorite_color", "green")]


def test_erasure_between_a_snapshot_read_and_its_store_leaves_no_erased_truth(tmp_path):
    """The change tally goes with the erased subject: counting from zero again, a later change
    could bring it back to the count a racing read took, so the read also compares the time
    of the latest change, and drops what it stored (the erased rows)."""
    from gateway.memory.truth_graph import NewClaim, TruthGraph

    async def scenario() -> list[str]:
        store = RacingStore(str(tmp_path / "race.db"))
        graph = TruthGraph(store)
        await graph.assert_claim("p", NewClaim(SUBJECT, "favorite_color", "red"))

        async def erase_then_write() -> None:
            await graph.erase_subject("p", SUBJECT)
            await graph.assert_claim("p", NewClaim(SUBJECT, "favorite_color", "blue"))

        store.race = erase_then_write
        seen = [json.loads((await graph.truth_json("p", SUBJECT))[1])[0]["object_value"] for _ in range(2)]
        await store.close()
        return seen

    assert asyncio.run(scenario()) == ["red", "blue"]


def test_a_value_given_as_value_when_object_value_is_empty(gateway):
    with gateway.rest() as rest:
        made = rest.post("/claims", json={"subject_id": SUBJECT, "predicate": "age", "object_value": "",
                                          "value": "41"})
        assert made.status_code == 201 and made.json()["object_value"] == "41"
        bad = rest.post("/claims", json={"subject_id": SUBJECT, "predicate": "age", "object_value": "x",
                                         "claim_id": " padded"})
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_claim_id"
        assert bad.json()["message"].startswith("claim_id must")


def test_a_truth_row_a_crash_left_behind_goes_at_the_slots_next_change(tmp_path):
    """A write interrupted between storing its claims and writing the truth row leaves the old
    truth's row: the slot's next change deletes every row but the new truth's, so the stale
    one cannot surface once the slot is emptied."""
    from gateway.memory.truth_graph import NewClaim, TruthGraph
    from gateway.store.sqlite import SqliteDocumentStore

    class CrashingStore(SqliteDocumentStore):
        crash_next_row = False

        async def put(self, collection, project_id, doc_id, doc, *, ttl_seconds=None):
            if collection is TRUTHS and self.crash_next_row:
                self.crash_next_row = False
                raise ConnectionError("the gateway died here")
            await super().put(collection, project_id, doc_id, doc, ttl_seconds=ttl_seconds)

    async def scenario() -> tuple[list[str], list[str]]:
        store = CrashingStore(str(tmp_path / "crash.db"))
        graph = TruthGraph(store)
        await graph.assert_claim("p", NewClaim(SUBJECT, "favorite_color", "red"))
        store.crash_next_row = True
        with pytest.raises(ConnectionError):
            await graph.assert_claim("p", NewClaim(SUBJECT, "favorite_color", "blue"))
        green = (await graph.assert_claim("p", NewClaim(SUBJECT, "favorite_color", "green"))).claim
        rows = [row["object_value"] for row in await store.find(TRUTHS, "p", {"subject_id": SUBJECT})]
        await graph.retract("p", green["claim_id"])  # blue is true again
        blue = await graph.slot("p", SUBJECT, "favorite_color")
        assert blue is not None and blue["object_value"] == "blue"
        # The crash came before blue's edge to red was stored: the slot empties, and red's old
        # row (its claim superseded) must not show through as its truth.
        await graph.retract("p", blue["active_claim_id"])
        left = [row["object_value"] for row in await store.find(TRUTHS, "p", {"subject_id": SUBJECT})]
        await store.close()
        return rows, left

    rows, left = asyncio.run(scenario())
    assert rows == ["green"] and left == []


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_the_truths_recall_keeps_in_process_follow_every_change_made_anywhere(backend, request, tmp_path):
    """``TruthGraph.latest`` (recall's read on every turn) keeps a subject's rows in process:
    a change through another gateway on the same store (another TruthGraph), an erasure, and
    a longer read than the one kept all show at the next read."""
    from gateway.memory.truth_graph import NewClaim, TruthGraph
    from tests.conftest import open_test_store

    def values(rows: list[dict[str, Any]]) -> list[str]:
        return [row["object_value"] for row in rows]

    async def scenario() -> None:
        async with open_test_store(backend, request, tmp_path) as store:
            reader, writer = TruthGraph(store), TruthGraph(store)
            assert await reader.latest("p", SUBJECT, limit=5) == []
            await writer.assert_claim("p", NewClaim(SUBJECT, "favorite_color", "red"))
            assert values(await reader.latest("p", SUBJECT, limit=5)) == ["red"]
            await writer.assert_claim("p", NewClaim(SUBJECT, "favorite_color", "blue"))
            await writer.assert_claim("p", NewClaim(SUBJECT, "home_city", "porto"))
            assert values(await reader.latest("p", SUBJECT, limit=5)) == ["porto", "blue"]
            assert values(await reader.latest("p", SUBJECT, limit=1)) == ["porto"]  # from what it kept
            assert values(await reader.latest("other", SUBJECT, limit=5)) == []  # another project's subject
            await writer.erase_subject("p", SUBJECT)
            assert await reader.latest("p", SUBJECT, limit=5) == []
            await writer.assert_claim("p", NewClaim(SUBJECT, "favorite_color", "green"))
            assert values(await reader.latest("p", SUBJECT, limit=5)) == ["green"]
            for n in range(3):
                await writer.assert_claim("p", NewClaim(SUBJECT, f"fact_{n}", f"value {n}"))
            assert values(await reader.latest("p", SUBJECT, limit=2)) == ["value 2", "value 1"]
            # A longer read than the one kept reads the rows again.
            assert values(await reader.latest("p", SUBJECT, limit=10)) == ["value 2", "value 1", "value 0", "green"]
            assert await reader.latest("p", SUBJECT, limit=10) == await reader.truth("p", SUBJECT, limit=10)

    asyncio.run(scenario())
