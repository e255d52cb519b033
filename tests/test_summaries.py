"""Rolling chat summaries (mnx.summarize): options, bounded replay, a turn-1 fact kept, the
summaries shown and deleted with their history. Through the real gateway and the openai SDK,
on SQLite and Redis; the provider (and the LLM summarizer's model) is the fake."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from gateway.summaries.settings import PRESETS
from tests.conftest import KEY, KEY_B, PROVIDER_KEY, wait_until

# Small numbers, so a chat crosses them in a few turns: above 300 tokens of history, fold 120
# at a time, keep the newest 4 messages, summaries of about 150 tokens.
SMALL = {"start_at_tokens": 300, "chunk_size": 120, "keep_recent_messages": 4, "summary_target": 150}
FIRST_FACT = "My daughter Zoë was born on 3 March 2019 in Lisbon."
FILLER = "Let us keep chatting about nothing much in particular, just passing the time pleasantly here"


def turn_text(turn: int) -> str:
    return FIRST_FACT if turn == 0 else f"turn {turn:03d}: {FILLER}."


def chat(client: Any, turn: int, chat_id: str, mnx: dict[str, Any], **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": turn_text(turn)}],
        extra_body={"mnx": {"subject_id": "sum-user", "chat_id": chat_id, "learn": False, **mnx}}, **kwargs)


def no_jobs(gateway: Any) -> bool:
    with gateway.rest() as rest:
        return rest.get("/jobs").json()["data"] == []


def summaries_of(gateway: Any, chat_id: str, subject_id: str = "sum-user") -> list[dict[str, Any]]:
    with gateway.rest() as rest:
        answer = rest.get("/chat/history/read", params={"chat_id": chat_id, "subject_id": subject_id,
                                                        "include_summaries": "true"})
        assert answer.status_code == 200
        return answer.json()["summaries"]


def last_forwarded(gateway: Any) -> list[dict[str, Any]]:
    return gateway.forwarded()[-1]["body"]["messages"]


def test_replay_stays_bounded_and_the_first_turns_fact_survives_in_the_summary(start_gateway, storage):
    gateway = start_gateway(storage)
    client = gateway.openai()
    counts = []
    for turn in range(40):
        chat(client, turn, "long", {"summarize_config": SMALL})
        counts.append(len(last_forwarded(gateway)))
        # The job runs in the background; let it catch up now and then, as a real chat's pauses do.
        if turn % 5 == 4:
            assert wait_until(lambda: no_jobs(gateway))
    assert wait_until(lambda: no_jobs(gateway))
    chat(client, 40, "long", {"summarize_config": SMALL})
    forwarded = last_forwarded(gateway)
    system = forwarded[0]
    assert system["role"] == "system" and "Summary of the earlier part of this conversation" in system["content"]
    # The fact from turn 1 is in the summary, with its name, date and place.
    for token in ("Zoë", "2019", "Lisbon"):
        assert token in system["content"]
    # ... and no longer replayed as a message: the summary stands for it.
    assert all(FIRST_FACT not in str(m.get("content")) for m in forwarded[1:])
    # Bounded: after the chat crossed the threshold, the replay stopped growing with the chat.
    assert max(counts[20:]) < 30 and counts[-1] < counts[19] + 10
    [summary] = summaries_of(gateway, "long")
    assert summary["start_message_index"] == 0
    assert summary["end_message_index"] == summary["messages_summarized"] - 1 >= 10
    assert summary["tokens_in_source"] > summary["tokens_in_summary"] > 0
    assert summary["method"] == "extractive" and "Zoë" in summary["summary_text"]
    # The messages after the summary are replayed in full, the newest 4 at least.
    replayed = [m for m in forwarded[1:-1]]
    assert len(replayed) >= SMALL["keep_recent_messages"]
    assert replayed[-1]["role"] == "assistant" and replayed[-1]["content"] == f"echo: {turn_text(39)}"


def test_a_chat_under_the_threshold_is_replayed_as_it_was_and_never_summarized(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite)
    client = gateway.openai()
    for turn in range(5):
        chat(client, turn, "short", {"summarize": "aggressive"})
    assert wait_until(lambda: no_jobs(gateway))
    forwarded = last_forwarded(gateway)
    assert [m["role"] for m in forwarded] == ["user", "assistant"] * 4 + ["user"]
    assert summaries_of(gateway, "short") == []


def test_streamed_turns_are_summarized_too(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite)
    client = gateway.openai()
    for turn in range(30):
        stream = chat(client, turn, "streamed", {"summarize_config": SMALL}, stream=True)
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        if turn % 5 == 4:
            assert wait_until(lambda: no_jobs(gateway))
    [summary] = summaries_of(gateway, "streamed")
    assert "Zoë" in summary["summary_text"] and summary["messages_summarized"] >= 10


def test_deleting_the_history_or_erasing_the_subject_deletes_the_summary(start_gateway, storage):
    gateway = start_gateway(storage)
    client = gateway.openai()
    for chat_id in ("to-delete", "to-erase"):
        for turn in range(20):
            chat(client, turn, chat_id, {"summarize_config": SMALL})
        assert wait_until(lambda: no_jobs(gateway))
        assert summaries_of(gateway, chat_id)
    with gateway.rest() as rest:
        assert rest.delete("/chat/history/delete", params={"chat_id": "to-delete",
                                                           "subject_id": "sum-user"}).status_code == 200
        assert summaries_of(gateway, "to-delete") == []
        # The next turn of that chat starts over: no summary of the deleted messages comes back.
        chat(client, 0, "to-delete", {"summarize_config": SMALL})
        assert "Summary of the earlier part" not in str(last_forwarded(gateway))
        assert rest.delete("/subjects/sum-user").status_code == 200
    assert summaries_of(gateway, "to-erase") == []


@pytest.mark.parametrize("preset", ["light", "balanced", "aggressive", True])
def test_presets_are_the_contracts(start_gateway, storage_sqlite, preset):
    # A chat far under every preset's threshold (35,000 tokens and more) is replayed whole.
    gateway = start_gateway(storage_sqlite)
    client = gateway.openai()
    for turn in range(3):
        chat(client, turn, f"preset-{preset}", {"summarize": preset})
    assert len(last_forwarded(gateway)) == 5
    assert no_jobs(gateway)
    name = "balanced" if preset is True else preset
    assert (PRESETS[name].start_at_tokens, PRESETS[name].keep_recent_messages, PRESETS[name].summary_target) == {
        "light": (70_000, 25, 1_800), "balanced": (55_000, 15, 1_100), "aggressive": (35_000, 8, 700)}[name]


def test_summarize_config_with_summarize_off_still_summarizes_as_mnexium_clients_expect(start_gateway,
                                                                                          storage_sqlite):
    gateway = start_gateway(storage_sqlite)
    client = gateway.openai()
    for turn in range(20):
        chat(client, turn, "off-with-config", {"summarize": "off", "summarize_config": SMALL})
    assert wait_until(lambda: no_jobs(gateway))
    assert summaries_of(gateway, "off-with-config")


def test_headers_carry_the_options(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite)
    headers = {"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY, "x-mnx-subject-id": "sum-user",
               "x-mnx-chat-id": "by-headers", "x-mnx-learn": "false", "x-mnx-summarize": "off",
               "x-mnx-summarize-config": '{"start_at_tokens": 300, "chunk_size": 120, "keep_recent_messages": 4, '
                                         '"summary_target": 150}'}
    for turn in range(20):
        answer = httpx.post(gateway.url + "/v1/chat/completions", headers=headers, timeout=30,
                            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": turn_text(turn)}]})
        assert answer.status_code == 200
    assert wait_until(lambda: no_jobs(gateway))
    assert "Zoë" in summaries_of(gateway, "by-headers")[0]["summary_text"]


def test_project_defaults_in_the_config_turn_it_on(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite, defaults={"learn": False, "summarize": "off", "summarize_config": SMALL})
    client = gateway.openai()
    for turn in range(20):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": turn_text(turn)}],
                                       extra_body={"mnx": {"subject_id": "sum-user", "chat_id": "by-default"}})
    assert wait_until(lambda: no_jobs(gateway))
    assert summaries_of(gateway, "by-default")
    # A request's own summarize: false turns it off for that request (no fold queued).
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "one more"}],
                                   extra_body={"mnx": {"subject_id": "sum-user", "chat_id": "by-default",
                                                       "summarize": False}})
    assert "Summary of the earlier part" not in str(last_forwarded(gateway))


@pytest.mark.parametrize("mnx, param", [
    ({"summarize": "medium"}, "mnx.summarize"),
    ({"summarize": 1}, "mnx.summarize"),
    ({"summarize_config": "small"}, "mnx.summarize_config"),
    ({"summarize_config": {"start_at_tokens": -5}}, "mnx.summarize_config.start_at_tokens"),
    ({"summarize_config": {"chunk_size": "100"}}, "mnx.summarize_config.chunk_size"),
    ({"summarize_config": {"keep_recent_messages": True}}, "mnx.summarize_config.keep_recent_messages"),
    ({"summarize_config": {"summary_target": 10**9}}, "mnx.summarize_config.summary_target"),
])
def test_malformed_options_are_a_400_naming_them_and_nothing_is_forwarded(shared_gateway, mnx, param):
    answer = httpx.post(shared_gateway.url + "/v1/chat/completions",
                        headers={"authorization": f"Bearer {KEY}", "x-openai-key": PROVIDER_KEY}, timeout=30,
                        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                              "mnx": {"subject_id": "bad-options", **mnx}})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid_mnx" and error["param"] == param
    assert shared_gateway.forwarded() == []
    with shared_gateway.rest() as rest:
        assert rest.get("/chat/history/list", params={"subject_id": "bad-options"}).json()["chats"] == []


# --- the LLM summarizer: whose key pays, what it reads ------------------------------------------

def test_the_llm_summarizer_reads_the_chunk_and_the_callers_key_pays_for_the_first_run(start_gateway,
                                                                                       storage_sqlite):
    # No key configured anywhere for OpenAI: only the caller's own (x-openai-key) can pay.
    gateway = start_gateway(storage_sqlite, summarization={"summarizer": {"provider": "litellm",
                                                                          "model": "gpt-4o-mini"}})
    client = gateway.openai()
    for turn in range(12):
        chat(client, turn, "llm", {"summarize_config": SMALL})
    assert wait_until(lambda: no_jobs(gateway), timeout=15)
    summary_calls = [r for r in gateway.forwarded()
                     if "rolling summary" in str(r["body"].get("messages", [{}])[0].get("content", "")).lower()]
    assert summary_calls, "the summarizer was never called"
    # The first fold's request carries the turn-1 fact (the chunk's transcript) and the caller's key.
    first = summary_calls[0]
    assert FIRST_FACT in str(first["body"]["messages"])
    assert first["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
    [summary] = summaries_of(gateway, "llm")
    # The fake model echoes what it was given, so the summary carries its source's words.
    assert summary["method"] == "llm" and "Zoë" in summary["summary_text"]
    assert PROVIDER_KEY not in summary["summary_text"]


# --- erasure and in-flight folds -----------------------------------------------------------------

def test_a_fold_running_while_its_subject_is_erased_stores_nothing(start_gateway, storage):
    # The summary model takes 2 s: the subject is erased while the fold waits for it.
    gateway = start_gateway(storage, summarization={"summarizer": {"provider": "litellm", "model": "sleep-2",
                                                                   "api_key": "sk-configured-summarizer"}})
    client = gateway.openai()
    for turn in range(12):
        chat(client, turn, "erased-mid-fold", {"summarize_config": SMALL})
    assert wait_until(lambda: any(r["body"].get("model") == "sleep-2" for r in gateway.forwarded()), timeout=10)
    with gateway.rest() as rest:
        assert rest.delete("/subjects/sum-user").status_code == 200
    assert wait_until(lambda: no_jobs(gateway), timeout=15)
    time.sleep(0.3)
    assert summaries_of(gateway, "erased-mid-fold") == []
    with gateway.rest() as rest:
        assert rest.get("/chat/history/read", params={"chat_id": "erased-mid-fold"}).json()["messages"] == []


def test_a_fold_running_while_its_chat_is_deleted_leaves_no_summary(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite, summarization={"summarizer": {"provider": "litellm", "model": "sleep-1",
                                                                          "api_key": "sk-configured-summarizer"}})
    client = gateway.openai()
    for turn in range(12):
        chat(client, turn, "deleted-mid-fold", {"summarize_config": SMALL})
    assert wait_until(lambda: any(r["body"].get("model") == "sleep-1" for r in gateway.forwarded()), timeout=10)
    with gateway.rest() as rest:
        assert rest.delete("/chat/history/delete", params={"chat_id": "deleted-mid-fold"}).status_code == 200
    assert wait_until(lambda: no_jobs(gateway), timeout=15)
    time.sleep(0.3)
    assert summaries_of(gateway, "deleted-mid-fold") == []


def test_summaries_are_read_by_chat_without_a_subject_and_never_across_projects(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite)
    client = gateway.openai()
    for turn in range(20):
        chat(client, turn, "shared-id", {"summarize_config": SMALL})
    assert wait_until(lambda: no_jobs(gateway))
    with gateway.rest() as rest:
        answer = rest.get("/chat/history/read", params={"chat_id": "shared-id", "include_summaries": "true"}).json()
        assert len(answer["summaries"]) == 1
        # Without the flag the answer keeps its contract shape.
        assert "summaries" not in rest.get("/chat/history/read", params={"chat_id": "shared-id"}).json()
        assert rest.get("/chat/history/read", params={"chat_id": "shared-id",
                                                      "include_summaries": "maybe"}).status_code == 400
    with gateway.rest(KEY_B) as other:
        answer = other.get("/chat/history/read", params={"chat_id": "shared-id", "include_summaries": "true"}).json()
        assert answer["summaries"] == [] and answer["messages"] == []


def test_no_fold_is_queued_when_no_key_could_pay_for_the_summary_model(start_gateway, storage_sqlite):
    # The summary model is OpenAI's; nothing configures an OpenAI key and the caller sends only
    # an Anthropic one: a job could only fail, again and again.
    gateway = start_gateway(storage_sqlite, summarization={"summarizer": {"provider": "litellm",
                                                                          "model": "gpt-4o-mini"}})
    for turn in range(12):
        answer = httpx.post(gateway.url + "/v1/messages", timeout=30,
                            headers={"x-mnexium-key": KEY, "x-api-key": "sk-ant-caller-key-123456",
                                     "anthropic-version": "2023-06-01"},
                            json={"model": "claude-3-5-haiku", "max_tokens": 50,
                                  "messages": [{"role": "user", "content": turn_text(turn)}],
                                  "mnx": {"subject_id": "sum-user", "chat_id": "no-key", "learn": False,
                                          "summarize_config": SMALL}})
        assert answer.status_code == 200
    with gateway.rest() as rest:
        assert rest.get("/jobs").json()["data"] == []
    assert summaries_of(gateway, "no-key") == []
