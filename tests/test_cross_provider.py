"""Cross-provider continuity: learned on one surface and provider, recalled on every other.

Each client is the provider's official SDK, unmodified but for base URL and headers.
"""

from __future__ import annotations

import anthropic
from google import genai
from google.genai import types

from gateway.history import content_text
from tests.conftest import KEY, wait_until

SUBJECT = "traveller"


def learned_texts(gateway) -> list[str]:
    with gateway.rest() as rest:
        return [m["text"] for m in rest.get("/memories", params={"subject_id": SUBJECT}).json()["data"]]


def test_a_fact_learned_through_gpt_is_recalled_by_claude_gemini_and_responses(gateway):
    gateway.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "By the way, my favorite city is Kyoto."}],
        extra_body={"mnx": {"subject_id": SUBJECT, "chat_id": "gpt-chat", "learn": True}})
    assert wait_until(lambda: learned_texts(gateway) == ["User's favorite city is Kyoto"])

    recall = {"x-mnx-subject-id": SUBJECT, "x-mnx-recall": "true", "x-mnx-learn": "false"}
    claude = anthropic.Anthropic(base_url=gateway.url, api_key="sk-ant-caller", max_retries=0,
                                 default_headers={"x-mnexium-key": KEY, **recall})
    claude.messages.create(model="claude-gateway-test", max_tokens=64,
                           messages=[{"role": "user", "content": "Which city should I visit again?"}])
    assert "User's favorite city is Kyoto" in content_text(gateway.forwarded()[-1]["body"]["system"])

    gemini = genai.Client(api_key="goog-caller", http_options=types.HttpOptions(
        base_url=gateway.url, headers={"x-mnexium-key": KEY, **recall}))
    gemini.models.generate_content(model="gemini-2.0-flash", contents="Plan a trip to my favorite city")
    instruction = gateway.forwarded()[-1]["body"]["systemInstruction"]["parts"]
    assert any("User's favorite city is Kyoto" in part["text"] for part in instruction)

    gateway.openai().responses.create(model="gpt-4o-mini", input="What is my favorite city?",
                                      extra_body={"mnx": {"subject_id": SUBJECT, "recall": True, "learn": False}})
    assert "User's favorite city is Kyoto" in gateway.forwarded()[-1]["body"]["instructions"]


def test_a_fact_learned_from_a_streamed_claude_turn_is_recalled_through_chat_completions(gateway):
    claude = anthropic.Anthropic(base_url=gateway.url, api_key="sk-ant-caller", max_retries=0,
                                 default_headers={"x-mnexium-key": KEY})
    with claude.messages.stream(model="claude-gateway-test", max_tokens=64,
                                messages=[{"role": "user", "content": "I live in Porto with my partner."}],
                                extra_body={"mnx": {"subject_id": SUBJECT, "learn": True}}) as stream:
        assert stream.get_final_text() == "echo: I live in Porto with my partner."
    assert wait_until(lambda: learned_texts(gateway) == ["User lives in Porto with their partner"])
    gateway.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Where do I live?"}],
        extra_body={"mnx": {"subject_id": SUBJECT, "recall": True, "learn": False}})
    assert "User lives in Porto" in gateway.forwarded()[-1]["body"]["messages"][0]["content"]
