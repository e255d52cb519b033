"""The Gemini-native surface through the official google-genai SDK, unmodified but for base URL and headers."""

from __future__ import annotations

import httpx
import pytest
from google import genai
from google.genai import errors, types

from tests.conftest import KEY, PROVIDER_KEY

GOOGLE_KEY = "goog-caller-key"


def client_for(gateway, **headers):
    return genai.Client(api_key=GOOGLE_KEY, http_options=types.HttpOptions(
        base_url=gateway.url, headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY, **headers}))


def mnx_headers(chat="gem-chat", **more):
    return {"x-mnx-subject-id": "gina", "x-mnx-chat-id": chat, **more}


def test_generate_content_forwarded_natively_with_context_in_system_instruction(gateway):
    with gateway.rest() as rest:
        rest.post("/prompts", json={"name": "p", "prompt_text": "PROJECT PROMPT", "is_default": True})
    client = client_for(gateway, **mnx_headers())
    answer = client.models.generate_content(
        model="gemini-2.0-flash", contents="hello gemini",
        config=types.GenerateContentConfig(system_instruction="BE KIND", temperature=0.2))
    assert answer.text == "echo: hello gemini"
    forwarded = gateway.forwarded()[-1]
    # The SDK called /v1/models/...; the upstream is reached at its configured (v1beta) base.
    assert forwarded["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert forwarded["headers"]["x-goog-api-key"] == GOOGLE_KEY
    body = forwarded["body"]
    assert [p["text"] for p in body["systemInstruction"]["parts"]] == ["PROJECT PROMPT", "BE KIND"]
    assert body["generationConfig"]["temperature"] == 0.2
    assert body["contents"] == [{"role": "user", "parts": [{"text": "hello gemini"}]}]


def test_streamed_answer_and_history_replayed_as_contents(gateway):
    client = client_for(gateway, **mnx_headers(chat="gem-stream"))
    text = "".join(chunk.text or "" for chunk in client.models.generate_content_stream(
        model="gemini-2.0-flash", contents="first"))
    assert text == "echo: first"
    client.models.generate_content(model="gemini-2.0-flash", contents="second")
    assert gateway.forwarded()[-1]["body"]["contents"] == [
        {"role": "user", "parts": [{"text": "first"}]},
        {"role": "model", "parts": [{"text": "echo: first"}]},
        {"role": "user", "parts": [{"text": "second"}]},
    ]
    with gateway.rest() as rest:
        read = rest.get("/chat/history/read", params={"chat_id": "gem-stream"}).json()["messages"]
    assert [m["message"] for m in read] == ["first", "echo: first", "second", "echo: second"]


def test_ids_come_back_in_headers_only(gateway):
    response = httpx.post(gateway.url + "/v1beta/models/gemini-2.0-flash:generateContent",
                          headers={"x-mnexium-key": KEY, "x-goog-api-key": GOOGLE_KEY, **mnx_headers(chat="h")},
                          json={"contents": [{"role": "user", "parts": [{"text": "x"}]}]})
    assert response.headers["x-mnx-chat-id"] == "h"
    assert "mnx" not in response.json()


def test_function_calls_round_trip_through_history(gateway):
    client = client_for(gateway, **mnx_headers(chat="gem-tools"))
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(name="get_weather", parameters={
        "type": "OBJECT", "properties": {"city": {"type": "STRING"}}})])
    first = client.models.generate_content(model="gemini-tool-call", contents="weather?",
                                           config=types.GenerateContentConfig(tools=[tool]))
    assert first.function_calls[0].name == "get_weather"
    client.models.generate_content(model="gemini-2.0-flash", contents=types.Content(role="user", parts=[
        types.Part.from_function_response(name="get_weather", response={"forecast": "sunny"})]))
    sent = gateway.forwarded()[-1]["body"]["contents"]
    assert [c["role"] for c in sent] == ["user", "model", "user"]
    assert sent[1]["parts"] == [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]
    assert sent[2]["parts"][0]["functionResponse"]["response"] == {"forecast": "sunny"}


def test_a_gpt_model_on_the_gemini_surface_is_translated_by_litellm(gateway):
    client = client_for(gateway, **mnx_headers(chat="gem-gpt"))
    answer = client.models.generate_content(model="gpt-4o-mini", contents="hi gpt")
    assert answer.text == "echo: hi gpt"
    forwarded = gateway.forwarded()[-1]
    assert forwarded["path"] == "/v1/chat/completions"
    assert forwarded["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    text = "".join(c.text or "" for c in client.models.generate_content_stream(model="gpt-4o-mini",
                                                                               contents="stream gpt"))
    assert text == "echo: stream gpt"


