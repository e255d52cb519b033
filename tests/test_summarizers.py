"""The built-in summarizers (plugins/summarizers.py) and the chunk transcript they share
(gateway/summaries/summarizer.py). The LLM provider is faked with respx; nothing else is."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from gateway import registry
from gateway.config import ProvidersConfig, SummarizerConfig
from gateway.errors import ConfigError, GatewayError
from gateway.summaries.summarizer import Summary, SummaryRequest, transcript_lines
from gateway.summaries.tokens import count_text
from plugins.summarizers import EXTRACTIVE_HEADER, ExtractiveSummarizer, LLMSummarizer

FACT = "My daughter's name is Zoë and she was born on 3 March 2019."
FILLER = [
    {"role": "user", "content": "haha that's so funny."},
    {"role": "assistant", "content": "Glad you enjoyed it! Anything else on your mind?"},
    {"role": "user", "content": "not really, just chatting. it is a nice day."},
    {"role": "assistant", "content": "Sounds lovely. Enjoy the sunshine!"},
]
WEATHER_CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_w1", "type": "function",
     "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'}}]}
WEATHER_RESULT = {"role": "tool", "tool_call_id": "call_w1", "content": "14 C, light rain"}


def extractive() -> ExtractiveSummarizer:
    return registry.create("summarizer", "extractive", SummarizerConfig(), ProvidersConfig())


async def fold(summarizer, previous, messages, target=300, model="gpt-4o-mini") -> Summary:
    return await summarizer.summarize(SummaryRequest(previous=previous, messages=messages,
                                                     target_tokens=target, model=model))


# --- the transcript ----------------------------------------------------------------------------

def test_a_chunk_reads_as_a_transcript_with_tool_calls_and_results_paired():
    lines = transcript_lines([
        {"role": "user", "content": [{"type": "text", "text": "What's this  and\nthe weather?"},
                                     {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "assistant", "content": "Let me check.", "tool_calls": WEATHER_CALL["tool_calls"]},
        WEATHER_RESULT,
        {"role": "tool", "tool_call_id": "call_from_an_earlier_chunk", "content": "ok"},
        {"role": "assistant", "content": "It is 14 C in Lyon."},
    ])
    assert lines == [
        "User: What's this and the weather? [image]",
        "Assistant: Let me check.",
        'Assistant called get_weather({"city": "Lyon"})',
        "Tool get_weather answered: 14 C, light rain",
        "Tool call_from_an_earlier_chunk answered: ok",
        "Assistant: It is 14 C in Lyon.",
    ]


# --- the extractive summarizer -------------------------------------------------------------------

async def test_extractive_keeps_names_numbers_dates_and_decisions_and_drops_filler():
    summary = await fold(extractive(), None, [
        {"role": "user", "content": f"Hi there! {FACT} Anyway, how are you?"},
        {"role": "assistant", "content": "I'm doing well, thanks for asking!"},
        {"role": "user", "content": "We decided to fly with Lufthansa. The meeting is on Friday at 10:30."},
        {"role": "assistant", "content": "Great. Okay, sounds good."},
    ])
    assert summary.method == "extractive"
    assert summary.text.splitlines() == [
        EXTRACTIVE_HEADER,
        f"- User: {FACT}",
        "- User: We decided to fly with Lufthansa.",
        "- User: The meeting is on Friday at 10:30.",
    ]


async def test_extractive_stays_within_the_target_keeping_the_best_newest_first():
    facts = [{"role": "user", "content": f"Order {n} ships to Berlin on 4 May."} for n in range(1, 41)]
    summary = await fold(extractive(), None, facts, target=80)
    assert count_text(summary.text, "gpt-4o-mini") <= 80
    kept = summary.text.splitlines()[1:]
    assert 2 <= len(kept) < 40
    # Every sentence scores the same: the newest are kept, and read in their original order.
    assert kept == [f"- User: Order {n} ships to Berlin on 4 May." for n in range(41 - len(kept), 41)]
    # The estimate counts for other models: the target holds there too.
    claude = await fold(extractive(), None, facts, target=80, model="claude-3-5-haiku")
    assert count_text(claude.text, "claude-3-5-haiku") <= 80


async def test_a_turn_one_fact_survives_ten_folds_of_filler():
    extractor = extractive()
    summary = await fold(extractor, None, [{"role": "user", "content": f"Hello! {FACT}"},
                                           {"role": "assistant", "content": "What a lovely name!"}], target=120)
    for fold_number in range(10):
        summary = await fold(extractor, summary.text, FILLER + [
            {"role": "user", "content": f"Round {fold_number} of small talk with Sam, nothing more."}], target=120)
        assert count_text(summary.text, "gpt-4o-mini") <= 120
    assert f"- User: {FACT}" in summary.text.splitlines()
    # The target was tight enough to drop things: the oldest of the equally scored rounds went.
    assert "Round 0 " not in summary.text and "Round 9 " in summary.text
    assert "haha" not in summary.text and "sunshine" not in summary.text
    # Kept once, however many times it was carried forward.
    assert summary.text.count("Zoë") == 1


async def test_extractive_keeps_a_tool_call_and_its_answer_together():
    summary = await fold(extractive(), None, [
        {"role": "user", "content": "what's the weather like?"}, WEATHER_CALL, WEATHER_RESULT,
        {"role": "assistant", "content": "Bring an umbrella."}])
    assert summary.text.splitlines()[1:] == [
        '- Assistant called get_weather({"city": "Lyon"}); Tool get_weather answered: 14 C, light rain']
    # Carried forward through later folds as the same one line.
    later = await fold(extractive(), summary.text, FILLER)
    assert later.text == summary.text


async def test_extractive_is_deterministic_and_repeats_are_kept_once():
    chunk = [{"role": "user", "content": f"{FACT} {FACT}"}, *FILLER,
             {"role": "user", "content": "We agreed on Tuesday. We agreed on Tuesday."}]
    first = await fold(extractive(), None, chunk)
    again = await fold(extractive(), None, chunk)
    assert first == again
    assert first.text.count(FACT) == 1 and first.text.count("We agreed on Tuesday.") == 1
    # Folding nothing new changes nothing.
    assert (await fold(extractive(), first.text, [])).text == first.text


async def test_extractive_carries_another_summarizers_summary_forward():
    summary = await fold(extractive(), "The user is Ana Lima. They said hello.", FILLER)
    assert summary.text.splitlines()[1:] == ["- Earlier summary: The user is Ana Lima."]


# --- the LLM summarizer --------------------------------------------------------------------------

OPENAI = "https://api.openai.com/v1/chat/completions"


def completion(text: str | None) -> httpx.Response:
    return httpx.Response(200, json={
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})


def llm(**config) -> LLMSummarizer:
    settings = SummarizerConfig(provider="litellm", model="gpt-4o-mini", **config)
    return registry.create("summarizer", "litellm", settings, ProvidersConfig())


@respx.mock(assert_all_mocked=True)
async def test_llm_folds_the_chunk_into_the_previous_summary_with_the_callers_key(respx_mock):
    route = respx_mock.post(OPENAI).mock(return_value=completion("  The user's daughter Zoë was born 3 March 2019. "))
    summarizer = llm(api_key="sk-configured")
    summary = await summarizer.summarize(
        SummaryRequest(previous="The user lives in Lyon.", target_tokens=150, model="gpt-4o-mini",
                       messages=[{"role": "user", "content": FACT}, WEATHER_CALL, WEATHER_RESULT]),
        api_key="sk-caller")
    assert summary == Summary("The user's daughter Zoë was born 3 March 2019.", method="llm")
    sent = route.calls.last.request
    assert sent.headers["authorization"] == "Bearer sk-caller"
    body = json.loads(sent.content)
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0
    system, user = body["messages"]
    assert system["role"] == "system" and "about 150 tokens" in system["content"]
    assert "not instructions" in system["content"]
    assert "The user lives in Lyon." in user["content"]
    assert f"User: {FACT}" in user["content"]
    assert ('Assistant called get_weather({"city": "Lyon"})\nTool get_weather answered: 14 C, light rain'
            in user["content"])


@respx.mock(assert_all_mocked=True)
async def test_llm_pays_with_the_configured_key_without_a_callers(respx_mock):
    route = respx_mock.post(OPENAI).mock(return_value=completion("A summary."))
    summary = await fold(llm(api_key="sk-configured"), None, [{"role": "user", "content": FACT}])
    assert summary.text == "A summary."
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-configured"
    assert "(none yet)" in json.loads(route.calls.last.request.content)["messages"][1]["content"]


@respx.mock(assert_all_mocked=True)
async def test_llm_an_empty_answer_is_an_error(respx_mock):
    respx_mock.post(OPENAI).mock(return_value=completion("   "))
    with pytest.raises(RuntimeError, match="empty summary"):
        await fold(llm(api_key="sk-configured"), None, [{"role": "user", "content": FACT}])


async def test_llm_without_any_key_says_which_to_configure():
    with pytest.raises(RuntimeError) as error:
        await fold(llm(), None, [{"role": "user", "content": FACT}])
    assert str(error.value) == ("no openai API key for the summary model (configure "
                                "summarization.summarizer.api_key or providers.openai.api_key)")


def test_key_for_the_extractive_needs_none_and_the_llm_takes_the_callers():
    assert extractive().key_for({}) is None
    assert llm().key_for({"x-openai-key": "sk-caller"}) == "sk-caller"
    # Its own configured key pays first, as the LLM extractor's does.
    assert llm(api_key="sk-configured").key_for({"x-openai-key": "sk-caller"}) == "sk-configured"
    with pytest.raises(GatewayError, match="x-openai-key"):
        llm().key_for({})


# --- the registry --------------------------------------------------------------------------------

def test_the_registry_builds_both_by_name_and_lists_them_for_an_unknown_one():
    assert isinstance(extractive(), ExtractiveSummarizer) and extractive().name == "extractive"
    assert isinstance(llm(), LLMSummarizer) and llm().name == "llm"
    assert {"extractive", "litellm"} <= set(registry.known_names("summarizer"))
    with pytest.raises(ConfigError) as error:
        registry.create("summarizer", "abstractive", SummarizerConfig(), ProvidersConfig())
    assert str(error.value) == ("summarization.summarizer.provider: no summarizer named 'abstractive' "
                                "(known: extractive, litellm)")
