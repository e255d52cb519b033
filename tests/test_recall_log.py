"""Recall bookkeeping written just after the answer (gateway/memory/recall_log.py), in process on
the real stores: an erasure while turns wait to be written, the bound on what waits, and data
written by the earlier one-document-per-event layout. (What a crash can lose, a clean stop and
a store outage: tests/faults/test_recall_log_faults.py.)"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gateway.config import parse_config
from gateway.memory.changes import NewMemory
from gateway.memory.memories import MEMORIES
from gateway.memory.recall_log import RecalledTurn, RecallLog
from gateway.memory.recalls import RECALL_TURNS, RECALLS
from gateway.services import Services
from tests.conftest import edge_memory

DETAILS = {"chat_id": "chat-1", "message_index": 0, "chat_logged": 1, "request_type": "chat", "model": "m",
           "metadata": {}}


def build(tmp_path) -> Services:
    return Services.build(parse_config({
        "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "g.db")}},
        "memory": edge_memory(tmp_path / "index"), "projects": [{"id": "p", "keys": [{"key": "mnx_k"}]}]}))


async def recalled_turn(services: Services, subject: str, text: str, *, chat_id: str = "chat-1",
                        started_at: float | None = None) -> RecalledTurn:
    """A turn of ``subject`` that recalled its memory ``text`` (stored first)."""
    await services.memories.create("p", NewMemory(subject, text))
    hits = (await services.memories.search("p", subject, text, limit=5))[:1]  # the best: that memory
    assert [hit.text for hit in hits] == [text]
    now = time.time()
    return RecalledTurn("p", subject, now if started_at is None else started_at, now, hits,
                        {**DETAILS, "chat_id": chat_id})


async def subject_counts(services: Services, subject: str) -> tuple[int, int]:
    """(recall events, seen tallies) stored for the subject's memories and chats."""
    docs = await services.store.find(MEMORIES, "p", {"subject_id": subject})
    tallies = await services.store.tallies(MEMORIES, "p", [doc["id"] for doc in docs])
    events = await services.recalls.for_chat("p", f"{subject}-chat", 100)
    return len(events), sum(t["seen"].count for t in tallies.values() if "seen" in t)


def test_a_subject_erased_while_its_recalls_wait_gets_none_of_them_and_others_lose_nothing(tmp_path):
    async def scenario() -> None:
        services = build(tmp_path)
        log = RecallLog(services.recalls, services.memories, services.erasure, flush_delay_seconds=60)
        log.add(await recalled_turn(services, "ann", "Ann keeps bees", chat_id="ann-chat"))
        log.add(await recalled_turn(services, "bob", "Bob plays the oboe", chat_id="bob-chat"))
        await services.erasure.erase("p", "ann")
        # A turn of ann's that began after the erasure is hers to keep.
        log.add(await recalled_turn(services, "ann", "Ann moved to Oslo", chat_id="ann-chat"))
        await log.flush()
        assert [e["memory_text"] for e in await services.recalls.for_chat("p", "ann-chat", 100)] == [
            "Ann moved to Oslo"]
        assert await subject_counts(services, "ann") == (1, 1)
        assert await subject_counts(services, "bob") == (1, 1)
        # And the erasure takes the turn documents and tallies with it.
        await services.erasure.erase("p", "ann")
        assert await subject_counts(services, "ann") == (0, 0)
        await log.close()
        await services.aclose()

    asyncio.run(scenario())


def test_the_recalls_waiting_to_be_written_are_bounded_and_what_is_dropped_is_logged(tmp_path, caplog):
    async def scenario() -> list[str]:
        services = build(tmp_path)
        log = RecallLog(services.recalls, services.memories, services.erasure, flush_delay_seconds=60,
                        max_pending=2)
        for text in ("Ann keeps bees", "Ann plays chess", "Ann likes tea"):
            log.add(await recalled_turn(services, "ann", text, chat_id="ann-chat"))
        await log.close()  # a clean stop writes what waits
        texts = [e["memory_text"] for e in await services.recalls.for_chat("p", "ann-chat", 100)]
        await services.aclose()
        return texts

    with caplog.at_level(logging.WARNING, logger="gateway.memory"):
        assert asyncio.run(scenario()) == ["Ann plays chess", "Ann likes tea"]
    assert "recall log full" in caplog.text