def test_history_from_chat_completions_replays_on_gemini(gateway):
    gateway.openai().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "via chat"}],
                                             extra_body={"mnx": {"subject_id": "gina", "chat_id": "gem-cross"}})
    client = client_for(gateway, **mnx_headers(chat="gem-cross"))
    client.models.generate_content(model="gemini-2.0-flash", contents="via gemini")
    assert gateway.forwarded()[-1]["body"]["contents"] == [
        {"role": "user", "parts": [{"text": "via chat"}]},
        {"role": "model", "parts": [{"text": "echo: via chat"}]},
        {"role": "user", "parts": [{"text": "via gemini"}]},
    ]


def test_errors_come_back_in_the_gemini_envelope(gateway):
    client = client_for(gateway)
    with pytest.raises(errors.ClientError) as failed:
        client.models.generate_content(model="fail-429", contents="x")
    assert failed.value.code == 429
    stranger = genai.Client(api_key=GOOGLE_KEY, http_options=types.HttpOptions(
        base_url=gateway.url, headers={"x-mnexium-key": "mnx_live_wrong"}))
    with pytest.raises(errors.ClientError) as denied:
        stranger.models.generate_content(model="gemini-2.0-flash", contents="x")
    assert (denied.value.code, denied.value.status) == (401, "UNAUTHENTICATED")


@pytest.mark.parametrize("body, reason", [
    ({"contents": []}, "invalid_contents"),
    ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "invalid_contents"),
    ({"contents": [{"role": "user", "parts": []}]}, "invalid_contents"),
    ({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "systemInstruction": "plain"},
     "invalid_systemInstruction"),
])
def test_invalid_bodies_are_400_and_forward_nothing(gateway, body, reason):
    response = httpx.post(gateway.url + "/v1beta/models/gemini-2.0-flash:generateContent", json=body,
                          headers={"x-mnexium-key": KEY, "x-goog-api-key": GOOGLE_KEY})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["status"], error["details"][0]["reason"]) == (400, "INVALID_ARGUMENT", reason)
    assert gateway.forwarded() == []


def test_missing_google_key_and_unknown_methods(gateway):
    missing = httpx.post(gateway.url + "/v1beta/models/gemini-2.0-flash:generateContent",
                         headers={"x-mnexium-key": KEY}, json={"contents": [{"parts": [{"text": "x"}]}]})
    assert missing.status_code == 400 and missing.json()["error"]["details"][0]["reason"] == "google_key_required"
    unknown = httpx.post(gateway.url + "/v1beta/models/gemini-2.0-flash:countTokens",
                         headers={"x-mnexium-key": KEY, "x-goog-api-key": GOOGLE_KEY},
                         json={"contents": [{"parts": [{"text": "x"}]}]})
    assert unknown.status_code == 404
    assert gateway.forwarded() == []


def test_a_model_in_the_url_that_could_rewrite_the_provider_url_is_refused(gateway):
    """The model from the URL path goes into the provider's URL: a "?", "#", "/" or ".." in it
    (decoded from %3F, %23, %2F) could add a query (a key, alt=sse) or walk to another path with
    the Google key, so it is a 400 naming the model, and nothing is forwarded."""
    headers = {"x-mnexium-key": KEY, "x-goog-api-key": GOOGLE_KEY}
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    for target in ("gemini-pro%3Fkey=x%26alt=sse%23", "gemini..pro", "gemini%0A-pro", "gemini%20pro"):
        refused = httpx.post(f"{gateway.url}/v1beta/models/{target}:generateContent", json=body, headers=headers)
        assert refused.status_code == 400, (target, refused.text)
        assert refused.json()["error"]["details"][0]["reason"] == "invalid_model"
    # An encoded "/" is a path separator once decoded: no route takes it.
    walked = httpx.post(f"{gateway.url}/v1beta/models/gemini%2F..%2F..%2Fv1%2Fchat%2Fcompletions%23:generateContent",
                        json=body, headers=headers)
    assert walked.status_code == 404
    assert gateway.forwarded() == []
    plain = httpx.post(gateway.url + "/v1beta/models/gemini-2.0-flash:generateContent", json=body, headers=headers)
    assert plain.status_code == 200
    assert gateway.forwarded()[-1]["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"
