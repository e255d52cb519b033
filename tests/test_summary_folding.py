"""Where folds may end and what a turn asks for: the rules that keep a replay after a summary valid
for every provider and stop a chat from silently losing messages, checked on stored messages
as ChatHistory writes them (real stores), plus the operator's limits and the option rules."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.datastructures import Headers

from gateway.config import MnxDefaults
from gateway.history import ChatHistory
from gateway.options import parse_options
from gateway.summaries.folding import chunk_messages, needs_fold, plan_chunks
from gateway.summaries.settings import PRESETS, SummarizeSettings, within_limits

PROJECT, SUBJECT = "project-a", "fold-user"
SETTINGS = SummarizeSettings("custom", start_at_tokens=300, chunk_size=100, keep_recent_messages=4,
                             summary_target=100)


def turn(index: int, words: int = 10) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"question {index} " + "word " * words},
            {"role": "assistant", "content": f"answer {index} " + "word " * words}]


def tool_loop(index: int) -> list[dict[str, Any]]:
    call = {"id": f"call_{index}", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    return [{"role": "user", "content": f"look {index} up " + "word " * 10},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{index}", "content": "found " + "word " * 10},
            {"role": "assistant", "content": f"it is {index}"}]


async def stored(store, chat_id: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    history = ChatHistory(store)
    await history.append(PROJECT, SUBJECT, chat_id, messages, model="gpt-4o-mini")
    return await history.since(PROJECT, SUBJECT, chat_id, after_id=None, after_count=0)


async def test_every_chunk_ends_just_before_a_user_message_and_the_kept_part_starts_with_one(store):
    messages = [m for i in range(30) for m in (tool_loop(i) if i % 3 == 0 else turn(i))]
    docs = await stored(store, "mixed", messages)
    chunks = plan_chunks(docs, SETTINGS, summarized=False, max_messages=500)
    assert chunks
    folded = sum(len(chunk) for chunk in chunks)
    for chunk in chunks:
        assert chunk[0]["role"] == "user"
    # What stays after the folds opens with the user's turn: valid on Anthropic and Gemini too.
    assert docs[folded]["role"] == "user"
    # And every call's result is on the same side of the cut as the call.
    folded_ids = {m["tool_call_id"] for chunk in chunks for m in chunk if m["role"] == "tool"}
    called_ids = {c["id"] for chunk in chunks for m in chunk for c in m.get("tool_calls") or []}
    assert folded_ids == called_ids


async def test_with_nothing_to_keep_a_turn_waiting_for_its_tool_results_is_not_folded(store):
    keep_none = SummarizeSettings("custom", 300, 100, 0, 100)
    waiting = tool_loop(99)[:2]  # the question and the call; the results come with the next request
    docs = await stored(store, "waiting", [m for i in range(20) for m in turn(i)] + waiting)
    chunks = plan_chunks(docs, keep_none, summarized=True, max_messages=500)
    folded = [m for chunk in chunks for m in chunk]
    assert waiting[0]["content"] not in [m["content"] for m in folded]
    assert docs[len(folded)]["role"] == "user"


async def test_a_chat_of_many_short_messages_is_folded_before_the_replay_would_cut_it(store):
    short = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"ok {i}"} for i in range(120)]
    docs = await stored(store, "short", short)
    # Far under the token threshold, but over what a replay reads (max_messages 100).
    assert sum(d["tokens"] for d in docs) < PRESETS["balanced"].start_at_tokens
    chunks = plan_chunks(docs, PRESETS["balanced"], summarized=False, max_messages=100)
    left = len(docs) - sum(len(chunk) for chunk in chunks)
    assert chunks and left <= 50
    assert all(len(chunk) <= chunk_messages(100) + 1 for chunk in chunks)
    # And the turn that reads the chat asks for it.
    window = await ChatHistory(store).window(PROJECT, SUBJECT, "short", token_budget=55_000, max_messages=100)
    assert not window.complete and needs_fold(window, None, PRESETS["balanced"], 100)
    # A chat under both limits is left alone.
    small = await ChatHistory(store).window(PROJECT, SUBJECT, "short", token_budget=55_000, max_messages=500)
    assert small.complete and not needs_fold(small, None, PRESETS["balanced"], 500)


async def test_no_fold_is_asked_for_when_the_kept_messages_alone_fill_the_budget(store):
    big = [m for i in range(3) for m in turn(i, words=400)]
    await stored(store, "big", big)
    window = await ChatHistory(store).window(PROJECT, SUBJECT, "big", token_budget=900, max_messages=500)
    assert window.budget_full and len(window.docs) < SETTINGS.keep_recent_messages
    assert not needs_fold(window, None, SETTINGS, 500)


def test_the_operators_limits_bound_a_requests_numbers():
    asked = SummarizeSettings("custom", start_at_tokens=5_000_000, chunk_size=1, keep_recent_messages=4,
                              summary_target=100)
    bounded = within_limits(asked, min_chunk_tokens=256, max_start_at_tokens=200_000)
    assert (bounded.chunk_size, bounded.start_at_tokens) == (256, 200_000)
    assert within_limits(PRESETS["light"], min_chunk_tokens=256, max_start_at_tokens=200_000) == PRESETS["light"]


def options(mnx: dict[str, Any], headers: dict[str, str] | None = None, **defaults: Any):
    return parse_options({"subject_id": "u", **mnx}, Headers(headers or {}), MnxDefaults(**defaults)).summarize


@pytest.mark.parametrize("mnx, headers, defaults, expected", [
    ({}, None, {}, None),
    ({"summarize": "off"}, None, {}, None),
    ({"summarize": True}, None, {}, PRESETS["balanced"]),
    ({"summarize": "light"}, None, {}, PRESETS["light"]),
    # A config turns it on, even empty, even next to "off".
    ({"summarize": "off", "summarize_config": {}}, None, {}, PRESETS["balanced"]),
    ({"summarize_config": {"keep_recent_messages": 3, "unknown": 1}}, None, {},
     SummarizeSettings("custom", 55_000, 11_000, 3, 1_100)),
    # A request's config builds on the project's default preset when it names none.
    ({"summarize_config": {"summary_target": 500}}, None, {"summarize": "aggressive"},
     SummarizeSettings("custom", 35_000, 7_000, 8, 500)),
    ({"summarize": False}, None, {"summarize": "light"}, None),
    ({}, None, {"summarize": "light"}, PRESETS["light"]),
    ({}, {"x-mnx-summarize": "1"}, {}, PRESETS["balanced"]),
    ({}, {"x-mnx-summarize": "Light"}, {}, PRESETS["light"]),
    ({}, {"x-mnx-summarize": "no"}, {"summarize": "light"}, None),
    ({}, {"x-mnx-summarize-config": '{"chunk_size": 900}'}, {}, SummarizeSettings("custom", 55_000, 900, 15, 1_100)),
])
def test_options_resolve_by_the_documented_rules(mnx, headers, defaults, expected):
    assert options(mnx, headers, **defaults) == expected
