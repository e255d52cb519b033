"""History replay for provider prompt caches (mnx.cache): the oldest turns are cut in whole chunks.

A provider reuses the longest request prefix it has seen before. Once a chat outgrows the history
budget, a cut that drops one old message per turn changes the replayed prefix on every turn; in
cache mode the window's start moves only a whole chunk of messages at a time, so the prefix stays
the same (and keeps growing) for the turns in between. Without cache mode the cut is as before.
"""

from __future__ import annotations

from typing import Any

from gateway.history import ChatHistory
from gateway.summaries.tokens import count_tokens, estimate_tokens

PROJECT = "project-chunks"
SUBJECT = "subject-1"
PADDING = "x" * 40


def tagged(position: int, role: str = "user", **extra: Any) -> dict[str, Any]:
    """A message whose text says where it stands in the chat ("m0012 ...")."""
    return {"role": role, "content": f"m{position:04d} {PADDING}", **extra}


def position_of(message: dict[str, Any]) -> int:
    return int(message["content"][1:5])


def plain_turn(first: int) -> list[dict[str, Any]]:
    return [tagged(first), tagged(first + 1, "assistant")]


def tool_turn(first: int) -> list[dict[str, Any]]:
    """user, an assistant tool call, its two results, the answer: five messages."""
    call = [{"id": f"call_{first}_{n}", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
            for n in (1, 2)]
    return [tagged(first), tagged(first + 1, "assistant", tool_calls=call),
            tagged(first + 2, "tool", tool_call_id=call[0]["id"]),
            tagged(first + 3, "tool", tool_call_id=call[1]["id"]), tagged(first + 4, "assistant")]


async def replays_over_a_growing_chat(store, chat_id: str, turns: int, make_turn, *, chunk: int | None,
                                      token_budget: int = 10_000, max_messages: int = 500) -> list[list[dict]]:
    """What each turn of a chat replays (before that turn is stored), turn by turn."""
    history = ChatHistory(store)
    replays = []
    stored = 0
    for _ in range(turns):
        replays.append(await history.replay(PROJECT, SUBJECT, chat_id, token_budget=token_budget,
                                            max_messages=max_messages, chunk=chunk))
        messages = make_turn(stored)
        await history.append(PROJECT, SUBJECT, chat_id, messages)
        stored += len(messages)
    return replays


def first_positions(replays: list[list[dict]]) -> list[int | None]:
    return [position_of(replay[0]) if replay else None for replay in replays]


def turns_where_the_start_moved(replays: list[list[dict]]) -> list[int]:
    starts = first_positions(replays)
    return [turn for turn in range(2, len(starts)) if starts[turn] != starts[turn - 1]]  # turn 0: an empty chat


MESSAGE_COST = estimate_tokens(tagged(0))


async def test_over_the_token_budget_the_start_moves_a_whole_chunk_at_a_time(store):
    """The budget holds 20 messages; 2 messages a turn, chunk 8: the start moves every 4th turn."""
    budget = 20 * MESSAGE_COST
    replays = await replays_over_a_growing_chat(store, "budget", 60, plain_turn, chunk=8, token_budget=budget)
    starts = first_positions(replays)
    assert starts[:11] == [None] + [0] * 10  # within budget: the whole chat, as without cache mode
    moves = turns_where_the_start_moved(replays)
    assert moves == list(range(moves[0], 60, 4))  # then every 4th turn, by 8 messages
    assert all(starts[turn] % 8 == 0 for turn in moves)
    for turn, replay in enumerate(replays):
        assert sum(estimate_tokens(m) for m in replay) <= budget
        assert len(replay) >= min(2 * turn, 20 - 7)  # never a whole chunk short of what the budget holds
        if turn > 0 and turn not in moves:
            # The start stayed: this turn's replay is last turn's plus last turn's messages,
            # byte for byte the prefix the provider saw before.
            assert replay == replays[turn - 1] + plain_turn(2 * (turn - 1))


async def test_without_cache_mode_the_budget_cuts_one_message_per_turn_as_before(store):
    budget = 20 * MESSAGE_COST
    replays = await replays_over_a_growing_chat(store, "plain", 30, plain_turn, chunk=None, token_budget=budget)
    assert first_positions(replays)[11:] == [2 * turn - 20 for turn in range(11, 30)]
    assert all(len(replay) == 20 for replay in replays[10:])


async def test_over_max_messages_the_start_moves_a_whole_chunk_at_a_time(store):
    replays = await replays_over_a_growing_chat(store, "max", 40, plain_turn, chunk=6, max_messages=15)
    starts = first_positions(replays)
    moves = turns_where_the_start_moved(replays)
    assert moves == list(range(moves[0], 40, 3))  # chunk 6 = 3 turns
    assert all(starts[turn] % 6 == 0 for turn in moves)
    assert all(10 <= len(replay) <= 15 for replay in replays[8:])
    for turn in range(1, 40):
        if turn not in moves:
            assert replays[turn] == replays[turn - 1] + plain_turn(2 * (turn - 1))
    plain = await replays_over_a_growing_chat(store, "max-plain", 20, plain_turn, chunk=None, max_messages=15)
    # 15 read; the oldest of them is an answer whose question was not: a cut window opens with a user message.
    assert [len(replay) for replay in plain[8:]] == [14] * 12


async def test_a_chunk_boundary_on_a_tool_result_starts_after_the_results(store):
    """Five messages a turn, chunk 8: boundaries fall on every kind of message, tool results
    included; the window then starts at the next user message (a result without its call is
    refused, and Anthropic and Gemini refuse a conversation that opens with the assistant)."""
    budget = 30 * MESSAGE_COST + 200  # the tool calls' JSON costs a little more
    replays = await replays_over_a_growing_chat(store, "tools", 40, tool_turn, chunk=8, token_budget=budget)
    roles = [m["role"] for turn in range(40) for m in tool_turn(5 * turn)]
    starts = first_positions(replays)
    skipped_results = 0
    for replay, start in zip(replays[1:], starts[1:]):
        assert start is not None and replay[0]["role"] == "user"
        assert sum(estimate_tokens(m) for m in replay) <= budget
        boundary = start - start % 8
        assert "user" not in roles[boundary:start]  # only the rest of a cut turn skipped
        skipped_results += start - boundary
    assert skipped_results > 0
    moves = turns_where_the_start_moved(replays)
    for turn in range(1, 40):
        if turn not in moves:
            assert replays[turn] == replays[turn - 1] + tool_turn(5 * (turn - 1))


LONG = "y" * 2000


def long_turn(first: int) -> list[dict[str, Any]]:
    """A user message and an answer, each about 500 tokens."""
    return [{"role": "user", "content": f"m{first:04d} {LONG}"},
            {"role": "assistant", "content": f"m{first + 1:04d} {LONG}"}]


async def test_a_budget_of_fewer_messages_than_a_chunk_never_replays_a_near_empty_history(store):
    """The budget holds 5 of these messages, a chunk is 16: rounding the window's start up to a
    chunk would leave whole turns with 2, 1 or no messages of the chat. A window under half of
    what the plain cut keeps is the plain cut instead."""
    budget = 5 * estimate_tokens(long_turn(0)[0])
    cached = await replays_over_a_growing_chat(store, "long", 30, long_turn, chunk=16, token_budget=budget)
    plain = await replays_over_a_growing_chat(store, "long-plain", 30, long_turn, chunk=None, token_budget=budget)
    # 5 fit; the oldest is an answer whose question did not: the window opens with the next question.
    assert [len(replay) for replay in plain[3:]] == [4] * 27
    for turn, (replay, whole) in enumerate(zip(cached, plain)):
        assert 2 * len(replay) >= len(whole) and (replay or not whole), (turn, len(replay), len(whole))
        assert sum(estimate_tokens(m) for m in replay) <= budget
        # Always the chat's newest messages, in order, with nothing left out between them.
        assert [position_of(m) for m in replay] == list(range(2 * turn - len(replay), 2 * turn))
    # Some turns do replay the chunk's shorter window (a whole chunk's start), the rest the plain cut.
    assert any(0 < len(replay) < 5 and position_of(replay[0]) % 16 == 0 for replay in cached)


async def test_a_clients_cache_control_on_a_stored_tool_call_or_part_is_not_replayed(store):
    """A client's Anthropic breakpoint marked the request it came in; replayed on every later turn
    it would pile up past the four Anthropic takes (a 400)."""
    mark = {"type": "ephemeral"}
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "look it up", "cache_control": mark}]},
                {"role": "assistant", "content": None, "tool_calls": [{**call, "cache_control": mark}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "found"}]
    history = ChatHistory(store)
    await history.append(PROJECT, SUBJECT, "marked", messages)
    for chunk in (None, 16):
        replay = await history.replay(PROJECT, SUBJECT, "marked", token_budget=10_000, max_messages=50, chunk=chunk)
        assert replay == [{"role": "user", "content": [{"type": "text", "text": "look it up"}]},
                          {"role": "assistant", "content": None, "tool_calls": [call]},
                          {"role": "tool", "tool_call_id": "call_1", "content": "found"}]


