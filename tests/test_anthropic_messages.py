"""The Anthropic Messages surface through the official anthropic SDK, unmodified but for base URL and headers."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from gateway.history import content_text
from tests.conftest import KEY, PROVIDER_KEY

ANTHROPIC_KEY = "sk-ant-caller-key"


@pytest.fixture
def claude(gateway):
    client = anthropic.Anthropic(base_url=gateway.url, api_key=ANTHROPIC_KEY, max_retries=0,
                                 default_headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY})
    yield client
    client.close()


def ids(subject="ann", chat="messages-chat"):
    return {"mnx": {"subject_id": subject, "chat_id": chat}}


def test_claude_is_forwarded_natively_with_the_callers_key_and_context_in_system(claude, gateway):
    with gateway.rest() as rest:
        rest.post("/prompts", json={"name": "p", "prompt_text": "PROJECT PROMPT", "is_default": True})
    raw = claude.messages.with_raw_response.create(
        model="claude-gateway-test", max_tokens=64, system="REQUEST SYSTEM",
        messages=[{"role": "user", "content": "hello claude"}], extra_body={**ids(), "top_k": 5})
    message = raw.parse()
    assert message.content[0].text == "echo: hello claude"
    assert raw.headers["x-mnx-chat-id"] == "messages-chat"
    forwarded = gateway.forwarded()[-1]
    assert forwarded["path"] == "/v1/messages"
    assert forwarded["headers"]["x-api-key"] == ANTHROPIC_KEY
    # The client's own API version reaches Anthropic unchanged.
    assert forwarded["headers"]["anthropic-version"] == raw.http_response.request.headers["anthropic-version"]
    body = forwarded["body"]
    assert body["system"] == "PROJECT PROMPT\n\nREQUEST SYSTEM"
    assert body["top_k"] == 5 and "mnx" not in body
    assert body["messages"] == [{"role": "user", "content": "hello claude"}]


def test_streamed_claude_answer_in_anthropic_events_and_history_replayed(claude, gateway):
    with claude.messages.stream(model="claude-gateway-test", max_tokens=64, extra_body=ids(),
                                messages=[{"role": "user", "content": "first"}]) as stream:
        assert "".join(stream.text_stream) == "echo: first"
    claude.messages.create(model="claude-gateway-test", max_tokens=64, extra_body=ids(),
                           messages=[{"role": "user", "content": "second"}])
    assert gateway.forwarded()[-1]["body"]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "first"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "echo: first"}]},
        {"role": "user", "content": "second"},
    ]
    with gateway.rest() as rest:
        read = rest.get("/chat/history/read", params={"chat_id": "messages-chat"}).json()["messages"]
    assert [m["message"] for m in read] == ["first", "echo: first", "second", "echo: second"]


def test_a_gpt_model_on_the_messages_surface_is_translated_by_litellm(claude, gateway):
    answer = claude.messages.create(model="gpt-4o-mini", max_tokens=64, system="BE BRIEF",
                                    messages=[{"role": "user", "content": "hi gpt"}], extra_body=ids(chat="gpt"))
    assert answer.content[0].text == "echo: hi gpt"
    forwarded = gateway.forwarded()[-1]
    assert forwarded["path"] == "/v1/chat/completions"
    assert forwarded["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert forwarded["body"]["messages"][0] == {"role": "system", "content": "BE BRIEF"}
    with claude.messages.stream(model="gpt-4o-mini", max_tokens=64, extra_body=ids(chat="gpt"),
                                messages=[{"role": "user", "content": "streamed"}]) as stream:
        assert "".join(stream.text_stream) == "echo: streamed"
    # The first turn was replayed to the OpenAI upstream as history.
    replayed = gateway.forwarded()[-1]["body"]["messages"][-3:]
    assert [(m["role"], content_text(m["content"])) for m in replayed] == [
        ("user", "hi gpt"), ("assistant", "echo: hi gpt"), ("user", "streamed")]


def test_history_written_by_chat_completions_is_replayed_on_the_messages_surface(claude, gateway):
    gateway.openai().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "from openai"}],
                                             extra_body=ids(chat="shared"))
    claude.messages.create(model="claude-gateway-test", max_tokens=64, extra_body=ids(chat="shared"),
                           messages=[{"role": "user", "content": "from anthropic"}])
    assert gateway.forwarded()[-1]["body"]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "from openai"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "echo: from openai"}]},
        {"role": "user", "content": "from anthropic"},
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_tool_use_round_trip_through_history(claude, gateway, stream):
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    chat = ids(chat=f"tools-{stream}")
    request = dict(model="claude-tool-call", max_tokens=64, tools=tools, extra_body=chat,
                   messages=[{"role": "user", "content": "weather?"}])
    if stream:
        with claude.messages.stream(**request) as events:
            first = events.get_final_message()
    else:
        first = claude.messages.create(**request)
    call = first.content[0]
    assert (call.type, call.name, call.input) == ("tool_use", "get_weather", {"city": "Paris"})
    claude.messages.create(model="claude-gateway-test", max_tokens=64, tools=tools, extra_body=chat,
                           messages=[{"role": "user", "content": [
                               {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}])
    sent = gateway.forwarded()[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                   "input": {"city": "Paris"}}]
    assert sent[2]["content"][0]["tool_use_id"] == "toolu_1"


def test_mnx_options_travel_in_headers_for_the_anthropic_sdk(claude, gateway):
    headers = {"x-mnx-subject-id": "hdr", "x-mnx-chat-id": "hdr-chat"}
    claude.messages.create(model="claude-gateway-test", max_tokens=64, extra_headers=headers,
                           messages=[{"role": "user", "content": "one"}])
    raw = claude.messages.with_raw_response.create(model="claude-gateway-test", max_tokens=64,
                                                   extra_headers={**headers, "x-mnx-history": "false"},
                                                   messages=[{"role": "user", "content": "two"}])
    assert raw.headers["x-mnx-subject-id"] == "hdr"
    assert gateway.forwarded()[-1]["body"]["messages"] == [{"role": "user", "content": "two"}]


def test_errors_come_back_in_the_anthropic_envelope(claude, gateway):
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(model="claude-gateway-test", max_tokens=0,
                               messages=[{"role": "user", "content": "x"}])
    assert bad.value.body["type"] == "error"
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(model="anthropic/fail-429", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gateway.url, api_key=ANTHROPIC_KEY, max_retries=0,
                            default_headers={"x-mnexium-key": "mnx_live_wrong"}).messages.create(
            model="claude-gateway-test", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert gateway.forwarded()[-1]["body"]["model"] == "fail-429"


@pytest.mark.parametrize("body, code", [
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model_required"),
    ({"model": "claude-x", "messages": [{"role": "user", "content": "x"}]}, "max_tokens_required"),
    ({"model": "claude-x", "max_tokens": 5, "messages": []}, "invalid_messages"),
    ({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "invalid_messages"),
    ({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": [{"text": "no type"}]}]},
     "invalid_messages"),
    ({"model": "claude-x", "max_tokens": 5, "system": 7, "messages": [{"role": "user", "content": "x"}]},
     "invalid_system"),
    ({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "mnx": {"log": "no"}},
     "invalid_mnx"),
])
def test_invalid_bodies_store_and_forward_nothing(shared_gateway, body, code):
    response = httpx.post(shared_gateway.url + "/v1/messages", json=body,
                          headers={"x-mnexium-key": KEY, "x-api-key": ANTHROPIC_KEY})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert shared_gateway.forwarded() == []


def test_missing_anthropic_key_is_400(gateway):
    response = httpx.post(gateway.url + "/v1/messages", headers={"x-mnexium-key": KEY},
                          json={"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400
    assert response.json() == {"type": "error", "error": {
        "type": "invalid_request_error", "code": "anthropic_key_required",
        "message": response.json()["error"]["message"]}}
    assert gateway.forwarded() == []


def test_memories_are_recalled_into_the_anthropic_system(claude, gateway):
    with gateway.rest() as rest:
        rest.post("/memories", json={"subject_id": "ann", "text": "Ann's favorite fruit is mango"})
    claude.messages.create(model="claude-gateway-test", max_tokens=64, system="REQUEST SYSTEM",
                           messages=[{"role": "user", "content": "Which fruit should I buy?"}],
                           extra_headers={"x-mnx-recall": "true", "x-mnx-subject-id": "ann",
                                          "x-mnx-chat-id": "fruit-chat"})
    system = content_text(gateway.forwarded()[-1]["body"]["system"])
    assert "Ann's favorite fruit is mango" in system and "REQUEST SYSTEM" in system
    with gateway.rest() as rest:
        events = rest.get("/memories/recalls", params={"chat_id": "fruit-chat"}).json()["data"]
    assert [(e["request_type"], e["memory_text"]) for e in events] == [("messages", "Ann's favorite fruit is mango")]
