"""Records learned from chat turns (``mnx.records.learn``, ``sync``; contract §10.8), through real traffic.

The LLM extractor's model is the fake provider's "extractor", answering the records JSON a test
queues (``provider.extraction_answers``); the offline default is the heuristic extractor.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from mnexium import Mnexium, ProcessOptions, ProviderConfig

from gateway.config import parse_config
from gateway.jobs.queue import Job
from gateway.memory.learning import LEARN_JOB, learn_payload
from gateway.options import RecordsOption
from gateway.records.learning import CandidateType, ExtractedRecord, RecordsExchange, RecordsTurn
from gateway.records.records import NewRecord, Provenance
from gateway.records.schema import parse_schema
from gateway.services import Services
from plugins.extractors import certain_records
from tests.conftest import KEY, PROVIDER_KEY, edge_memory, wait_until

ORDER = {"type_name": "order", "description": "an order the user placed",
         "fields": {"item": {"type": "string", "required": True}, "amount": {"type": "number", "required": True},
                    "status": {"type": "enum", "values": ["open", "shipped"]}}}
CONTACT = {"type_name": "contact", "fields": {"name": {"type": "string", "required": True}, "email": "string"}}
PURCHASE = {"type_name": "purchase", "fields": {"item": {"type": "string", "required": True}, "buyer": "ref:contact"}}
LLM = {"extractor": {"provider": "litellm", "model": "extractor"}}


def define(gateway, *schemas: dict[str, Any]) -> None:
    with gateway.rest() as rest:
        for schema in schemas:
            assert rest.post("/records/schemas", json=schema).status_code in (200, 201)


def turn(gateway, text: str, subject: str, *, stream: bool = False, chat_id: str = "records-chat",
         key: str = KEY, **records: Any) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": text}],
            "mnx": {"subject_id": subject, "chat_id": chat_id, "history": False, "learn": False,
                    "records": {"learn": "auto", **records}}}
    with httpx.Client(timeout=30) as client:
        response = client.post(gateway.url + "/v1/chat/completions", json=body,
                               headers={"x-mnexium-key": key, "x-openai-key": PROVIDER_KEY})
        response.read()
    return response


def records_of(gateway, subject: str | None = None, type_name: str = "order") -> list[dict[str, Any]]:
    with gateway.rest() as rest:
        response = rest.get(f"/records/{type_name}", params={"subject_id": subject} if subject else {})
        assert response.status_code == 200, response.text
        return response.json()["records"]


def settle(gateway) -> None:
    """Wait until no learn job is left (so "nothing was written" is not just "not yet")."""
    def idle() -> bool:
        with gateway.rest() as rest:
            return rest.get("/jobs").json()["data"] == []
    assert wait_until(idle)


def extraction_calls(gateway) -> list[dict[str, Any]]:
    return [r for r in gateway.forwarded() if r["body"].get("model", "").startswith("extractor")]


def proposals(*items: dict[str, Any]) -> str:
    return json.dumps({"records": [{"action": "create", "type_name": "order", **item} for item in items]})


@pytest.fixture(autouse=True)
def _no_answers_left_over(provider) -> None:
    provider.extraction_answers.clear()  # the session's fake provider: what another test queued and left


@pytest.fixture
def llm_gateway(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite, learning=LLM)
    define(gateway, ORDER)
    return gateway


# --- learned in the job, through the LLM extractor ------------------------------------------------

def test_a_turn_with_records_learn_writes_the_record_the_model_extracts(start_gateway, storage):
    gateway = start_gateway(storage, learning=LLM)
    define(gateway, ORDER, CONTACT)
    gateway.provider.extraction_answers.append(proposals({"data": {"item": "standing desk", "amount": 420}}))
    assert turn(gateway, "I just ordered a standing desk for 420 euros", "ana").status_code == 200
    assert wait_until(lambda: records_of(gateway, "ana"))
    settle(gateway)
    [record] = records_of(gateway, "ana")
    assert record["data"] == {"item": "standing desk", "amount": 420}
    assert (record["owner_id"], record["visibility"], record["type_name"]) == ("ana", "private", "order")
    assert record["provenance"]["source"] == "chat" and record["provenance"]["chat_id"] == "records-chat"
    assert record["provenance"]["job_id"]

    [call] = extraction_calls(gateway)
    assert call["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"  # the caller's key, as for memories
    response_format = call["body"]["response_format"]
    assert response_format["type"] == "json_schema" and response_format["json_schema"]["name"] == "records"
    variants = response_format["json_schema"]["schema"]["properties"]["records"]["items"]["anyOf"]
    order = next(v for v in variants if v["properties"]["type_name"]["enum"] == ["order"])
    assert order["properties"]["data"]["required"] == ["item", "amount"]
    assert order["properties"]["data"]["properties"]["status"]["enum"] == ["open", "shipped"]
    sent = json.loads(call["body"]["messages"][1]["content"])
    assert sent["user"] == ["I just ordered a standing desk for 420 euros"]
    assert sorted(t["type_name"] for t in sent["record_types"]) == ["contact", "order"]
    # Memory learning was off: only records were learned.
    with gateway.rest() as rest:
        assert rest.get("/memories", params={"subject_id": "ana"}).json()["data"] == []


def test_tables_limit_the_candidate_types_and_a_streamed_turn_learns_in_its_job(llm_gateway):
    define(llm_gateway, CONTACT)
    llm_gateway.provider.extraction_answers.append(proposals({"data": {"item": "lamp", "amount": 30}}))
    # sync cannot hold back a stream that has begun: the job learns it, as with learn auto.
    response = turn(llm_gateway, "order a lamp for 30", "ben", stream=True, tables=["order"], sync=True)
    assert response.status_code == 200 and "data: [DONE]" in response.text
    assert wait_until(lambda: records_of(llm_gateway, "ben"))
    settle(llm_gateway)
    assert [r["data"] for r in records_of(llm_gateway, "ben")] == [{"item": "lamp", "amount": 30}]
    sent = json.loads(extraction_calls(llm_gateway)[0]["body"]["messages"][1]["content"])
    assert [t["type_name"] for t in sent["record_types"]] == ["order"]


def test_an_invalid_extracted_record_is_skipped_and_the_valid_ones_are_written(llm_gateway):
    llm_gateway.provider.extraction_answers.append(proposals(
        {"data": {"item": "chair", "amount": "lots"}},        # wrong type
        {"data": {"item": "sofa", "amount": 900}},
        {"data": {"amount": 5}},                              # a required field missing
        {"data": {"item": "rug", "amount": 80, "colour": "red"}},  # not a field of the type
    ))
    turn(llm_gateway, "I bought a chair, a sofa and a rug", "cleo")
    assert wait_until(lambda: records_of(llm_gateway, "cleo"))
    settle(llm_gateway)  # the job finished (it did not fail and wait for a retry)
    assert [r["data"] for r in records_of(llm_gateway, "cleo")] == [{"item": "sofa", "amount": 900}]


def test_a_malformed_answer_writes_nothing_and_is_not_retried(llm_gateway):
    llm_gateway.provider.extraction_answers += ["not json", json.dumps({"records": [{"action": "delete"}]})]
    turn(llm_gateway, "first", "dan")
    turn(llm_gateway, "second", "dan")
    settle(llm_gateway)
    assert records_of(llm_gateway, "dan") == []
    assert len(extraction_calls(llm_gateway)) == 2


def test_an_update_changes_the_subjects_existing_record_the_words_match(llm_gateway):
    with llm_gateway.rest() as rest:
        mine = rest.post("/records/order", json={"owner_id": "eve", "data": {"item": "green kettle", "amount": 25,
                                                                              "status": "open"}}).json()
        rest.post("/records/order", json={"owner_id": "someone-else", "data": {"item": "green kettle", "amount": 9}})
    llm_gateway.provider.extraction_answers.append(json.dumps({"records": [
        {"action": "update", "type_name": "order", "record_id": mine["record_id"], "data": {"status": "shipped"}}]}))
    turn(llm_gateway, "my green kettle order has shipped", "eve")
    assert wait_until(lambda: records_of(llm_gateway, "eve")[0]["data"].get("status") == "shipped")
    settle(llm_gateway)
    assert [r["data"] for r in records_of(llm_gateway, "eve")] == [{"item": "green kettle", "amount": 25,
                                                                     "status": "shipped"}]
    # The model was shown the subject's own matching record, and no one else's.
    sent = json.loads(extraction_calls(llm_gateway)[0]["body"]["messages"][1]["content"])
    [order] = sent["record_types"]
    assert [r["record_id"] for r in order["existing_records"]] == [mine["record_id"]]
    with llm_gateway.rest() as rest:
        trail = rest.get(f"/records/order/{mine['record_id']}/history").json()["data"]
    assert [(e["action"], e["by"]["source"]) for e in trail] == [("created", "api"), ("updated", "chat")]


# --- sync: written before the answer --------------------------------------------------------------

def test_sync_writes_before_answering_and_says_what_it_wrote(llm_gateway):
    llm_gateway.provider.extraction_answers.append(proposals({"data": {"item": "blue bike", "amount": 300}}))
    response = turn(llm_gateway, "I ordered a blue bike for 300", "finn", sync=True)
    assert response.status_code == 200, response.text
    body = response.json()
    [written] = body["mnx"]["records"]
    assert (written["type_name"], written["action"]) == ("order", "created")
    assert body["records"] == {"created": [{"record_id": written["record_id"], "table": "order",
                                            "action": "created"}], "updated": [], "actions": ["created"]}
    # There before the answer, not eventually.
    with llm_gateway.rest() as rest:
        stored = rest.get(f"/records/order/{written['record_id']}")
    assert stored.status_code == 200 and stored.json()["data"] == {"item": "blue bike", "amount": 300}
    assert stored.json()["provenance"] == {"source": "chat", "chat_id": "records-chat"}

    # The next sync turn updates it: the model is shown it, and the answer says "updated".
    llm_gateway.provider.extraction_answers.append(json.dumps({"records": [
        {"action": "update", "type_name": "order", "record_id": written["record_id"], "data": {"status": "shipped"}}]}))
    body = turn(llm_gateway, "the blue bike has shipped", "finn", sync=True).json()
    assert body["mnx"]["records"] == [{"record_id": written["record_id"], "type_name": "order", "action": "updated"}]
    assert body["records"]["updated"] == [{"record_id": written["record_id"], "table": "order", "action": "updated"}]
    assert body["records"]["created"] == [] and body["records"]["actions"] == ["updated"]

    # The turns' jobs (history, memories: off here) learn no record a second time.
    settle(llm_gateway)
    time.sleep(0.3)
    assert [r["data"] for r in records_of(llm_gateway, "finn")] == [
        {"item": "blue bike", "amount": 300, "status": "shipped"}]
    assert len(extraction_calls(llm_gateway)) == 2


def test_a_sync_turn_whose_record_does_not_validate_is_a_422_and_writes_nothing(llm_gateway):
    llm_gateway.provider.extraction_answers.append(proposals({"data": {"item": "tent", "amount": 150}},
                                                             {"data": {"item": "stove", "amount": "cheap"}}))
    response = turn(llm_gateway, "I ordered a tent and a stove", "gus", sync=True, chat_id="failed-sync")
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "records_sync_write_failed" and "data.amount" in error["message"]
    assert response.headers["x-mnx-subject-id"] == "gus"
    # Not even the valid one, and no trace of the turn (as after a provider error).
    settle(llm_gateway)
    assert records_of(llm_gateway, "gus") == []
    with llm_gateway.rest() as rest:
        history = rest.get("/chat/history/read", params={"chat_id": "failed-sync", "subject_id": "gus"}).json()
    assert history["messages"] == []

    # A malformed answer fails a sync turn the same way.
    llm_gateway.provider.extraction_answers.append("{not json")
    response = turn(llm_gateway, "another", "gus", sync=True)
    assert response.status_code == 422 and response.json()["error"]["code"] == "records_sync_write_failed"


def test_a_sync_turn_whose_record_names_no_record_is_a_422_and_writes_nothing(llm_gateway):
    define(llm_gateway, CONTACT, PURCHASE)
    with llm_gateway.rest() as rest:
        known = rest.post("/records/contact", json={"owner_id": "ines", "data": {"name": "Rui"}}).json()
    llm_gateway.provider.extraction_answers.append(json.dumps({"records": [
        {"action": "create", "type_name": "contact", "data": {"name": "Ana Lima"}},
        {"action": "create", "type_name": "purchase", "data": {"item": "desk", "buyer": "rec_made_up"}}]}))
    response = turn(llm_gateway, "Ana Lima bought a desk", "ines", sync=True)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "records_sync_write_failed" and "data.buyer" in error["message"]
    # The contact validated on its own, but a sync turn writes all of its records or none.
    settle(llm_gateway)
    assert [r["data"] for r in records_of(llm_gateway, "ines", "contact")] == [{"name": "Rui"}]
    assert records_of(llm_gateway, "ines", "purchase") == []

    # A reference to a record that exists before the turn is written.
    llm_gateway.provider.extraction_answers.append(json.dumps({"records": [
        {"action": "create", "type_name": "purchase", "data": {"item": "desk", "buyer": known["record_id"]}}]}))
    response = turn(llm_gateway, "Rui bought a desk", "ines", sync=True)
    assert response.status_code == 200, response.text
    assert [r["data"] for r in records_of(llm_gateway, "ines", "purchase")] == [
        {"item": "desk", "buyer": known["record_id"]}]

    # An update naming no record is refused the same way, before the create beside it is written.
    [purchase] = records_of(llm_gateway, "ines", "purchase")
    llm_gateway.provider.extraction_answers.append(json.dumps({"records": [
        {"action": "create", "type_name": "contact", "data": {"name": "Bo"}},
        {"action": "update", "type_name": "purchase", "record_id": purchase["record_id"],
         "data": {"buyer": "rec_made_up"}}]}))
    response = turn(llm_gateway, "the desk was bought by Bo", "ines", sync=True)
    assert response.status_code == 422 and "data.buyer" in response.json()["error"]["message"]
    assert [r["data"]["name"] for r in records_of(llm_gateway, "ines", "contact")] == ["Rui"]
    assert records_of(llm_gateway, "ines", "purchase") == [purchase]


def test_the_sdk_reads_what_a_forced_sync_turn_wrote(llm_gateway):
    llm_gateway.provider.extraction_answers.append(proposals({"data": {"item": "piano", "amount": 5000}}))
    client = Mnexium(api_key=KEY, base_url=llm_gateway.api, max_retries=0, openai=ProviderConfig(api_key=PROVIDER_KEY))
    try:
        response = client.process(ProcessOptions(content="put my piano order on record", subject_id="hana",
                                                 learn=False, records={"learn": "force", "sync": True}))
        [written] = response.records
        assert (written["type_name"], written["action"]) == ("order", "created")
        assert response.raw["records"]["created"][0]["record_id"] == written["record_id"]
        assert client.records.get("order", written["record_id"])["data"] == {"item": "piano", "amount": 5000}
    finally:
        client.close()
    # force asks the model harder.
    assert "look hard" in extraction_calls(llm_gateway)[0]["body"]["messages"][0]["content"]


# --- idempotent jobs ------------------------------------------------------------------------------

def job_services(provider, tmp_path, storage: dict[str, Any] | None = None) -> Services:
    """A gateway's services without its HTTP surface, so that a test can run a learn job itself."""
    return Services.build(parse_config({
        "storage": storage or {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "g.db")}},
        "memory": edge_memory(tmp_path / "index"), "learning": {**LLM, "poll_seconds": 60},
        "providers": {"openai": {"api_base": provider.url + "/v1", "api_key": "sk-configured"}},
        "projects": [{"id": "p", "keys": [{"key": "mnx_live_p"}]}]}))


