"""The audit log (``audit:`` in gateway.yaml, ``GET /audit/requests``): what each proxied turn
asked, what the gateway injected (by id) and what the provider answered, on both backends.
Through real gateways in front of the fake provider."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import KEY, KEY_B, PROVIDER_KEY, REDIS_URL, wait_until

ON = {"enabled": True}
# A provider key found nowhere else: no record may hold it, whatever carries it.
DISTINCT_PROVIDER_KEY = "prov-zq7-distinct-caller-key-4242"
READ_ONLY_CHAT_KEY = "mnx_live_test_key_chat_only"


def projects_with_a_chat_only_key() -> list[dict[str, Any]]:
    return [{"id": "project-a", "keys": [{"name": "main", "key": KEY, "scopes": ["*"]},
                                         {"name": "chat", "key": READ_ONLY_CHAT_KEY, "scopes": ["chat:write"]}]},
            {"id": "project-b", "keys": [{"name": "main", "key": KEY_B, "scopes": ["*"]}]}]


def chat(gateway, text: str, subject: str = "s1", chat_id: str = "c1", *, key: str = KEY, stream: bool = False,
         model: str = "gpt-4o-mini", provider_key: str = PROVIDER_KEY, **mnx: Any) -> httpx.Response:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}],
                            "mnx": {"subject_id": subject, "chat_id": chat_id, **mnx}}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30,
                      headers={"x-mnexium-key": key, "x-openai-key": provider_key})


def records(gateway, key: str = KEY, **params: Any) -> httpx.Response:
    return httpx.get(gateway.api + "/audit/requests", params=params, headers={"x-mnexium-key": key}, timeout=30)


def rows(gateway, **params: Any) -> list[dict[str, Any]]:
    answer = records(gateway, **params)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["count"] == len(body["data"])
    return body["data"]


def test_off_by_default_nothing_is_recorded(start_gateway, storage):
    gateway = start_gateway(storage)
    assert chat(gateway, "hello", subject="off-user").status_code == 200
    answer = records(gateway)
    assert answer.status_code == 200
    assert answer.json() == {"data": [], "count": 0, "enabled": False}


def test_a_chat_turn_records_what_was_asked_injected_and_answered(start_gateway, storage):
    gateway = start_gateway(storage, audit=ON)
    with gateway.rest() as rest:
        memory = rest.post("/memories", json={"subject_id": "ann", "text": "Ann is allergic to peanuts"}).json()
        prompt = rest.post("/prompts", json={"name": "house", "prompt_text": "Be brief.", "is_default": True}).json()
        rest.put("/state/task", headers={"x-subject-id": "ann"}, json={"value": {"step": 2}})
    assert chat(gateway, "hello", subject="ann", chat_id="ann-chat").status_code == 200
    answer = chat(gateway, "What am I allergic to, peanuts?", subject="ann", chat_id="ann-chat", recall=True,
                  state={"load": True, "key": "task"}, metadata={"ticket": "T-1"})
    assert answer.status_code == 200

    listed = rows(gateway, subject_id="ann")
    # Newest first: the second turn's response, then its request, then the first turn's.
    assert [(row["direction"], row["status"]) for row in listed] == [("response", 200), ("request", 200)] * 2
    response, request = listed[0], listed[1]
    assert response["audit_id"] == request["audit_id"] != listed[2]["audit_id"]
    assert {row["request_type"] for row in listed} == {"chat"} and {row["chat_id"] for row in listed} == {"ann-chat"}
    sent = request["payload"]
    # The body as the client sent it, mnx included; the options as the gateway resolved them.
    assert sent["body"]["messages"] == [{"role": "user", "content": "What am I allergic to, peanuts?"}]
    assert sent["body"]["mnx"]["recall"] is True
    assert sent["mnx"]["recall"] is True and sent["mnx"]["history"] is True and sent["mnx"]["metadata"] == {
        "ticket": "T-1"}
    assert sent["provider"] == "openai" and sent["model"] == "gpt-4o-mini" and sent["stream"] is False
    # What was injected, by id.
    injected = sent["injected"]
    assert injected["memories"]["memory_ids"] == [memory["id"]]
    assert injected["system_prompt"]["prompt_ids"] == [prompt["id"]]
    assert injected["state"] == {"state_key": "task"}
    assert injected["history"] == {"messages": 2}
    assert "history" not in listed[3]["payload"]["injected"]  # the first turn had none to replay
    answered = response["payload"]
    assert answered["status"] == 200 and answered["usage"]["total_tokens"] == 15
    assert answered["body"]["choices"][0]["message"]["content"] == "echo: What am I allergic to, peanuts?"
    assert response["created_at"] >= request["created_at"]

    # One turn by its id; one direction of it.
    assert [row["direction"] for row in rows(gateway, audit_id=request["audit_id"])] == ["response", "request"]
    assert [row["payload"] for row in rows(gateway, audit_id=request["audit_id"], direction="request")] == [sent]
    assert rows(gateway, audit_id=request["audit_id"], chat_id="another-chat") == []
    assert rows(gateway, audit_id="aud_nothing") == []


def test_a_streamed_turn_records_the_rebuilt_answer_and_its_usage(start_gateway, storage):
    gateway = start_gateway(storage, audit=ON)
    answer = chat(gateway, "tell me a story", subject="streamer", stream=True)
    assert answer.status_code == 200 and "data: [DONE]" in answer.text
    response, request = rows(gateway, subject_id="streamer")
    assert request["payload"]["stream"] is True and request["payload"]["body"]["stream"] is True
    assert response["payload"]["stream"] is True
    assert response["payload"]["body"]["message"]["content"] == "echo: tell me a story"
    assert response["payload"]["usage"]["total_tokens"] == 15


def test_every_surface_is_recorded_with_its_request_type(start_gateway, storage):
    gateway = start_gateway(storage, audit=ON)
    mnx = {"subject_id": "surfer", "chat_id": "surf"}
    keys = {"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY, "x-api-key": "anthropic-caller-key-1234",
            "x-goog-api-key": "google-caller-key-1234"}
    assert httpx.post(gateway.url + "/v1/responses", headers=keys, timeout=30, json={
        "model": "gpt-4o-mini", "input": "via responses", "mnx": mnx}).status_code == 200
    streamed = httpx.post(gateway.url + "/v1/messages", headers=keys, timeout=30, json={
        "model": "claude-gateway-test", "max_tokens": 64, "stream": True,
        "messages": [{"role": "user", "content": "via messages"}], "mnx": mnx})
    assert streamed.status_code == 200
    assert httpx.post(gateway.url + "/v1beta/models/gemini-2.0-flash:generateContent", timeout=30,
                      headers={**keys, "x-mnx-subject-id": "surfer", "x-mnx-chat-id": "surf"},
                      json={"contents": [{"role": "user", "parts": [{"text": "via gemini"}]}]}).status_code == 200
    assert chat(gateway, "via chat", subject="surfer", chat_id="surf").status_code == 200

    expected = {"responses": ("via responses", False), "messages": ("via messages", True),
                "gemini": ("via gemini", False), "chat": ("via chat", False)}
    for request_type, (text, stream) in expected.items():
        response, request = rows(gateway, request_type=request_type, subject_id="surfer")
        assert request["request_type"] == response["request_type"] == request_type
        assert text in json.dumps(request["payload"]["body"])
        assert text in json.dumps(response["payload"]["body"])  # the fake provider echoes it
        assert response["payload"]["stream"] is stream and response["payload"]["usage"], request_type
    assert len(rows(gateway, chat_id="surf")) == 8


def test_filters_and_paging(start_gateway, storage):
    gateway = start_gateway(storage, audit=ON)
    for n in range(3):
        assert chat(gateway, f"question {n}", subject="pager", chat_id="p1").status_code == 200
    assert chat(gateway, "elsewhere", subject="pager", chat_id="p2").status_code == 200
    assert chat(gateway, "someone else", subject="other", chat_id="p1").status_code == 200

    everything = rows(gateway, subject_id="pager")
    assert len(everything) == 8
    # Pages of rows, whatever the page size and where it starts (mid-turn included).
    for limit, offset in ((3, 0), (3, 3), (2, 5), (5, 1), (1, 7), (4, 8)):
        page = rows(gateway, subject_id="pager", limit=limit, offset=offset)
        assert page == everything[offset:offset + limit], (limit, offset)
    requests_only = rows(gateway, subject_id="pager", direction="request")
    assert [row["direction"] for row in requests_only] == ["request"] * 4
    assert rows(gateway, subject_id="pager", direction="request", limit=2, offset=1) == requests_only[1:3]
    texts = [row["payload"]["body"]["messages"][0]["content"] for row in requests_only]
    assert texts == ["elsewhere", "question 2", "question 1", "question 0"]
    assert len(rows(gateway, chat_id="p1")) == 8  # both subjects' chat p1
    assert len(rows(gateway, subject_id="pager", chat_id="p1")) == 6
    assert len(rows(gateway, subject_id="pager", chat_id="p1", request_type="chat", direction="response")) == 3
    assert rows(gateway, subject_id="pager", request_type="messages") == []
    assert len(rows(gateway)) == 10
    assert len(rows(gateway, limit=5000)) == 10  # a limit over 1000 is taken as 1000


@pytest.mark.parametrize("params, code", [({"direction": "sideways"}, "invalid_direction"),
                                          ({"request_type": "fax"}, "invalid_request_type"),
                                          ({"limit": "many"}, "invalid_limit"),
                                          ({"offset": "1.5"}, "invalid_offset")])
def test_bad_query_parameters_are_400(start_gateway, storage_sqlite, params, code):
    gateway = start_gateway(storage_sqlite, audit=ON)
    answer = records(gateway, **params)
    assert answer.status_code == 400 and answer.json()["error"] == code


def test_reading_needs_audit_read_and_sees_only_its_own_project(start_gateway, storage):
    gateway = start_gateway(storage, audit=ON, projects=projects_with_a_chat_only_key())
    assert chat(gateway, "project a's secret plans", subject="shared-subject", chat_id="shared-chat").status_code == 200
    audit_id = rows(gateway)[0]["audit_id"]

    refused = records(gateway, key=READ_ONLY_CHAT_KEY)
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    assert chat(gateway, "a chat key's turn", key=READ_ONLY_CHAT_KEY).status_code == 200  # its turns are recorded
    assert len(rows(gateway)) == 4

    # Project B names A's subject, chat and audit id: it reads nothing of A's.
    assert records(gateway, key=KEY_B).json()["data"] == []
    assert records(gateway, key=KEY_B, audit_id=audit_id).json()["data"] == []
    assert records(gateway, key=KEY_B, subject_id="shared-subject", chat_id="shared-chat").json()["data"] == []
    assert chat(gateway, "project b's turn", subject="shared-subject", chat_id="shared-chat",
                key=KEY_B).status_code == 200
    seen_by_b = records(gateway, key=KEY_B, subject_id="shared-subject").json()["data"]
    assert len(seen_by_b) == 2 and "secret plans" not in json.dumps(seen_by_b)
    assert len(rows(gateway, subject_id="shared-subject")) == 2  # and A still sees only its own


def test_erasing_a_subject_deletes_its_records(start_gateway, storage):
    gateway = start_gateway(storage, audit=ON)
    assert chat(gateway, "forget me", subject="leaver").status_code == 200
    assert chat(gateway, "keep me", subject="stayer").status_code == 200
    with gateway.rest() as rest:
        erased = rest.delete("/subjects/leaver")
    assert erased.status_code == 200 and erased.json()["erased"]["audit_records"] == 2
    assert rows(gateway, subject_id="leaver") == []
    assert "forget me" not in json.dumps(rows(gateway))
    assert len(rows(gateway, subject_id="stayer")) == 2


def test_a_turn_running_while_its_subject_is_erased_records_nothing(start_gateway, storage):
    gateway = start_gateway(storage, audit=ON)
    outcome: list[int] = []
    # The fake provider takes a second to answer: the erasure lands while the turn waits for it.
    turn = threading.Thread(target=lambda: outcome.append(
        chat(gateway, "erase me mid-turn", subject="racer", model="sleep-1").status_code))
    turn.start()
    time.sleep(0.3)
    with gateway.rest() as rest:
        assert rest.delete("/subjects/racer").status_code == 200
    turn.join()
    assert outcome == [200]  # the client got its answer...
    assert rows(gateway, subject_id="racer") == []  # ...and no record of the erased subject came back
    assert chat(gateway, "a new turn after the erasure", subject="racer").status_code == 200
    assert len(rows(gateway, subject_id="racer")) == 2


def test_a_body_over_max_payload_bytes_is_kept_cut_with_the_rest_of_its_record(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite, audit={"enabled": True, "max_payload_bytes": 1024})
    long_text = "word " * 1000
    assert chat(gateway, long_text, subject="verbose", recall=True).status_code == 200
    response, request = rows(gateway, subject_id="verbose")
    for record in (request, response):
        body = record["payload"]["body"]
        assert body["truncated"] is True and body["bytes"] > 5000
        assert len(body["json_prefix"].encode()) <= 1024 and body["json_prefix"].startswith("{")
    assert request["payload"]["mnx"]["recall"] is True and request["payload"]["model"] == "gpt-4o-mini"
    assert response["payload"]["usage"]["total_tokens"] == 15
    assert chat(gateway, "short", subject="terse").status_code == 200
    assert rows(gateway, subject_id="terse")[1]["payload"]["body"]["messages"][0]["content"] == "short"


def test_records_expire_after_the_retention(start_gateway, storage):
    # 0.00002 days: 1.7 seconds.
    gateway = start_gateway(storage, audit={"enabled": True, "retention_days": 0.00002})
    assert chat(gateway, "short-lived", subject="brief").status_code == 200
    assert len(rows(gateway, subject_id="brief")) == 2
    assert wait_until(lambda: rows(gateway, subject_id="brief") == [] and rows(gateway) == [], timeout=10)


def test_failed_turns_are_recorded_with_their_status_and_explained_turns_not_at_all(start_gateway, storage):
    gateway = start_gateway(storage, audit=ON)
    assert chat(gateway, "provider down", subject="failer", model="fail-503").status_code == 503
    bad = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                     headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY},
                     json={"model": "gpt-4o-mini", "messages": "not a list", "mnx": {"subject_id": "failer"}})
    assert bad.status_code == 400
    assert chat(gateway, "just explain", subject="failer", explain=True).status_code == 200

    listed = rows(gateway, subject_id="failer", direction="response")
    assert [row["status"] for row in listed] == [400, 503]
    assert listed[0]["payload"]["error"]["error"] == bad.json()["error"]["code"]
    assert listed[1]["payload"]["status"] == 503 and "body" not in listed[1]["payload"]
    assert "just explain" not in json.dumps(rows(gateway))


def test_the_listing_is_in_the_order_the_turns_were_answered(start_gateway, storage):
    # Answers, provider failures and refusals take different paths to their records; whichever path,
    # the turn answered last is listed first (each record waits behind the ones answered before it).
    gateway = start_gateway(storage, audit=ON)
    expected = []
    for turn in range(24):
        kind = turn % 3
        if kind == 0:
            status = chat(gateway, f"turn {turn}", subject="orderly").status_code
        elif kind == 1:
            status = chat(gateway, f"turn {turn}", subject="orderly", model="fail-503").status_code
        else:
            status = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                                headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY},
                                json={"model": "gpt-4o-mini", "messages": f"turn {turn}",
                                      "mnx": {"subject_id": "orderly"}}).status_code
        assert status == (200, 503, 400)[kind]
        expected.append(status)
    listed = rows(gateway, subject_id="orderly", direction="response")
    assert [row["status"] for row in listed] == expected[::-1]
    answered = [row["created_at"] for row in listed]
    assert answered == sorted(answered, reverse=True)
    paged = rows(gateway, subject_id="orderly", direction="response", limit=5, offset=5)
    assert [row["audit_id"] for row in paged] == [row["audit_id"] for row in listed[5:10]]


def stored_text(gateway, storage: dict[str, Any]) -> str:
    """Every byte the backend holds for the gateway, as text (the SQLite files, or the Redis keys)."""
    if storage["backend"] == "sqlite":
        path = Path(storage["sqlite"]["path"])
        return "".join(file.read_bytes().decode("latin-1") for file in path.parent.glob(path.name + "*"))
    client = redis.Redis.from_url(REDIS_URL)
    try:
        texts = []
        for key in client.scan_iter(match=storage["redis"]["key_prefix"] + "*"):
            kind = client.type(key)
            if kind == b"hash":
                texts += [str(value) for value in client.hgetall(key).values()]
            elif kind == b"string":
                texts.append(str(client.get(key)))
        return "".join(texts)
    finally:
        client.close()


def test_no_provider_key_is_stored_in_any_record(start_gateway, storage):
    gateway = start_gateway(storage, audit=ON)
    # The key in its header, and (a careless client) in the text too: the fake provider echoes it
    # back, and quotes it in its 401. (No history: the audit records are what this test greps.)
    def turn(text: str, **options: Any) -> int:
        return chat(gateway, text, "careless", provider_key=DISTINCT_PROVIDER_KEY, log=False, **options).status_code

    assert turn(f"my key is {DISTINCT_PROVIDER_KEY}") == 200
    assert turn("and a stream", stream=True) == 200
    assert turn("and a failure", model="gpt-echo-key-401") == 401
    listed = rows(gateway, subject_id="careless")
    assert len(listed) == 6
    assert "my key is [redacted]" in json.dumps(listed)
    assert DISTINCT_PROVIDER_KEY not in json.dumps(listed)
    time.sleep(0.1)  # the SQLite write-ahead log is on disk by now
    assert DISTINCT_PROVIDER_KEY not in stored_text(gateway, storage)
    assert KEY not in json.dumps(listed)