def forwarded_history(gateway) -> list[dict[str, Any]]:
    """The replayed messages of the last forwarded request (all but the request's own message)."""
    messages = gateway.forwarded()[-1]["body"]["messages"]
    return [m for m in messages[:-1] if m["role"] != "system"]


def test_through_the_gateway_cache_mode_keeps_the_replayed_prefix_for_whole_chunks(start_gateway, storage_sqlite):
    budget = 300  # about 17 of these messages
    gateway = start_gateway(storage_sqlite, history={"token_budget": budget, "cut_chunk_messages": 8})
    client = gateway.openai()
    histories: dict[bool, list[list[dict[str, Any]]]] = {True: [], False: []}
    for cache in (True, False):
        for turn in range(30):
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"turn {turn:02d} {PADDING}"}],
                extra_body={"mnx": {"subject_id": "u", "chat_id": f"cache-{cache}", "cache": cache}})
            histories[cache].append(forwarded_history(gateway))

    def prefix_kept(replays: list[list[dict[str, Any]]]) -> list[bool]:
        """Per turn from the second: whether it replays what the turn before it replayed, and more."""
        return [replays[t][:len(replays[t - 1])] == replays[t - 1] for t in range(1, len(replays))]

    cached, plain = prefix_kept(histories[True]), prefix_kept(histories[False])
    # Without cache mode, once the chat outgrows the budget every turn drops its oldest turn.
    first_cut = plain.index(False)
    assert not any(plain[first_cut:])
    # In cache mode the prefix changes on the same turn, then only every 4th turn (8 messages, 2 a turn).
    assert cached[:first_cut] == plain[:first_cut]
    changed = [turn for turn, kept in enumerate(cached) if not kept]
    assert changed == list(range(first_cut, len(cached), 4))
    for replay in histories[True]:
        # Counted as stored: with gpt-4o-mini's own tokenizer.
        assert sum(count_tokens(m, "gpt-4o-mini") for m in replay) <= budget
        assert not replay or replay[0]["content"].startswith("turn ")
