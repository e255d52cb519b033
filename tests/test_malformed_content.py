"""Malformed message content: a 400 in the surface's own error shape, nothing stored or forwarded.

Each surface checks the content shapes its conversion to history (and history's conversion to the
other surfaces) reads: content is a string or an array of objects, a part's type is a string, text
fields are strings, image and tool fields have the types read. Unknown part types and extra keys
pass through untouched, and history stored through one surface replays on every other.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import KEY, PROVIDER_KEY

ANTHROPIC_KEY = "sk-ant-caller-key"
GOOGLE_KEY = "goog-caller-key"
SUBJECT = "victim"
GEMINI_PATH = "/v1beta/models/gemini-2.0-flash:generateContent"


def post_chat(gateway, body):
    return httpx.post(gateway.url + "/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {KEY}", "x-openai-key": PROVIDER_KEY})


def post_responses(gateway, body):
    return httpx.post(gateway.url + "/v1/responses", json=body,
                      headers={"authorization": f"Bearer {KEY}", "x-openai-key": PROVIDER_KEY})


def post_messages(gateway, body):
    return httpx.post(gateway.url + "/v1/messages", json=body,
                      headers={"x-mnexium-key": KEY, "x-api-key": ANTHROPIC_KEY})


def post_gemini(gateway, body, chat="g1"):
    return httpx.post(gateway.url + GEMINI_PATH, json=body,
                      headers={"x-mnexium-key": KEY, "x-goog-api-key": GOOGLE_KEY,
                               "x-mnx-subject-id": SUBJECT, "x-mnx-chat-id": chat})


def assert_nothing_stored_or_forwarded(gateway):
    assert gateway.forwarded() == []
    with gateway.rest() as rest:
        assert rest.get("/chat/history/list", params={"subject_id": SUBJECT}).json()["chats"] == []


MNX = {"subject_id": SUBJECT, "chat_id": "c1"}


# -- /v1/chat/completions ---------------------------------------------------------------------

def chat(*messages):
    return {"model": "gpt-4o", "messages": list(messages), "mnx": MNX}


def user(content):
    return {"role": "user", "content": content}


@pytest.mark.parametrize("body, param", [
    (chat({"role": [], "content": "hi"}), "messages[0].role"),
    (chat({"role": {"user": 1}, "content": "hi"}), "messages[0].role"),
    (chat(user(["hi"])), "messages[0].content[0]"),
    (chat(user([1])), "messages[0].content[0]"),
    (chat(user([None])), "messages[0].content[0]"),
    (chat(user([[1]])), "messages[0].content[0]"),
    (chat(user([{"text": "no type"}])), "messages[0].content[0].type"),
    (chat(user([{"type": 5, "text": "x"}])), "messages[0].content[0].type"),
    (chat(user([{"type": "text", "text": "ok"}, {"type": "text", "text": 5}])), "messages[0].content[1].text"),
    (chat(user([{"type": "text"}])), "messages[0].content[0].text"),
    (chat(user([{"type": "image_url", "image_url": "https://example.com/cat.png"}])),
     "messages[0].content[0].image_url"),
    (chat(user([{"type": "image_url", "image_url": {"url": 5}}])), "messages[0].content[0].image_url.url"),
    (chat(user([{"type": "image_url", "image_url": {"url": {"href": "https://example.com/cat.png"}}}])),
     "messages[0].content[0].image_url.url"),
    (chat({"role": "assistant", "content": None,
           "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
          {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": {"a": 1}}]}),
     "messages[1].content[0].text"),
    (chat({"role": "user", "content": "hi", "name": 5}), "messages[0].name"),
], ids=lambda value: value if isinstance(value, str) else "")
def test_malformed_chat_content_is_400_invalid_messages(shared_gateway, body, param):
    response = post_chat(shared_gateway, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_messages", param)
    assert param in error["message"]
    assert_nothing_stored_or_forwarded(shared_gateway)


# -- /v1/responses ----------------------------------------------------------------------------

def responses(*items):
    return {"model": "gpt-4o", "input": list(items), "mnx": MNX}


def item(content, role="user"):
    return {"role": role, "content": content}


@pytest.mark.parametrize("body, param", [
    (responses(item([1])), "input[0].content[0]"),
    (responses(item(["hi"])), "input[0].content[0]"),
    (responses(item([None])), "input[0].content[0]"),
    (responses(item(5)), "input[0].content"),
    (responses(item(True)), "input[0].content"),
    (responses(item(None)), "input[0].content"),
    (responses(item({"type": "input_text", "text": "x"})), "input[0].content"),
    (responses(item([{"text": "no type"}])), "input[0].content[0].type"),
    (responses(item([{"type": "input_text", "text": 5}])), "input[0].content[0].text"),
    (responses(item([{"type": "output_text", "text": ["x"]}], role="assistant"), item("next")),
     "input[0].content[0].text"),
    (responses(item([{"type": "input_image", "image_url": 5}])), "input[0].content[0].image_url"),
    (responses(item([{"type": "input_image", "image_url": {"url": 5}}])), "input[0].content[0].image_url"),
    (responses(item("hi", role=[])), "input[0].role"),
    (responses(item("hi", role="wizard")), "input[0].role"),
    (responses({"type": 5, "role": "user", "content": "hi"}), "input[0].type"),
    (responses({"type": "function_call_output", "call_id": 5, "output": "sunny"}), "input[0].call_id"),
    (responses({"type": "function_call", "call_id": "c", "name": ["f"], "arguments": "{}"}), "input[0].name"),
], ids=lambda value: value if isinstance(value, str) else "")
def test_malformed_responses_input_is_400_invalid_input(shared_gateway, body, param):
    response = post_responses(shared_gateway, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_input", param)
    assert param in error["message"]
    assert_nothing_stored_or_forwarded(shared_gateway)


# -- /v1/messages -----------------------------------------------------------------------------

def messages(*turns, **extra):
    return {"model": "claude-3", "max_tokens": 5, "messages": list(turns), "mnx": MNX, **extra}


def block(**fields):
    return {"role": "user", "content": [fields]}


@pytest.mark.parametrize("body, code, path", [
    (messages(block(type="image", source="x")), "invalid_messages", "messages[0].content[0].source"),
    (messages(block(type="image", source={"type": "url", "url": 5})), "invalid_messages",
     "messages[0].content[0].source.url"),
    (messages(block(type="image", source={"type": "url", "url": {"href": "https://example.com/cat.png"}})),
     "invalid_messages", "messages[0].content[0].source.url"),
    (messages(block(type="image", source={"type": "base64", "media_type": "image/png", "data": 5})),
     "invalid_messages", "messages[0].content[0].source.data"),
    (messages(block(type="text", text=5)), "invalid_messages", "messages[0].content[0].text"),
    (messages(block(type="text")), "invalid_messages", "messages[0].content[0].text"),
    (messages({"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "text", "text": 5}]},
              {"role": "user", "content": "again"}), "invalid_messages", "messages[1].content[0].text"),
    (messages(block(type="tool_result", tool_use_id="toolu_1", content=[{"type": "text", "text": 5}])),
     "invalid_messages", "messages[0].content[0].content[0].text"),
    (messages(block(type="tool_result", tool_use_id="toolu_1", content=[1])), "invalid_messages",
     "messages[0].content[0].content[0]"),
    (messages(block(type="tool_result", tool_use_id=["toolu_1"], content="sunny")), "invalid_messages",
     "messages[0].content[0].tool_use_id"),
    (messages({"role": "user", "content": "hi"}, system=[{"type": "text", "text": 5}]), "invalid_system",
     "system[0].text"),
], ids=lambda value: value if isinstance(value, str) and "[" in value else "")
def test_malformed_messages_content_is_400_in_the_anthropic_shape(shared_gateway, body, code, path):
    response = post_messages(shared_gateway, body)
    assert response.status_code == 400
    payload = response.json()
    assert payload["type"] == "error"
    assert (payload["error"]["type"], payload["error"]["code"]) == ("invalid_request_error", code)
    assert path in payload["error"]["message"]
    assert_nothing_stored_or_forwarded(shared_gateway)


# -- Gemini generateContent -------------------------------------------------------------------

def part(**fields):
    return {"contents": [{"role": "user", "parts": [fields]}]}


@pytest.mark.parametrize("body, reason, path", [
    ({"contents": [{"parts": [{"text": 5}]}]}, "invalid_contents", "contents[0].parts[0].text"),
    (part(text=None), "invalid_contents", "contents[0].parts[0] has no data"),
    (part(), "invalid_contents", "contents[0].parts[0] has no data"),
    (part(inlineData="aGk="), "invalid_contents", "contents[0].parts[0].inlineData"),
    (part(inlineData={"mimeType": "image/png", "data": 5}), "invalid_contents",
     "contents[0].parts[0].inlineData.data"),
    (part(functionResponse="sunny"), "invalid_contents", "contents[0].parts[0].functionResponse"),
    (part(functionResponse={"name": ["get_weather"], "response": {}}), "invalid_contents",
     "contents[0].parts[0].functionResponse.name"),
    ({"contents": [{"role": "user", "parts": [{"text": "hi"}]}, {"role": "model", "parts": [{"functionCall": 1}]},
                   {"role": "user", "parts": [{"text": "again"}]}]}, "invalid_contents",
     "contents[1].parts[0].functionCall"),
    ({"contents": [{"parts": [{"text": "hi"}]}], "systemInstruction": {"parts": 1}}, "invalid_systemInstruction",
     "systemInstruction.parts"),
    ({"contents": [{"parts": [{"text": "hi"}]}], "systemInstruction": {"parts": [1]}}, "invalid_systemInstruction",
     "systemInstruction.parts"),
    ({"contents": [{"parts": [{"text": "hi"}]}], "systemInstruction": {"parts": [{"text": 5}]}},
     "invalid_systemInstruction", "systemInstruction.parts[0].text"),
], ids=lambda value: value if isinstance(value, str) and "." in value else "")
def test_malformed_gemini_parts_are_400_in_the_gemini_shape(shared_gateway, body, reason, path):
    response = post_gemini(shared_gateway, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["status"], error["details"][0]["reason"]) == (400, "INVALID_ARGUMENT", reason)
    assert path in error["message"]
    assert_nothing_stored_or_forwarded(shared_gateway)


# -- history stored through one surface replays on the others ---------------------------------

EARLIER = "the earlier turn's text"


def forwarded_text(gateway) -> str:
    return repr(gateway.forwarded()[-1]["body"])


def test_a_chat_with_unknown_part_types_continues_on_messages_gemini_and_responses(gateway):
    """Parts of a type the gateway does not convert, with fields of their own, are stored as sent and
    left out when the chat is replayed to another provider; the text around them still travels."""
    odd_parts = [
        {"type": "text", "text": EARLIER, "cache_control": {"type": "ephemeral"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}, "image_url": "not-an-image"},
        {"type": "file", "file": {"file_id": "file-1"}, "image_url": {"url": 7}},
    ]
    first = post_chat(gateway, {"model": "gpt-4o", "messages": [user(odd_parts)],
                                "mnx": {"subject_id": "s1", "chat_id": "p1"}})
    assert first.status_code == 200
    assert gateway.forwarded()[-1]["body"]["messages"][-1]["content"] == odd_parts

    claude = post_messages(gateway, {"model": "claude-gateway-test", "max_tokens": 64,
                                     "messages": [user("continue on claude")],
                                     "mnx": {"subject_id": "s1", "chat_id": "p1"}})
    assert claude.status_code == 200, claude.text
    sent = gateway.forwarded()[-1]["body"]["messages"]
    assert sent[0] == {"role": "user", "content": [{"type": "text", "text": EARLIER}]}
    assert sent[-1] == {"role": "user", "content": "continue on claude"}

    gemini = httpx.post(gateway.url + GEMINI_PATH, json={"contents": [{"parts": [{"text": "continue on gemini"}]}]},
                        headers={"x-mnexium-key": KEY, "x-goog-api-key": GOOGLE_KEY,
                                 "x-mnx-subject-id": "s1", "x-mnx-chat-id": "p1"})
    assert gemini.status_code == 200, gemini.text
    contents = gateway.forwarded()[-1]["body"]["contents"]
    assert contents[0] == {"role": "user", "parts": [{"text": EARLIER}]}
    assert contents[-1]["parts"][-1] == {"text": "continue on gemini"}

    responses_answer = post_responses(gateway, {"model": "gpt-4o", "input": "continue on responses",
                                                "mnx": {"subject_id": "s1", "chat_id": "p1", "history": True}})
    assert responses_answer.status_code == 200, responses_answer.text
    replayed = gateway.forwarded()[-1]["body"]["input"]
    assert replayed[0] == {"role": "user", "content": [{"type": "input_text", "text": EARLIER}]}
    assert not any(p.get("type") == "input_image" for i in replayed[:-1] for p in i.get("content") or [])
    assert replayed[-1] == {"role": "user", "content": "continue on responses"}
