"""Chat completions through the official openai SDK, against a running gateway."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import KEY, PROVIDER_KEY


def mnx(**options):
    return {"mnx": options}


def test_non_streamed_completion_carries_mnx_ids_in_headers_and_body(gateway):
    client = gateway.openai()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}],
        extra_body=mnx(subject_id="user_1", chat_id="chat_1"))
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.usage.total_tokens == 15
    assert raw.headers["x-mnx-chat-id"] == "chat_1"
    assert raw.headers["x-mnx-subject-id"] == "user_1"
    assert json.loads(raw.http_response.content)["mnx"] == {"chat_id": "chat_1", "subject_id": "user_1"}
    forwarded = gateway.forwarded()[-1]
    assert forwarded["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert "mnx" not in forwarded["body"]


@pytest.mark.parametrize("stream", [False, True])
def test_ids_a_header_cannot_carry_come_back_percent_encoded(gateway, stream):
    """Header values are Latin-1: a non-ASCII id is echoed as UTF-8 percent-escapes (it was a 500,
    and streamed, an upstream connection left open), and the chat is stored under the id itself."""
    with httpx.Client(timeout=30) as client:
        response = client.post(gateway.url + "/v1/chat/completions", json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": stream,
            "mnx": {"subject_id": "Zoë", "chat_id": "chat 😀"}}, headers={"x-mnexium-key": KEY,
                                                                         "x-openai-key": PROVIDER_KEY})
        assert response.status_code == 200
        assert response.headers["x-mnx-chat-id"] == "chat %F0%9F%98%80"
        assert response.headers["x-mnx-subject-id"] == "Zo%C3%AB"
        if not stream:
            assert response.json()["mnx"] == {"chat_id": "chat 😀", "subject_id": "Zoë"}
        with gateway.rest() as rest:
            chats = rest.get("/chat/history/list", params={"subject_id": "Zoë"}).json()["chats"]
            assert [chat["chat_id"] for chat in chats] == ["chat 😀"]


def test_ids_are_generated_when_the_request_gives_none(gateway):
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-mnx-subject-id"].startswith("subj_")
    assert len(raw.headers["x-mnx-chat-id"]) == 36


def test_streamed_completion_arrives_in_openai_chunks_with_ids_in_headers(gateway):
    client = gateway.openai()
    with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "stream me"}], stream=True,
            stream_options={"include_usage": True}, extra_body=mnx(subject_id="u", chat_id="streamed")) as response:
        assert response.headers["x-mnx-chat-id"] == "streamed"
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream me"
    assert chunks[-1].usage.total_tokens == 15


def test_history_is_replayed_across_turns_streamed_or_not(gateway_on):
    client = gateway_on.openai()
    ids = mnx(subject_id="alice", chat_id="conversation-1")
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "my name is Alice"}],
                                   extra_body=ids)
    stream = client.chat.completions.create(model="gpt-4o-mini", stream=True, extra_body=ids,
                                            messages=[{"role": "user", "content": "I like tea"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "echo: I like tea"
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "what is my name?"}],
                                   extra_body=ids)
    sent = gateway_on.forwarded()[-1]["body"]["messages"]
    assert sent == [
        {"role": "user", "content": "my name is Alice"},
        {"role": "assistant", "content": "echo: my name is Alice"},
        {"role": "user", "content": "I like tea"},
        {"role": "assistant", "content": "echo: I like tea"},
        {"role": "user", "content": "what is my name?"},
    ]


def test_history_false_sends_only_the_request_and_other_chats_stay_separate(gateway):
    client = gateway.openai()
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "first"}],
                                   extra_body=mnx(subject_id="s", chat_id="a"))
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "other chat"}],
                                   extra_body=mnx(subject_id="s", chat_id="b"))
    assert gateway.forwarded()[-1]["body"]["messages"] == [{"role": "user", "content": "other chat"}]
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "no history"}],
                                   extra_body=mnx(subject_id="s", chat_id="a", history=False))
    assert gateway.forwarded()[-1]["body"]["messages"] == [{"role": "user", "content": "no history"}]


def test_log_false_stores_nothing(gateway):
    client = gateway.openai()
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "secret"}],
                                   extra_body=mnx(subject_id="s", chat_id="unlogged", log=False))
    with gateway.rest() as rest:
        assert rest.get("/chat/history/read", params={"chat_id": "unlogged"}).json()["messages"] == []


def test_headers_carry_mnx_options_when_the_body_cannot(gateway):
    client = gateway.openai()
    headers = {"x-mnx-subject-id": "header-user", "x-mnx-chat-id": "header-chat"}
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "one"}],
                                   extra_headers=headers)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "two"}],
        extra_headers={**headers, "x-mnx-history": "false"})
    assert raw.headers["x-mnx-subject-id"] == "header-user"
    assert gateway.forwarded()[-1]["body"]["messages"] == [{"role": "user", "content": "two"}]
    # The body wins over a header for the same option.
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "three"}],
                                   extra_headers={**headers, "x-mnx-history": "false"},
                                   extra_body=mnx(history=True))
    assert len(gateway.forwarded()[-1]["body"]["messages"]) == 5


def test_context_is_assembled_prompt_then_state_then_history_then_request(gateway):
    with gateway.rest() as rest:
        rest.post("/prompts", json={"name": "base", "prompt_text": "PROJECT PROMPT", "is_default": True})
        rest.post("/prompts", json={"name": "vip", "prompt_text": "SUBJECT PROMPT", "scope": "subject",
                                    "scope_id": "bob", "is_default": True})
        rest.post("/prompts", json={"name": "thread", "prompt_text": "CHAT PROMPT", "scope": "chat",
                                    "scope_id": "t1", "is_default": True})
        rest.put("/state/task", headers={"x-subject-id": "bob"}, json={"value": {"step": 2, "todo": ["pay"]}})
    client = gateway.openai()
    ids = dict(subject_id="bob", chat_id="t1")
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "earlier"}],
                                   extra_body=mnx(**ids))
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "REQUEST SYSTEM"}, {"role": "user", "content": "now"}],
        extra_body=mnx(**ids, state={"load": True, "key": "task"}))
    messages = gateway.forwarded()[-1]["body"]["messages"]
    system = messages[0]
    assert system["role"] == "system"
    order = [system["content"].index(marker) for marker in
             ("PROJECT PROMPT", "SUBJECT PROMPT", "CHAT PROMPT", '"step": 2')]
    assert order == sorted(order)
    assert [m["content"] for m in messages[1:]] == ["earlier", "echo: earlier", "REQUEST SYSTEM", "now"]


def test_system_prompt_false_or_an_explicit_id(gateway):
    with gateway.rest() as rest:
        rest.post("/prompts", json={"name": "default", "prompt_text": "DEFAULT", "is_default": True})
        other = rest.post("/prompts", json={"name": "other", "prompt_text": "CHOSEN"}).json()["id"]
    client = gateway.openai()
    request = dict(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    client.chat.completions.create(**request, extra_body=mnx(system_prompt=False, history=False))
    assert gateway.forwarded()[-1]["body"]["messages"] == request["messages"]
    client.chat.completions.create(**request, extra_body=mnx(system_prompt=other, history=False))
    assert gateway.forwarded()[-1]["body"]["messages"][0] == {"role": "system", "content": "CHOSEN"}
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(**request, extra_body=mnx(system_prompt="sp_missing"))
    assert error.value.code == "prompt_not_found"


def test_missing_state_is_skipped_silently(gateway):
    gateway.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
        extra_body=mnx(subject_id="nobody", state={"load": True, "key": "none"}))
    assert gateway.forwarded()[-1]["body"]["messages"] == [{"role": "user", "content": "x"}]


def test_tool_calls_pass_through_and_history_restores_the_call_before_its_result(gateway):
    client = gateway.openai()
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    ids = mnx(subject_id="t", chat_id="tools")
    first = client.chat.completions.create(model="tool-call", tools=tools, extra_body=ids,
                                           messages=[{"role": "user", "content": "weather in Paris?"}])
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert gateway.forwarded()[-1]["body"]["tools"] == tools
    client.chat.completions.create(model="gpt-4o-mini", tools=tools, extra_body=ids,
                                   messages=[{"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    sent = gateway.forwarded()[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["id"] == call.id
    with gateway.rest() as rest:
        read = rest.get("/chat/history/read", params={"chat_id": "tools", "subject_id": "t"}).json()
    assert json.loads(read["messages"][1]["tool_calls"])[0]["function"]["name"] == "get_weather"
    assert read["messages"][2]["tool_call_id"] == call.id


def test_an_off_spec_answer_reaches_the_client_as_sent_and_is_stored_well_formed(gateway, provider):
    # Some OpenAI-compatible servers send tool-call arguments as an object and leave out "type".
    custom = {"id": "call_10", "type": "custom", "custom": {"name": "sql", "input": "select 1"}}
    off_spec = {"role": "assistant", "content": None,
                "tool_calls": [{"id": "call_9", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
                               custom]}
    provider.chat_answers[:] = [{"id": "chatcmpl-odd", "object": "chat.completion", "created": 1, "model": "canned",
                                 "choices": [{"index": 0, "message": off_spec, "finish_reason": "tool_calls"}]}]
    headers = {"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY}
    ids = {"subject_id": "t", "chat_id": "off-spec"}
    first = httpx.post(gateway.url + "/v1/chat/completions", headers=headers, json={
        "model": "canned", "messages": [{"role": "user", "content": "weather in Oslo?"}], "mnx": ids})
    assert first.status_code == 200
    assert first.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == {"city": "Oslo"}

    # The next turn replays the call as every provider reads it: JSON-text arguments, a type.
    second = httpx.post(gateway.url + "/v1/chat/completions", headers=headers, json={
        "model": "gpt-4o-mini", "messages": [{"role": "tool", "tool_call_id": "call_9", "content": "rain"}],
        "mnx": ids})
    assert second.status_code == 200
    replayed = gateway.forwarded()[-1]["body"]["messages"][1]
    assert replayed["role"] == "assistant"
    assert replayed["tool_calls"] == [{"id": "call_9", "type": "function",
                                       "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
                                      custom]  # another kind of call is kept as sent


def test_streamed_tool_calls_are_recorded_whole(gateway):
    client = gateway.openai()
    stream = client.chat.completions.create(model="tool-call", stream=True,
                                            messages=[{"role": "user", "content": "weather?"}],
                                            extra_body=mnx(subject_id="t", chat_id="stream-tools"))
    list(stream)
    with gateway.rest() as rest:
        messages = rest.get("/chat/history/read", params={"chat_id": "stream-tools"}).json()["messages"]
    assert json.loads(messages[1]["tool_calls"])[0]["function"]["arguments"] == '{"city": "Paris"}'


def test_multimodal_content_passes_through_unchanged(gateway):
    content = [{"type": "text", "text": "what is this?"},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    gateway.openai().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": content}],
                                             extra_body=mnx(subject_id="m", chat_id="img"))
    assert gateway.forwarded()[-1]["body"]["messages"][-1]["content"] == content
    gateway.openai().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "and?"}],
                                             extra_body=mnx(subject_id="m", chat_id="img"))
    assert gateway.forwarded()[-1]["body"]["messages"][0]["content"] == content


def test_other_request_fields_are_forwarded(gateway):
    gateway.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], temperature=0.3, max_tokens=42,
        response_format={"type": "json_object"}, extra_body=mnx(history=False))
    body = gateway.forwarded()[-1]["body"]
    assert (body["temperature"], body["max_tokens"], body["response_format"]) == (0.3, 42, {"type": "json_object"})


def test_claude_model_goes_through_litellm_to_anthropic_with_the_callers_key(gateway):
    client = gateway.openai()
    ids = mnx(subject_id="c", chat_id="claude-chat")
    answer = client.chat.completions.create(model="claude-3-5-haiku-latest", max_tokens=100, extra_body=ids,
                                            messages=[{"role": "user", "content": "hi claude"}],
                                            extra_headers={"x-anthropic-key": "sk-ant-caller"})
    assert answer.choices[0].message.content == "echo: hi claude"
    forwarded = gateway.forwarded()[-1]
    assert forwarded["path"] == "/v1/messages"
    assert forwarded["headers"]["x-api-key"] == "sk-ant-caller"
    stream = client.chat.completions.create(model="claude-3-5-haiku-latest", max_tokens=100, stream=True,
                                            extra_body=ids, messages=[{"role": "user", "content": "again"}],
                                            extra_headers={"x-anthropic-key": "sk-ant-caller"})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "echo: again"
    # History written through one provider is replayed to the other.
    anthropic_messages = gateway.forwarded()[-1]["body"]["messages"]
    assert anthropic_messages[0]["role"] == "user" and len(anthropic_messages) == 3


def test_gemini_model_goes_through_litellm_to_google_with_the_callers_key(gateway):
    answer = gateway.openai().chat.completions.create(model="gemini-2.0-flash",
                                                      messages=[{"role": "user", "content": "hi gemini"}],
                                                      extra_headers={"x-google-key": "goog-caller-key"})
    assert answer.choices[0].message.content == "echo: hi gemini"
    forwarded = gateway.forwarded()[-1]
    assert forwarded["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert forwarded["headers"]["x-goog-api-key"] == "goog-caller-key"
    assert forwarded["body"]["contents"][-1]["parts"][0]["text"] == "hi gemini"


def test_bearer_is_the_provider_key_when_x_mnexium_key_carries_the_project_key(gateway):
    response = httpx.post(gateway.url + "/v1/chat/completions",
                          headers={"x-mnexium-key": KEY, "authorization": "Bearer sk-from-bearer"},
                          json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 200
    assert gateway.forwarded()[-1]["headers"]["authorization"] == "Bearer sk-from-bearer"


def test_configured_provider_key_is_used_when_the_request_has_none(start_gateway, storage_sqlite, provider):
    gw = start_gateway(storage_sqlite, providers={
        "openai": {"api_base": provider.url + "/v1", "api_key": "sk-configured"}})
    response = httpx.post(gw.url + "/api/v1/chat/completions", headers={"x-mnexium-key": KEY},
                          json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 200
    assert gw.forwarded()[-1]["headers"]["authorization"] == "Bearer sk-configured"