def test_a_learn_job_run_twice_writes_its_records_once(provider, tmp_path):
    services = job_services(provider, tmp_path)

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        await services.start()
        try:
            records = services.records
            await records.define_schema("p", ORDER)
            kettle = await records.insert("p", "order", NewRecord({"item": "red kettle", "amount": 20}, owner_id="ivo"),
                                          provenance=Provenance("api"))
            payload = learn_payload(subject_id="ivo", chat_id="c", learn=False, memory_policy=True,
                                    new_messages=[{"role": "user", "content": "the red kettle shipped, it cost "
                                                                              "22, and I ordered a red mug for 8"}],
                                    answer={"role": "assistant", "content": "noted"}, model="gpt-4o-mini",
                                    request_type="chat", records=RecordsOption(learn="auto"))
            assert payload is not None and payload["records"] == {"learn": "auto", "tables": None}
            job = Job("job_twice", "p", LEARN_JOB, payload, 1, "pending", None, time.time(), time.time())
            # Two updates of one record: the second is a change of its own, not a repeat of the first.
            answer = json.dumps({"records": [
                {"action": "create", "type_name": "order", "data": {"item": "red mug", "amount": 8}},
                {"action": "update", "type_name": "order", "record_id": kettle["record_id"],
                 "data": {"status": "shipped"}},
                {"action": "update", "type_name": "order", "record_id": kettle["record_id"], "data": {"amount": 22}}]})
            provider.extraction_answers += [answer, answer]
            await services.learner.handle(job)
            await services.learner.handle(job)  # after a crash, say: the same job again
            page, _ = await records.page("p", "order", owner_id="ivo", limit=10, offset=0)
            trail, _ = await records.history("p", "order", kettle["record_id"])
            return page, trail
        finally:
            await services.aclose()

    page, trail = asyncio.run(scenario())
    assert sorted((r["data"]["item"], r["data"]["amount"], r["data"].get("status")) for r in page) == [
        ("red kettle", 22, "shipped"), ("red mug", 8, None)]
    # Each learned update names its job and its place in the extractor's answer.
    assert [(e["action"], e["by"].get("job_id"), e["changed_fields"]) for e in trail] == [
        ("created", None, ["amount", "item"]), ("updated", "job_twice#1", ["status"]),
        ("updated", "job_twice#2", ["amount"])]
    assert len([r for r in provider.requests if r["body"].get("model") == "extractor"]) == 2


