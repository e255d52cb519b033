"""A provider stream that breaks off mid-answer, on every surface: the client is told, nothing is recorded."""

from __future__ import annotations

import anthropic
import pytest
from google import genai
from google.genai import types

from tests.conftest import KEY, PROVIDER_KEY


def history_of(gateway, chat_id):
    with gateway.rest() as rest:
        return rest.get("/chat/history/read", params={"chat_id": chat_id}).json()["messages"]


def test_messages_surface_raises_in_the_anthropic_sdk(gateway):
    client = anthropic.Anthropic(base_url=gateway.url, api_key="sk-ant", max_retries=0,
                                 default_headers={"x-mnexium-key": KEY})
    with pytest.raises(anthropic.APIError) as error:
        with client.messages.stream(model="anthropic/cut-stream", max_tokens=10,
                                    extra_body={"mnx": {"chat_id": "cut-m"}},
                                    messages=[{"role": "user", "content": "x"}]) as stream:
            list(stream.text_stream)
    assert "ended before the answer was complete" in str(error.value)
    assert history_of(gateway, "cut-m") == []


def test_responses_surface_ends_with_a_responses_error_event(gateway):
    events = list(gateway.openai().responses.create(model="cut-stream", input="x", stream=True,
                                                    extra_body={"mnx": {"chat_id": "cut-r"}}))
    assert events[-1].type == "error"
    assert "ended before the answer was complete" in events[-1].message
    assert not any(e.type == "response.completed" for e in events)
    assert history_of(gateway, "cut-r") == []


def test_gemini_surface_reports_the_failure(gateway):
    client = genai.Client(api_key="goog", http_options=types.HttpOptions(
        base_url=gateway.url, headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY, "x-mnx-chat-id": "cut-g"}))
    with pytest.raises(Exception) as error:
        list(client.models.generate_content_stream(model="gemini-cut-stream", contents="x"))
    assert "ended before the answer was complete" in str(error.value)
    assert history_of(gateway, "cut-g") == []
