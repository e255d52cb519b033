"""A replay reads a chat newest first, a page at a time, and keeps exactly what the budget allows:
the same messages a read of the whole chat would keep, on both stores, whatever the chat's length
and the page sizes its earlier replays left behind."""

from __future__ import annotations

import random

import pytest

from gateway.history import MESSAGES, ChatHistory, stored_tokens, to_replay

PROJECT, SUBJECT = "project-a", "window-user"


def message(rng: random.Random, index: int) -> dict[str, str]:
    return {"role": "user" if index % 2 == 0 else "assistant",
            "content": f"message {index} " + "word " * rng.randint(1, 60)}


def newest_that_fit(docs: list[dict], budget: int) -> list[dict]:
    """The brute-force answer: walk back from the newest message while the stored counts fit."""
    used, start = 0, len(docs)
    while start > 0 and used + stored_tokens(docs[start - 1]) <= budget:
        used += stored_tokens(docs[start - 1])
        start -= 1
    return docs[start:]


async def all_stored(store, chat_id: str) -> list[dict]:
    return await store.find(MESSAGES, PROJECT, {"subject_id": SUBJECT, "chat_id": chat_id})


@pytest.mark.parametrize("length", [0, 1, 31, 33, 200, 700])
async def test_the_paged_window_keeps_what_a_whole_read_would(store, length):
    rng = random.Random(length)
    history = ChatHistory(store)
    chat_id = f"chat-{length}"
    for start in range(0, length, 50):
        batch = [message(rng, i) for i in range(start, min(length, start + 50))]
        await history.append(PROJECT, SUBJECT, chat_id, batch, model="gpt-4o-mini")
    stored = await all_stored(store, chat_id)
    for budget in (0, 50, 1_000, 5_000, 100_000):
        # Twice: the second read starts from the page size the first one left behind.
        for _ in range(2):
            window = await history.window(PROJECT, SUBJECT, chat_id, token_budget=budget, max_messages=500)
            expected = newest_that_fit(stored[-500:], budget)
            assert window.docs == expected
            assert window.messages == [to_replay(d) for d in expected]
            assert window.complete == (len(window.docs) == len(stored))
            assert window.budget_full == (len(window.docs) < min(len(stored), 500))


async def test_a_window_after_a_summary_stops_at_its_last_message(store):
    rng = random.Random(7)
    history = ChatHistory(store)
    await history.append(PROJECT, SUBJECT, "anchored", [message(rng, i) for i in range(120)], model="gpt-4o-mini")
    stored = await all_stored(store, "anchored")
    anchor = stored[80]["message_id"]
    window = await history.window(PROJECT, SUBJECT, "anchored", token_budget=1_000_000, max_messages=500,
                                  after_id=anchor)
    assert window.complete and not window.anchor_missing
    assert window.docs == stored[81:]
    # The same by position (a summary of messages stored without ids).
    by_count = await history.window(PROJECT, SUBJECT, "anchored", token_budget=1_000_000, max_messages=500,
                                    after_count=81)
    assert by_count.docs == stored[81:] and by_count.complete
    # An anchor that is not in the chat (its messages were deleted): read to the start, and say so.
    missing = await history.window(PROJECT, SUBJECT, "anchored", token_budget=1_000_000, max_messages=500,
                                   after_id="msg_gone")
    assert missing.anchor_missing and missing.docs == stored


async def test_stored_messages_carry_their_id_and_token_count(store):
    history = ChatHistory(store)
    ids = await history.append(PROJECT, SUBJECT, "counted", [{"role": "user", "content": "hello there"}],
                               model="gpt-4o-mini")
    [doc] = await all_stored(store, "counted")
    assert doc["message_id"] == ids[0]
    # o200k_base: "hello there" is 2 tokens, plus OpenAI's 4 of framing.
    assert doc["tokens"] == 6
