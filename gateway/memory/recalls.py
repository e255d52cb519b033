"""Recall events: which memory was injected into which conversation, and how well it matched.

Stored one document per turn (``RECALL_TURNS``): the turn's chat, subject, model and time
once, and each recalled memory's id, text and score; the memory ids are indexed one by one,
so a memory's recalls are still one index lookup. A turn recalling eight memories is then
one document instead of eight, each with its own index entries: about a third of the rows
to write (gateway/memory/recall_log.py writes them just after the answer). The API still
shows one event per recalled memory.

Events written before this layout (one document per event, ``RECALLS``) are read beside the
new ones and erased with them; they are all older than any turn document.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

from gateway.memory.index_upkeep import MEMORIES
from gateway.store import Collection, DocumentStore, Increment

# The memory ids are deferred (gateway/store/base.py): a turn's eight recalled memories would
# otherwise be eight index pages written per batch on SQLite, most of a recall batch's writes.
RECALL_TURNS = Collection("recall_turns", indexes=(("chat_id",), ("memory_ids",), ("subject_id",)),
                          multi_valued=("memory_ids",), deferred=(("memory_ids",),))
# The earlier layout: one document per event.
RECALLS = Collection("memory_recalls", indexes=(("chat_id",), ("memory_id",), ("subject_id",)))


def turn_document(project_id: str, turn_id: str, turn: dict[str, Any],
                  memories: Sequence[tuple[str, str, float]]) -> tuple[str, dict]:
    """(id, document) of one turn's recalls. ``turn``: subject_id, chat_id, message_index,
    chat_logged, request_type, model, metadata, recalled_at (the fields every event shares);
    ``memories``: each recalled memory's (memory_id, text, similarity_score 0-100)."""
    unique = list({memory[0]: memory for memory in memories}.values())
    return turn_id, {"turn_id": turn_id, "project_id": project_id, **turn,
                     "memory_ids": [memory[0] for memory in unique],
                     "hits": [[memory_id, text, score] for memory_id, text, score in unique]}


def _events(doc: dict[str, Any], only: str | None = None) -> list[dict[str, Any]]:
    """A turn document's recall events (of one memory, given ``only``), as the API shows them."""
    shared = {key: doc.get(key) for key in ("project_id", "subject_id")}
    after = {key: doc.get(key) for key in ("chat_id", "message_index", "chat_logged")}
    tail = {key: doc.get(key) for key in ("request_type", "model", "metadata", "recalled_at")}
    events = []
    for position, (memory_id, text, score) in enumerate(doc["hits"]):
        if only is None or memory_id == only:
            events.append({"event_id": f"evt_{doc['turn_id'][4:]}{position:02x}", **shared, "memory_id": memory_id,
                           "memory_text": text, **after, "similarity_score": score, **tail})
    return events


class RecallEvents:
    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    async def record(self, project_id: str, turns: Sequence[tuple[str, dict[str, Any]]],
                     counts: Sequence[Increment] = ()) -> None:
        """Store turn documents (``turn_document``) and add ``counts`` to the recalled memories'
        tallies (``reinforcement.seen_increments``), all in one atomic write: written again after
        a failure, the documents replace themselves (fixed ids) and the counts were never added."""
        await self._store.put_many_and_increment(RECALL_TURNS, project_id, turns, MEMORIES, counts)

    async def for_chat(self, project_id: str, chat_id: str, limit: int) -> list[dict[str, Any]]:
        """The chat's recall events, oldest first (up to ``limit``)."""
        events = await self._store.find(RECALLS, project_id, {"chat_id": chat_id}, limit=limit)
        if len(events) < limit:
            # A turn holds at least one event, so ``limit`` turns are always enough.
            turns = await self._store.find(RECALL_TURNS, project_id, {"chat_id": chat_id}, limit=limit - len(events))
            events += [event for doc in turns for event in _events(doc)]
        return events[:limit]

    async def for_memory(self, project_id: str, memory_id: str, limit: int | None) -> list[dict[str, Any]]:
        """The memory's recall events, newest first: past the limit, the oldest are left out."""
        # One event of this memory per turn: ``limit`` turns are ``limit`` events.
        events = [event for doc in await self._store.find(RECALL_TURNS, project_id, {"memory_ids": memory_id},
                                                          limit=limit, newest_first=True)
                  for event in _events(doc, only=memory_id)]
        if limit is None or len(events) < limit:
            events += await self._store.find(RECALLS, project_id, {"memory_id": memory_id},
                                             limit=None if limit is None else limit - len(events), newest_first=True)
        return events

    async def stats(self, project_id: str, memory_id: str) -> dict[str, Any]:
        events = await self.for_memory(project_id, memory_id, None)
        times = sorted(e["recalled_at"] for e in events)
        scores = [e["similarity_score"] for e in events]
        return {
            "total_recalls": len(events),
            "unique_chats": len({e["chat_id"] for e in events}),
            "unique_subjects": len({e["subject_id"] for e in events}),
            "avg_score": round(sum(scores) / len(scores), 2) if scores else 0,
            "first_recalled_at": times[0] if times else None,
            "last_recalled_at": times[-1] if times else None,
        }

    async def delete_subject(self, project_id: str, subject_id: str) -> int:
        """Erase the subject's recall events; returns how many there were."""
        turns = await self._store.find(RECALL_TURNS, project_id, {"subject_id": subject_id})
        await self._store.delete_where(RECALL_TURNS, project_id, {"subject_id": subject_id})
        legacy = await self._store.delete_where(RECALLS, project_id, {"subject_id": subject_id})
        return legacy + sum(len(doc["hits"]) for doc in turns)
