"""A provider that drops its stream mid-answer, on every surface and both paths.

Fault injected: the fake provider (model ``cut-stream``) sends the first piece of a
streamed answer, then drops the connection without finishing. By then the gateway has
answered 200 and relayed the piece, so the only way to tell the client is the surface's
own in-band error event, on which its SDK raises. A half answer must never be taken for
a whole one: no history is written and no learn job is queued from it.

tests/test_interrupted_streams.py covers the SDKs on the native paths (Messages to
Anthropic, Responses and Chat Completions to OpenAI, Gemini to Google). Here: the raw
stream on all eight surface/path pairs, with learning asked for, and the SDKs on the
paths through LiteLLM's translation.
"""

from __future__ import annotations

import secrets

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types

from tests.conftest import KEY, PROVIDER_KEY
from tests.faults.conftest import (PROVIDER_HEADERS, history_of, in_band_error_code, jobs_of, sse_data,
                                   turn_request, until_stable)

INTERRUPTED = "upstream_stream_interrupted"

# (surface, model): the provider the model names, natively or through LiteLLM.
PATHS = [
    ("chat", "cut-stream"),                  # native: OpenAI-compatible
    ("responses", "cut-stream"),             # native: OpenAI-compatible
    ("messages", "anthropic/cut-stream"),    # native: Anthropic
    ("gemini", "gemini-cut-stream"),         # native: Google
    ("chat", "anthropic/cut-stream"),        # LiteLLM: Chat Completions -> Anthropic
    ("responses", "anthropic/cut-stream"),   # LiteLLM: Responses -> Anthropic
    ("messages", "cut-stream"),              # LiteLLM: Messages -> OpenAI-compatible
    ("gemini", "cut-stream"),                # LiteLLM: Gemini -> OpenAI-compatible
]


@pytest.fixture(scope="module")
def gw(module_gateway):
    return module_gateway()


def nothing_recorded(gw, chat: str) -> bool:
    return history_of(gw.url, chat) == [] and until_stable(lambda: jobs_of(gw.url) == [], seconds=0.3)


@pytest.mark.parametrize("surface, model", PATHS)
def test_a_stream_the_provider_drops_ends_with_the_surfaces_error_event_and_records_nothing(gw, surface, model):
    chat = f"cut-{secrets.token_hex(4)}"
    path, body, extra = turn_request(surface, model, chat, stream=True, learn="force")
    response = httpx.post(gw.url + path, json=body, headers={"x-mnexium-key": KEY, **PROVIDER_HEADERS, **extra},
                          timeout=30)
    assert response.status_code == 200, response.text  # the stream had begun
    events = sse_data(response.text)
    assert len(events) >= 2, response.text  # what the provider sent got through, then the error
    assert in_band_error_code(surface, events[-1]) == INTERRUPTED, events[-1]
    assert "[DONE]" not in events  # nothing that says "complete"
    assert not any(isinstance(e, dict) and e.get("type") in ("response.completed", "message_stop") for e in events)
    assert nothing_recorded(gw, chat)


def test_the_openai_sdk_raises_on_a_dropped_stream_translated_from_anthropic(gw):
    stream = gw.openai().chat.completions.create(
        model="anthropic/cut-stream", stream=True, max_tokens=10, messages=[{"role": "user", "content": "x"}],
        extra_headers={"x-anthropic-key": PROVIDER_KEY}, extra_body={"mnx": {"chat_id": "cut-sdk-chat",
                                                                             "learn": "force"}})
    with pytest.raises(openai.APIError) as error:
        list(stream)
    assert "ended before the answer was complete" in str(error.value)
    assert nothing_recorded(gw, "cut-sdk-chat")


def test_the_openai_sdk_sees_a_responses_error_event_on_a_dropped_stream_translated_from_anthropic(gw):
    events = list(gw.openai().responses.create(
        model="anthropic/cut-stream", input="x", stream=True, extra_headers={"x-anthropic-key": PROVIDER_KEY},
        extra_body={"mnx": {"chat_id": "cut-sdk-responses", "learn": "force"}}))
    assert events[-1].type == "error" and events[-1].code == INTERRUPTED
    assert not any(e.type == "response.completed" for e in events)
    assert nothing_recorded(gw, "cut-sdk-responses")


def test_the_anthropic_sdk_raises_on_a_dropped_stream_translated_from_openai(gw):
    client = anthropic.Anthropic(base_url=gw.url, api_key="sk-ant", max_retries=0,
                                 default_headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY})
    with pytest.raises(anthropic.APIError) as error:
        with client.messages.stream(model="cut-stream", max_tokens=10, messages=[{"role": "user", "content": "x"}],
                                    extra_body={"mnx": {"chat_id": "cut-sdk-messages", "learn": "force"}}) as stream:
            list(stream.text_stream)
    assert "ended before the answer was complete" in str(error.value)
    assert nothing_recorded(gw, "cut-sdk-messages")


def test_the_google_sdk_raises_on_a_dropped_stream_translated_from_openai(gw):
    client = genai.Client(api_key="goog", http_options=types.HttpOptions(base_url=gw.url, headers={
        "x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY, "x-mnx-chat-id": "cut-sdk-gemini", "x-mnx-learn": "force"}))
    with pytest.raises(Exception) as error:
        list(client.models.generate_content_stream(model="cut-stream", contents="x"))
    assert "ended before the answer was complete" in str(error.value)
    assert nothing_recorded(gw, "cut-sdk-gemini")