def test_two_runs_of_a_job_at_once_create_its_record_once(provider, tmp_path, storage_redis):
    """A job whose lease ran out runs again while its first run is still writing: the second
    run finds the record the first created, and does not overwrite it."""
    services = job_services(provider, tmp_path, storage_redis)
    turn_ = RecordsTurn("ivo", "c", ["a party for my friends"], "noted", "auto")
    party = {"type_name": "party", "fields": {"theme": {"type": "string", "required": True}, "guests": "ref:contact[]"}}

    async def scenario() -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]], list[dict[str, Any]]]:
        await services.start()
        try:
            records = services.records
            await records.define_schema("p", CONTACT)
            await records.define_schema("p", party)
            friends = await records.insert_many("p", "contact", [NewRecord({"name": f"friend {n}"}, owner_id="ivo")
                                                                 for n in range(20)], provenance=Provenance("api"))
            # Each guest is a reference the write reads: time enough for the other run to check
            # while this one is writing.
            guests = [friend["record_id"] for friend in friends]
            learner = services.learner.records
            assert learner is not None
            # The model answered each run differently: the record at position 0 is created once all the same.
            runs = await asyncio.gather(*[
                learner.write("p", turn_, [ExtractedRecord("create", "party", {"theme": theme, "guests": guests})],
                              run_id="job_lapsed", job_id="job_lapsed")
                for theme in ("pirates", "space")])
            page, _ = await records.page("p", "party", owner_id="ivo", limit=10, offset=0)
            trail, _ = await records.history("p", "party", page[0]["record_id"])
            return runs, page, trail
        finally:
            await services.aclose()

    runs, page, trail = asyncio.run(scenario())
    assert sorted(len(writes) for writes in runs) == [0, 1]
    [created] = [writes for writes in runs if writes][0]
    [record] = page
    assert created["record_id"] == record["record_id"] and record["data"]["theme"] == "pirates"
    assert [e["action"] for e in trail] == ["created"]


