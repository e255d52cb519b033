"""The OpenAI Responses surface through the official openai SDK."""

from __future__ import annotations

import httpx
import openai
import pytest

from gateway.history import content_text
from tests.conftest import KEY, PROVIDER_KEY


def ids(chat="resp-chat", **more):
    return {"mnx": {"subject_id": "rita", "chat_id": chat, **more}}


def test_string_input_with_instructions_and_context_forwarded_untranslated(gateway):
    with gateway.rest() as rest:
        rest.post("/prompts", json={"name": "p", "prompt_text": "PROJECT PROMPT", "is_default": True})
    client = gateway.openai()
    raw = client.responses.with_raw_response.create(
        model="gpt-4o-mini", input="hello responses", instructions="BE TERSE", max_output_tokens=50,
        reasoning={"effort": "low"}, extra_body=ids())
    response = raw.parse()
    assert response.output_text == "echo: hello responses"
    assert raw.headers["x-mnx-chat-id"] == "resp-chat"
    forwarded = gateway.forwarded()[-1]
    assert forwarded["path"] == "/v1/responses"
    assert forwarded["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    body = forwarded["body"]
    assert body["instructions"] == "PROJECT PROMPT\n\nBE TERSE"
    assert (body["input"], body["max_output_tokens"], body["reasoning"]) == ("hello responses", 50, {"effort": "low"})
    assert "mnx" not in body


def test_history_is_off_by_default_here_and_replayed_as_items_when_asked(gateway):
    client = gateway.openai()
    client.responses.create(model="gpt-4o-mini", input="first", extra_body=ids())
    client.responses.create(model="gpt-4o-mini", input="no history", extra_body=ids())
    assert gateway.forwarded()[-1]["body"]["input"] == "no history"
    client.responses.create(model="gpt-4o-mini", extra_body=ids(history=True),
                            input=[{"role": "user", "content": [{"type": "input_text", "text": "with history"}]}])
    assert gateway.forwarded()[-1]["body"]["input"] == [
        {"role": "user", "content": [{"type": "input_text", "text": "first"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "echo: first"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "no history"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "echo: no history"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "with history"}]},
    ]


def test_streamed_response_events_and_history_readable_by_the_history_api(gateway):
    stream = gateway.openai().responses.create(model="gpt-4o-mini", input="stream it", stream=True,
                                               extra_body=ids(chat="resp-stream"))
    events = list(stream)
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: stream it"
    with gateway.rest() as rest:
        read = rest.get("/chat/history/read", params={"chat_id": "resp-stream"}).json()["messages"]
    assert [(m["role"], m["message"]) for m in read] == [("user", "stream it"), ("assistant", "echo: stream it")]


def test_function_calls_round_trip_through_history(gateway):
    client = gateway.openai()
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]
    first = client.responses.create(model="tool-call", input="weather?", tools=tools,
                                    extra_body=ids(chat="resp-tools"))
    call = first.output[0]
    assert (call.type, call.name) == ("function_call", "get_weather")
    client.responses.create(model="gpt-4o-mini", tools=tools, extra_body=ids(chat="resp-tools", history=True),
                            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert gateway.forwarded()[-1]["body"]["input"] == [
        {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
        {"type": "function_call", "call_id": "call_r1", "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"},
        {"type": "function_call_output", "call_id": "call_r1", "output": "sunny"},
    ]


def test_a_claude_model_on_the_responses_surface_is_bridged_by_litellm(gateway):
    client = gateway.openai()
    response = client.responses.create(model="claude-gateway-test", input="hi claude", instructions="SYS",
                                       max_output_tokens=40, extra_headers={"x-anthropic-key": "sk-ant-r"})
    assert response.output_text == "echo: hi claude"
    forwarded = gateway.forwarded()[-1]
    assert forwarded["path"] == "/v1/messages" and forwarded["headers"]["x-api-key"] == "sk-ant-r"
    stream = client.responses.create(model="claude-gateway-test", input="stream claude", stream=True,
                                     max_output_tokens=40, extra_headers={"x-anthropic-key": "sk-ant-r"})
    assert "".join(e.delta for e in stream if e.type == "response.output_text.delta") == "echo: stream claude"


def test_history_from_chat_completions_replays_into_responses(gateway):
    gateway.openai().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "via chat"}],
                                             extra_body=ids(chat="cross"))
    gateway.openai().responses.create(model="gpt-4o-mini", input="via responses", extra_body=ids(chat="cross",
                                                                                                 history=True))
    replayed = gateway.forwarded()[-1]["body"]["input"]
    assert [(item["role"], content_text(item["content"])) for item in replayed] == [
        ("user", "via chat"), ("assistant", "echo: via chat"), ("user", "via responses")]


@pytest.mark.parametrize("body, code", [
    ({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}, "messages_not_supported"),
    ({"model": "gpt-4o-mini"}, "input_required"),
    ({"model": "gpt-4o-mini", "input": ""}, "input_required"),
    ({"model": "gpt-4o-mini", "input": 5}, "invalid_input"),
    ({"model": "gpt-4o-mini", "input": ["not an item"]}, "invalid_input"),
    ({"input": "x"}, "model_required"),
    ({"model": "gpt-4o-mini", "input": "x", "instructions": ["x"]}, "invalid_instructions"),
    ({"model": "gpt-4o-mini", "input": "x", "max_output_tokens": 0}, "invalid_max_output_tokens"),
])
def test_invalid_bodies_are_400_and_forward_nothing(shared_gateway, body, code):
    response = httpx.post(shared_gateway.url + "/v1/responses", json=body,
                          headers={"authorization": f"Bearer {KEY}", "x-openai-key": PROVIDER_KEY})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert shared_gateway.forwarded() == []


def test_provider_errors_keep_their_status(gateway):
    with pytest.raises(openai.RateLimitError):
        gateway.openai().responses.create(model="fail-429", input="x")