def test_events_of_the_one_document_per_event_layout_are_read_and_erased_with_the_new_ones(tmp_path):
    """A database written before turn documents: its events read in order beside the new ones."""
    async def scenario() -> None:
        services = build(tmp_path)
        turn = await recalled_turn(services, "ann", "Ann keeps bees", chat_id="ann-chat")
        memory_id = turn.hits[0].memory_id
        old = [{"event_id": f"evt_old{i}", "project_id": "p", "subject_id": "ann", "memory_id": memory_id,
                "memory_text": "Ann keeps bees", "chat_id": "ann-chat", "message_index": i, "chat_logged": 1,
                "similarity_score": 50.0, "request_type": "chat", "model": "m", "metadata": {},
                "recalled_at": f"2026-01-0{i + 1}T00:00:00.000Z"} for i in range(2)]
        await services.store.put_many(RECALLS, "p", [(e["event_id"], e) for e in old])
        log = RecallLog(services.recalls, services.memories, services.erasure, flush_delay_seconds=60)  # flushed below
        log.add(turn)
        await log.flush()
        by_chat = await services.recalls.for_chat("p", "ann-chat", 100)
        assert [e["event_id"] for e in by_chat][:2] == ["evt_old0", "evt_old1"] and len(by_chat) == 3
        assert set(by_chat[2]) == set(old[0]) and by_chat[2]["memory_id"] == memory_id
        newest: list[dict[str, Any]] = await services.recalls.for_memory("p", memory_id, 2)
        assert [e["event_id"] for e in newest][1:] == ["evt_old1"] and newest[0]["event_id"] == by_chat[2]["event_id"]
        assert (await services.recalls.stats("p", memory_id))["total_recalls"] == 3
        assert (await services.erasure.erase("p", "ann"))["recall_events"] == 3
        assert await services.recalls.for_chat("p", "ann-chat", 100) == []
        await services.aclose()

    asyncio.run(scenario())


def test_counts_an_older_gateway_kept_in_the_document_are_added_to_the_tallies(tmp_path):
    async def scenario() -> None:
        services = build(tmp_path)
        turn = await recalled_turn(services, "ann", "Ann keeps bees")
        memory_id = turn.hits[0].memory_id
        stored = await services.store.get(MEMORIES, "p", memory_id)
        assert stored is not None
        stored.update(seen_count=3, reinforcement_count=2)  # as a gateway before tallies counted
        await services.store.put(MEMORIES, "p", memory_id, stored)
        log = RecallLog(services.recalls, services.memories, services.erasure, flush_delay_seconds=60)  # flushed below
        log.add(turn)
        await log.flush()
        shown = await services.memories.get("p", memory_id)
        assert (shown["seen_count"], shown["reinforcement_count"]) == (4, 2) and shown["last_seen_at"]
        # Stating it again reinforces it on top of the old count.
        await services.memories.create("p", NewMemory("ann", "Ann keeps bees"))
        assert (await services.memories.get("p", memory_id))["reinforcement_count"] == 3
        await services.aclose()

    asyncio.run(scenario())


def test_recall_events_are_written_after_the_configured_flush_delay(tmp_path):
    """memory.recall.events_flush_ms decides how long a turn's recalls wait in memory: with a
    long delay nothing is in the store yet, and the batch lands once the delay has passed."""
    async def scenario() -> None:
        services = Services.build(parse_config({
            "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "g.db")}},
            "memory": {**edge_memory(tmp_path / "index"), "recall": {"events_flush_ms": 1000}},
            "projects": [{"id": "p", "keys": [{"key": "mnx_k"}]}]}))
        turn = await recalled_turn(services, "cy", "Cy grows tomatoes", chat_id="cy-chat")
        handed_over = time.monotonic()
        services.recall_log.add(turn)
        stored = services.store.find
        await asyncio.sleep(0.1)  # the default window (5 ms) would have written it by now
        waiting = await stored(RECALL_TURNS, "p", {"chat_id": "cy-chat"})
        if time.monotonic() - handed_over < 0.9:  # (a machine too loaded to tell is no evidence)
            assert waiting == []  # still in memory
        for _ in range(50):  # written once the second has passed (give a loaded machine a few more)
            await asyncio.sleep(0.1)
            if documents := await stored(RECALL_TURNS, "p", {"chat_id": "cy-chat"}):
                break
        [document] = documents
        assert document["hits"][0][1] == "Cy grows tomatoes"
        await services.aclose()

    asyncio.run(scenario())


def test_the_flush_delay_setting_is_bounded():
    for bad in (-1, 1001, "soon"):
        try:
            parse_config({"memory": {"recall": {"events_flush_ms": bad}}})
        except Exception as error:
            assert "events_flush_ms" in str(error)
        else:
            raise AssertionError(f"events_flush_ms {bad!r} was accepted")