# --- erasure and scopes ---------------------------------------------------------------------------

def test_a_subject_erased_while_its_job_waits_for_the_model_gets_no_record(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite, learning={"extractor": {"provider": "litellm",
                                                                    "model": "extractor-sleep-1.5"}})
    define(gateway, ORDER)
    gateway.provider.extraction_answers.append(proposals({"data": {"item": "boat", "amount": 9000}}))
    assert turn(gateway, "I ordered a boat", "jay").status_code == 200
    assert wait_until(lambda: bool(extraction_calls(gateway)))  # the job is waiting for the model
    with gateway.rest() as rest:
        assert rest.delete("/subjects/jay").status_code == 200
    time.sleep(2)  # the model has answered by now
    settle(gateway)
    assert records_of(gateway) == []


def test_a_key_without_records_write_asking_for_records_learn_is_a_403_and_nothing_is_forwarded(
        start_gateway, storage_sqlite):
    projects = [{"id": "project-a", "keys": [
        {"name": "main", "key": KEY, "scopes": ["*"]},
        {"name": "reader", "key": "mnx_live_records_reader", "scopes": ["chat:write", "records:read"]}]}]
    gateway = start_gateway(storage_sqlite, projects=projects, learning=LLM)
    define(gateway, ORDER)
    response = turn(gateway, "I ordered a lamp", "kim", key="mnx_live_records_reader")
    assert response.status_code == 403, response.text
    assert response.json()["error"]["param"] == "mnx.records.learn" and "records:write" in response.text
    # (The fake provider is shared: another test's gateway may still be running a learn job.)
    assert not [request for request in gateway.forwarded() if "I ordered a lamp" in json.dumps(request)]
    assert records_of(gateway) == []


