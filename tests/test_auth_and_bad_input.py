"""Keys, scopes, tenant isolation, and bad input: a clear 4xx, nothing stored, nothing forwarded."""

from __future__ import annotations

import hashlib
import json
import socket

import httpx
import pytest

from tests.conftest import KEY, KEY_B, PROVIDER_KEY

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}],
        "mnx": {"subject_id": "victim", "chat_id": "c1"}}


def post_chat(gateway, body=None, *, headers=None, content=None):
    sent = {"authorization": f"Bearer {KEY}", "x-openai-key": PROVIDER_KEY, **(headers or {})}
    if content is not None:
        return httpx.post(gateway.url + "/v1/chat/completions", headers=sent, content=content)
    return httpx.post(gateway.url + "/v1/chat/completions", headers=sent, json=CHAT if body is None else body)


def assert_nothing_stored_or_forwarded(gateway):
    assert gateway.forwarded() == []
    with gateway.rest() as rest:
        assert rest.get("/chat/history/list", params={"subject_id": "victim"}).json()["chats"] == []


# -- authentication ------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {},
    {"authorization": "NotBearer x"},
    {"authorization": "Bearer"},  # httpx refuses a trailing space; same meaning: no token
    {"authorization": "Bearer mnx_live_wrong"},
    {"x-mnexium-key": "mnx_live_wrong"},
    {"x-mnexium-key": ""},
])
def test_missing_malformed_or_unknown_keys_are_401_on_every_surface(shared_gateway, headers):
    chat = httpx.post(shared_gateway.url + "/v1/chat/completions", headers=headers, json=CHAT)
    assert chat.status_code == 401
    assert chat.json()["error"]["code"] == "unauthorized"
    rest = httpx.get(shared_gateway.api + "/chat/history/list", params={"subject_id": "x"}, headers=headers)
    assert rest.status_code == 401
    assert rest.json()["error"] == "unauthorized"
    assert shared_gateway.forwarded() == []


def test_keys_can_be_configured_as_sha256_and_scopes_are_enforced(start_gateway, storage_sqlite):
    reader = "mnx_live_read_only"
    gw = start_gateway(storage_sqlite, projects=[
        {"id": "p", "keys": [
            {"name": "reader", "key_sha256": hashlib.sha256(reader.encode()).hexdigest(),
             "scopes": ["history:read", "prompts:read"]},
            {"name": "coarse", "key": "mnx_live_coarse", "scopes": ["read"]},
            {"name": "admin", "key": KEY, "scopes": ["*"]},
        ]}])
    with gw.rest(reader) as rest:
        assert rest.get("/chat/history/list", params={"subject_id": "s"}).status_code == 200
        denied = rest.post("/prompts", json={"name": "n", "prompt_text": "t"})
        assert denied.status_code == 403 and denied.json()["error"] == "forbidden"
        assert rest.put("/state/k", headers={"x-subject-id": "s"}, json={"value": 1}).status_code == 403
    with gw.rest("mnx_live_coarse") as rest:
        assert rest.get("/prompts").status_code == 200
        assert rest.delete("/chat/history/delete", params={"chat_id": "c"}).status_code == 403
    chat = httpx.post(gw.url + "/v1/chat/completions", json=CHAT,
                      headers={"authorization": f"Bearer {reader}", "x-openai-key": PROVIDER_KEY})
    assert chat.status_code == 403 and chat.json()["error"]["code"] == "forbidden"
    assert gw.forwarded() == []
    with gw.rest() as rest:
        assert rest.post("/prompts", json={"name": "n", "prompt_text": "t"}).status_code == 201


def test_the_same_subject_in_two_projects_shares_nothing(gateway_on):
    a = gateway_on.openai(KEY)
    b = gateway_on.openai(KEY_B)
    ids = {"mnx": {"subject_id": "shared-name", "chat_id": "same-chat"}}
    a.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "A's secret"}],
                              extra_body=ids)
    with gateway_on.rest(KEY) as rest_a, gateway_on.rest(KEY_B) as rest_b:
        rest_a.put("/state/task", headers={"x-subject-id": "shared-name"}, json={"value": "A state"})
        rest_a.post("/prompts", json={"name": "a", "prompt_text": "A PROMPT", "is_default": True})
        b.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "B here"}],
                                  extra_body={"mnx": {**ids["mnx"], "state": {"load": True, "key": "task"}}})
        assert gateway_on.forwarded()[-1]["body"]["messages"] == [{"role": "user", "content": "B here"}]
        listed = rest_b.get("/chat/history/list", params={"subject_id": "shared-name"}).json()["chats"]
        assert [c["message_count"] for c in listed] == [2]
        read = rest_b.get("/chat/history/read", params={"chat_id": "same-chat"}).json()["messages"]
        assert "A's secret" not in json.dumps(read)
        assert rest_b.get("/state/task", headers={"x-subject-id": "shared-name"}).status_code == 404
        assert rest_b.get("/prompts").json()["prompts"] == []
        prompt_id = rest_a.get("/prompts").json()["prompts"][0]["id"]
        assert rest_b.get(f"/prompts/{prompt_id}").status_code == 404
        assert rest_b.delete(f"/prompts/{prompt_id}").json()["deleted"] is False
        rest_b.delete("/chat/history/delete", params={"chat_id": "same-chat"})
        assert len(rest_a.get("/chat/history/read", params={"chat_id": "same-chat"}).json()["messages"]) == 2


