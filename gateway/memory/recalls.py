"""Recall events: which memory was injected into which conversation, and how well it matched."""

from __future__ import annotations

import secrets
from typing import Any

from gateway.store import Collection, DocumentStore

RECALLS = Collection("memory_recalls", indexes=(("chat_id",), ("memory_id",), ("subject_id",)))


class RecallEvents:
    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    async def record(self, project_id: str, events: list[dict[str, Any]]) -> None:
        docs = []
        for event in events:
            event_id = f"evt_{secrets.token_hex(12)}"
            docs.append((event_id, {"event_id": event_id, "project_id": project_id, **event}))
        await self._store.put_many(RECALLS, project_id, docs)

    async def for_chat(self, project_id: str, chat_id: str, limit: int) -> list[dict[str, Any]]:
        return await self._store.find(RECALLS, project_id, {"chat_id": chat_id}, limit=limit)

    async def for_memory(self, project_id: str, memory_id: str, limit: int | None) -> list[dict[str, Any]]:
        """The memory's recall events, newest first: past the limit, the oldest are left out."""
        return await self._store.find(RECALLS, project_id, {"memory_id": memory_id}, limit=limit, newest_first=True)

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
        return await self._store.delete_where(RECALLS, project_id, {"subject_id": subject_id})