# --- the offline extractor: only what the user spelled out as data -----------------------------------

def test_the_offline_extractor_writes_a_record_spelled_out_as_json_or_fields_and_nothing_from_chat(gateway):
    define(gateway, ORDER, CONTACT)
    turn(gateway, 'Please file this: {"item": "desk lamp", "amount": 35}', "lea")
    turn(gateway, "New order\nItem: bookshelf\nAmount: 120\nStatus: Open", "lea")
    turn(gateway, "I ordered a desk lamp for 35 dollars yesterday, and a bookshelf too.", "lea", learn="force")
    settle(gateway)
    assert [r["data"] for r in records_of(gateway, "lea")] == [
        {"item": "desk lamp", "amount": 35}, {"item": "bookshelf", "amount": 120, "status": "open"}]
    assert records_of(gateway, "lea", "contact") == []
    # Sync works offline too, and the same record again is not a duplicate.
    body = turn(gateway, '{"item": "desk lamp", "amount": 35}', "lea", sync=True).json()
    assert body["mnx"]["records"] == [] and body["records"]["created"] == []


def exchange(*messages: str) -> RecordsExchange:
    return RecordsExchange(messages, "", "force", (CandidateType(parse_schema(ORDER)),
                                                    CandidateType(parse_schema(CONTACT))))