# -- bad input on chat completions ---------------------------------------------------------

@pytest.mark.parametrize("body, code", [
    ({"messages": [{"role": "user", "content": "x"}]}, "model_required"),
    ({"model": "", "messages": [{"role": "user", "content": "x"}]}, "model_required"),
    ({"model": "gpt-4o-mini"}, "messages_required"),
    ({"model": "gpt-4o-mini", "messages": []}, "invalid_messages"),
    ({"model": "gpt-4o-mini", "messages": "hello"}, "invalid_messages"),
    ({"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "x"}]}, "invalid_messages"),
    ({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": 42}]}, "invalid_messages"),
    ({"model": "gpt-4o-mini", "messages": [{"role": "tool", "content": "x"}]}, "invalid_messages"),
    ({"model": 7, "messages": [{"role": "user", "content": "x"}]}, "model_required"),
    ({**CHAT, "stream": "yes"}, "invalid_stream"),
    ({**CHAT, "mnx": "not-an-object"}, "invalid_mnx"),
    ({**CHAT, "mnx": {"history": "sometimes"}}, "invalid_mnx"),
    ({**CHAT, "mnx": {"learn": "always"}}, "invalid_mnx"),
    ({**CHAT, "mnx": {"subject_id": 123}}, "invalid_mnx"),
    ({**CHAT, "mnx": {"subject_id": "x" * 300}}, "invalid_mnx"),
    ({**CHAT, "mnx": {"subject_id": "victim\u0000"}}, "invalid_mnx"),
    ({**CHAT, "mnx": {"chat_id": "line\nbreak"}}, "invalid_mnx"),
    ({**CHAT, "mnx": {"state": {"load": True}}}, "invalid_mnx"),
])
def test_invalid_chat_bodies_are_400_in_the_openai_shape(shared_gateway, body, code):
    response = post_chat(shared_gateway, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error" and error["message"]
    assert_nothing_stored_or_forwarded(shared_gateway)


@pytest.mark.parametrize("header, value", [("x-mnx-history", "perhaps"), ("x-mnx-metadata", '{"score": NaN}'),
                                           ("x-mnx-metadata", "{not json"), ("x-mnx-state", "[" * 5000),
                                           ("x-mnx-metadata", '{"k": "\\ud800"}'),
                                           ("x-mnx-metadata", '{"k": ' + "[" * 120 + "]" * 120 + "}")])
def test_bad_header_options_are_400(shared_gateway, header, value):
    response = post_chat(shared_gateway, headers={header: value})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "mnx." + header.removeprefix("x-mnx-")
    assert_nothing_stored_or_forwarded(shared_gateway)


# Valid JSON that is not Unicode text: a lone UTF-16 surrogate escape.
LONE_SURROGATE = (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi \\ud800"}], '
                  b'"mnx": {"subject_id": "u1", "learn": true}}')


def nested(depth: int, inner: bytes = b"1") -> bytes:
    """A body whose metadata is ``depth`` arrays deep."""
    return b'{"model": "gpt-4o-mini", "metadata": ' + b"[" * depth + inner + b"]" * depth + b"}"


# Nested deeper than the parser recurses, or about as deep with a lone surrogate at the bottom.
@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b"\xff\xfe", LONE_SURROGATE, nested(50_000),
                                     *(nested(depth, b'"\\ud800"') for depth in (900, 950, 990)),
                                     *(b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], '
                                       b'"temperature": %s}' % number for number in (b"NaN", b"-Infinity", b"1e999"))])
def test_malformed_json_is_400(shared_gateway, content):
    response = post_chat(shared_gateway, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json_body"
    assert_nothing_stored_or_forwarded(shared_gateway)


def test_unknown_mnx_keys_and_nulls_are_ignored(gateway):
    body = {**CHAT, "mnx": {"subject_id": None, "chat_id": None, "metadata": None, "future_option": {"x": 1},
                            "summarize": False, "regenerate_key": False}}
    assert post_chat(gateway, body).status_code == 200


@pytest.mark.parametrize("method, path, shape", [
    ("GET", "/v1/chat/completions", "openai"), ("PUT", "/api/v1/responses", "openai"),
    ("GET", "/v1/messages", "anthropic"), ("POST", "/v1beta/models/a%2Fb:generateContent", "gemini"),
    ("POST", "/v1beta/models", "gemini"), ("GET", "/api/v1/nothing-here", "mnexium"),
])
def test_unknown_routes_and_methods_answer_in_the_shape_the_client_reads(shared_gateway, method, path, shape):
    response = httpx.request(method, shared_gateway.url + path, headers={"x-mnexium-key": KEY})
    assert response.status_code in (404, 405)
    error = response.json()["error"]
    if shape == "openai":
        assert error["type"] in ("not_found_error", "invalid_request_error") and error["message"]
    elif shape == "anthropic":
        assert response.json()["type"] == "error" and error["type"] in ("not_found_error", "invalid_request_error")
    elif shape == "gemini":
        assert error["code"] == response.status_code and error["status"] in ("NOT_FOUND", "UNIMPLEMENTED")
    else:
        assert error == "not_found" and response.json()["path"] == path


@pytest.mark.parametrize("path, headers, code", [
    ("/v1/chat/completions", {"x-openai-key": "sk-caf\xe9".encode("latin-1")}, "invalid_provider_key"),
    ("/v1/chat/completions", {"authorization": "Bearer sk-\xe9t\xe9".encode("latin-1")}, "invalid_provider_key"),
    ("/v1/messages", {"x-api-key": "sk-ant-\xe9".encode("latin-1")}, "invalid_provider_key"),
    ("/v1/messages", {"x-anthropic-key": PROVIDER_KEY, "anthropic-beta": "b\xeata".encode("latin-1")},
     "invalid_header"),
])
def test_header_values_no_provider_request_could_carry_are_400(shared_gateway, path, headers, code):
    """A provider key (or a forwarded header) outside printable ASCII was a 500 when the
    provider request was built, after recall and context had run."""
    body = {"model": "claude-3-5-haiku" if path == "/v1/messages" else "gpt-4o-mini", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}], "mnx": {"subject_id": "victim", "chat_id": "c"}}
    response = httpx.post(shared_gateway.url + path, json=body, headers={"x-mnexium-key": KEY, **headers})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert_nothing_stored_or_forwarded(shared_gateway)


@pytest.mark.parametrize("path", ["/api/v1/chat/completions", "/v1/chat/completions", "/api/v1/responses"])
def test_missing_provider_key_is_400_with_the_code_as_error(gateway, path):
    """Mnexium's own clients read ``json.error.includes("key_required")``: ``error`` is the code
    string on the OpenAI surfaces (contract §1, §2), with the message beside it."""
    def ask(model: str) -> dict:
        body = {"model": model, "input": "hi"} if path.endswith("responses") else {**CHAT, "model": model}
        response = httpx.post(gateway.url + path, headers={"authorization": f"Bearer {KEY}"}, json=body)
        assert response.status_code == 400
        return response.json()

    openai_error = ask("gpt-4o-mini")
    assert openai_error["error"] == "openai_key_required" and "key_required" in openai_error["error"]
    assert openai_error["param"] == "x-openai-key"
    # The message says both ways to supply the key: the request header, and the environment
    # variable the shipped gateway.yaml reads the configured key from.
    message = openai_error["message"]
    assert "x-openai-key header" in message and "OPENAI_API_KEY" in message
    assert "providers.openai.api_key" in message
    claude = ask("claude-3-5-sonnet")
    assert claude["error"] == "anthropic_key_required"
    assert "x-anthropic-key header" in claude["message"] and "ANTHROPIC_API_KEY" in claude["message"]
    gemini = ask("gemini-2.0-flash")
    assert gemini["error"] == "google_key_required" and "GEMINI_API_KEY" in gemini["message"]
    assert_nothing_stored_or_forwarded(gateway)


def test_every_sdk_surfaces_a_readable_missing_key_error(gateway):
    """The OpenAI SDK (flat shape above), and the Anthropic and google-genai SDKs on their own
    surfaces (their native envelopes), each raise with the code and the way out in the message."""
    import anthropic
    import openai
    from google import genai
    from google.genai import errors as genai_errors

    with pytest.raises(openai.BadRequestError) as openai_error:
        gateway.openai().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                                 extra_headers={"x-openai-key": ""})
    assert "openai_key_required" in str(openai_error.value) and "x-openai-key" in str(openai_error.value)
    # The project key in the SDK's key slot too (a common slip): it is never taken as the Anthropic key.
    claude = anthropic.Anthropic(api_key=KEY, base_url=gateway.url, default_headers={"x-mnexium-key": KEY},
                                 max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as anthropic_error:
        claude.messages.create(model="claude-3-5-haiku", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert "x-anthropic-key" in str(anthropic_error.value) or "x-api-key" in str(anthropic_error.value)
    google = genai.Client(api_key="unused", http_options={"base_url": gateway.url, "headers": {
        "x-mnexium-key": KEY, "x-goog-api-key": ""}})
    with pytest.raises(genai_errors.ClientError) as google_error:
        google.models.generate_content(model="gemini-2.0-flash", contents="hi")
    assert google_error.value.code == 400 and "GEMINI_API_KEY" in str(google_error.value)
    assert_nothing_stored_or_forwarded(gateway)


def test_oversized_body_is_413_from_its_declared_length(start_gateway, storage_sqlite):
    gw = start_gateway(storage_sqlite, server={"max_body_bytes": 2048})
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    response = post_chat(gw, big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert_nothing_stored_or_forwarded(gw)


def test_oversized_chunked_body_is_refused_before_it_is_read_in_full(start_gateway, storage_sqlite):
    """No Content-Length: the gateway counts as it reads and answers 413 without waiting for the rest."""
    gw = start_gateway(storage_sqlite, server={"max_body_bytes": 2048})
    port = int(gw.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                      f"x-openai-key: {PROVIDER_KEY}\r\nContent-Type: application/json\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n").encode())
        chunk = b"x" * 4096
        sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        # The body is not finished (no terminating chunk), yet the answer arrives.
        reply = sock.recv(4096).decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413")
    assert gw.forwarded() == []


# -- bad input on REST resources -----------------------------------------------------------

def test_rest_errors_use_the_mnexium_shape(gateway):
    with gateway.rest() as rest:
        assert rest.get("/chat/history/list").json() == {
            "error": "subject_id_required", "message": "the subject_id query parameter is required",
            "param": "subject_id"}
        assert rest.get("/chat/history/read").json()["error"] == "chat_id_required"
        assert rest.delete("/chat/history/delete").json()["error"] == "chat_id_required"
        missing = rest.get("/no/such/route")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        assert rest.post("/prompts", content=b"{oops", headers={"content-type": "application/json"}).json()[
            "error"] == "invalid_json_body"


# -- the same refusals as the SDKs see them ------------------------------------------------

def test_openai_sdk_users_get_typed_errors_with_the_gateway_code(start_gateway, storage_sqlite):
    import openai

    gw = start_gateway(storage_sqlite, server={"max_body_bytes": 4096})
    client = gw.openai()
    cases = [
        (dict(extra_body={"mnx": {"history": "maybe"}}), openai.BadRequestError, "invalid_mnx"),
        (dict(extra_body={"messages": []}), openai.BadRequestError, "invalid_messages"),
        (dict(extra_body={"model": None}), openai.BadRequestError, "model_required"),
        (dict(messages=[{"role": "user", "content": "x" * 8000}]), openai.APIStatusError, "payload_too_large"),
    ]
    for overrides, exception, code in cases:
        request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **overrides}
        with pytest.raises(exception) as error:
            client.chat.completions.create(**request)
        assert error.value.code == code, overrides
    # A missing provider key is the one error in the Mnexium shape (``error`` is the code
    # string, see above): the SDK raises BadRequestError with the code in its message.
    with pytest.raises(openai.BadRequestError) as missing_key:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                       extra_headers={"x-openai-key": ""})
    assert missing_key.value.code is None and "openai_key_required" in str(missing_key.value)
    with pytest.raises(openai.AuthenticationError):
        gw.openai("mnx_live_not_a_key").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert gw.forwarded() == []


def test_mnexium_sdk_users_get_a_readable_message_for_a_missing_provider_key(gateway):
    from mnexium import APIError, Mnexium

    with Mnexium(api_key=KEY, base_url=gateway.api, max_retries=0) as client:
        with pytest.raises(APIError) as error:
            client.process("hello")
    assert error.value.status == 400
    assert "x-openai-key" in str(error.value)
    assert gateway.forwarded() == []
