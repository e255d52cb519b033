"""What a proxied turn may read and write follows the key's scopes (gateway/feature_scopes.py).

The finding this keeps closed: a ``chat:write``-only key read any subject's memories,
state and history through the injected context, and wrote memories with
``learn: "force"``. Now each feature needs the scope of the resource it touches;
asked for without it, the turn is a 403 that forwards and stores nothing; turned on
only by gateway.yaml's defaults, it is left off for that key.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import KEY, PROVIDER_KEY, wait_until

CHAT_ONLY = "mnx_live_chat_only_key_000001"
RECALLER = "mnx_live_chat_and_search_key_2"
RESPONSES_ONLY = "mnx_live_responses_only_key_03"
SUBJECT = "scoped-subject"
SECRET_MEMORY = "User keeps locker code 4471"


@pytest.fixture
def scoped_gateway(start_gateway, storage_sqlite):
    keys = [{"name": "admin", "key": KEY, "scopes": ["*"]},
            {"name": "chat", "key": CHAT_ONLY, "scopes": ["chat:write"]},
            {"name": "recall", "key": RECALLER, "scopes": ["chat:write", "memories:search"]},
            {"name": "responses", "key": RESPONSES_ONLY, "scopes": ["responses:write"]}]
    gateway = start_gateway(storage_sqlite, projects=[{"id": "project-a", "keys": keys}],
                            defaults={"learn": True, "log": True, "history": True})
    with gateway.rest(KEY) as rest:
        assert rest.post("/memories", json={"subject_id": SUBJECT, "text": SECRET_MEMORY}).status_code == 201
        assert rest.put("/state/task", json={"value": {"secret": "state-4471"}},
                        headers={"x-subject-id": SUBJECT}).status_code in (200, 201)
    return gateway


def _turn(gateway, key: str, path: str = "/v1/chat/completions", **mnx) -> httpx.Response:
    if path == "/v1/responses":
        body = {"model": "gpt-4o-mini", "input": "what is my locker code?"}
    else:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "what is my locker code?"}]}
    return httpx.post(gateway.url + path, headers={"x-mnexium-key": key, "x-openai-key": PROVIDER_KEY}, timeout=30,
                      json={**body, "mnx": {"subject_id": SUBJECT, "chat_id": "scoped-chat", **mnx}})


@pytest.mark.parametrize("mnx, scope", [
    ({"recall": True}, "memories:search"),
    ({"history": True}, "history:read"),
    ({"log": True}, "history:write"),
    ({"learn": "force"}, "memories:write"),
    ({"learn": True}, "memories:write"),
    ({"state": {"load": True, "key": "task"}}, "state:read"),
    ({"profile": True}, "profiles:read"),
])
def test_a_feature_asked_for_without_its_scope_is_a_403_and_nothing_happens(scoped_gateway, mnx, scope):
    response = _turn(scoped_gateway, CHAT_ONLY, **mnx)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["type"] == "permission_error" and scope in response.json()["error"]["message"]
    assert scoped_gateway.forwarded() == []
    with scoped_gateway.rest(KEY) as rest:
        assert rest.get("/chat/history/list", params={"subject_id": SUBJECT}).json()["chats"] == []


def test_the_same_feature_asked_for_by_header_is_refused_too(scoped_gateway):
    response = httpx.post(scoped_gateway.url + "/v1/chat/completions", timeout=30, json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}, headers={
        "x-mnexium-key": CHAT_ONLY, "x-openai-key": PROVIDER_KEY, "x-mnx-recall": "true",
        "x-mnx-subject-id": SUBJECT})
    assert response.status_code == 403 and scoped_gateway.forwarded() == []


def test_a_chat_only_key_is_a_plain_proxy_when_the_defaults_turn_features_on(scoped_gateway):
    """gateway.yaml turns log, learn and history on: for this key they stay off, silently."""
    response = _turn(scoped_gateway, CHAT_ONLY)
    assert response.status_code == 200, response.text
    [forwarded] = scoped_gateway.forwarded()
    assert SECRET_MEMORY not in str(forwarded["body"]) and "state-4471" not in str(forwarded["body"])
    with scoped_gateway.rest(KEY) as rest:
        assert rest.get("/chat/history/list", params={"subject_id": SUBJECT}).json()["chats"] == []
        assert rest.get("/jobs").json()["count"] == 0
        assert [m["text"] for m in rest.get("/memories", params={"subject_id": SUBJECT}).json()["data"]] == [
            SECRET_MEMORY]


def test_a_key_with_the_features_scope_gets_the_feature(scoped_gateway):
    response = _turn(scoped_gateway, RECALLER, recall=True)
    assert response.status_code == 200, response.text
    assert SECRET_MEMORY in str(scoped_gateway.forwarded()[-1]["body"])


def test_the_admin_key_learns_and_logs_by_default(scoped_gateway):
    assert _turn(scoped_gateway, KEY, learn="force").status_code == 200
    with scoped_gateway.rest(KEY) as rest:
        assert len(rest.get("/chat/history/list", params={"subject_id": SUBJECT}).json()["chats"]) == 1
        assert wait_until(lambda: len(rest.get("/memories", params={"subject_id": SUBJECT}).json()["data"]) == 2)


@pytest.mark.parametrize("key", [CHAT_ONLY, RESPONSES_ONLY])
def test_responses_takes_chat_write_like_every_surface_and_also_responses_write(scoped_gateway, key):
    assert _turn(scoped_gateway, key, path="/v1/responses").status_code == 200


def test_responses_write_alone_does_not_open_the_other_surfaces(scoped_gateway):
    assert _turn(scoped_gateway, RESPONSES_ONLY).status_code == 403