@pytest.mark.parametrize("message, data", [
    ('{"item": "pen", "amount": 2}', {"item": "pen", "amount": 2}),
    ('Order: ```json\n{"Item": "pen", "amount": 2.5, "status": "shipped"}\n```', {"item": "pen", "amount": 2.5,
                                                                                "status": "shipped"}),
    ("item: pen\namount: 2", {"item": "pen", "amount": 2}),
    ("- Item = pen\n- Amount = 1e1", {"item": "pen", "amount": 10}),
    ("name: Ana Lima\nemail: ana@example.com", {"name": "Ana Lima", "email": "ana@example.com"}),
])
def test_the_offline_extractor_reads_objects_and_field_lists(message, data):
    [record] = certain_records(exchange(message))
    assert (record.action, record.data) == ("create", data)


@pytest.mark.parametrize("message", [
    "I ordered a pen for 2 dollars",                     # prose
    "item: pen",                                         # one line is prose too
    '{"item": "pen"}',                                   # a required field missing
    '{"item": "pen", "amount": 2, "colour": "red"}',     # a key that is no field of the type
    '{"item": "pen", "amount": "two"}',                  # a value of the wrong type
    '{"name": "Ana", "item": "pen", "amount": 2}',       # keys of two types
    "item: pen\namount: about two",                      # not a number
    '{"email": "a@b.co"}',                               # contact without its required name
    "[1, 2, 3]", "{not json}",
])
def test_the_offline_extractor_writes_nothing_it_is_not_certain_of(message):
    assert certain_records(exchange(message)) == []


def test_a_name_shared_by_two_types_is_ambiguous():
    both = RecordsExchange(['{"name": "Ana"}'], "", "auto", (
        CandidateType(parse_schema(CONTACT)),
        CandidateType(parse_schema({"type_name": "pet", "fields": {"name": {"type": "string", "required": True}}}))))
    assert certain_records(both) == []
