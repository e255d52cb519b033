"""Agent state: a subject's short-lived key/value scratchpad (contract §9).

Expiry is the store's own TTL, so expired state is gone for every reader at once,
with no sweeper to forget.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.clock import from_timestamp, now_iso
from gateway.store import Collection, DocumentStore

STATE = Collection("agent_state", indexes=(("subject_id",),), expiring=True)

MAX_KEY_LENGTH = 256
# Ten years: beyond this a TTL is a mistake, not an intention.
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600


def _doc_id(subject_id: str, key: str) -> str:
    return f"{len(subject_id)}:{subject_id}:{key}"


class AgentState:
    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    async def put(self, project_id: str, subject_id: str, key: str, value: Any,
                  ttl_seconds: int | None) -> dict[str, Any]:
        doc_id = _doc_id(subject_id, key)
        previous = await self._store.get(STATE, project_id, doc_id)
        stamp = now_iso()
        expires_at = from_timestamp(time.time() + ttl_seconds) if ttl_seconds is not None else None
        doc = {
            "subject_id": subject_id,
            "key": key,
            "value": value,
            "ttl_seconds": ttl_seconds,
            "expires_at": expires_at,
            "created_at": previous["created_at"] if previous else stamp,
            "updated_at": stamp,
        }
        await self._store.put(STATE, project_id, doc_id, doc, ttl_seconds=ttl_seconds)
        return doc

    async def get(self, project_id: str, subject_id: str, key: str) -> dict[str, Any] | None:
        return await self._store.get(STATE, project_id, _doc_id(subject_id, key))

    async def list_keys(self, project_id: str, subject_id: str, limit: int) -> list[dict[str, Any]]:
        """The subject's live keys (expired ones are skipped by the store), sorted by key, at most ``limit``.

        One lookup on the subject index. The store returns it in write order, so every key
        is read to sort them: state is a subject's small scratchpad, not a table, and a
        sorted store index would miss every key written before it existed."""
        docs = await self._store.find(STATE, project_id, {"subject_id": subject_id})
        return sorted(docs, key=lambda doc: doc["key"])[:limit]

    async def delete(self, project_id: str, subject_id: str, key: str) -> bool:
        return await self._store.delete(STATE, project_id, _doc_id(subject_id, key))

    async def delete_subject(self, project_id: str, subject_id: str) -> int:
        """Every state key of one subject (erasure)."""
        return await self._store.delete_where(STATE, project_id, {"subject_id": subject_id})


def to_listing(doc: dict[str, Any]) -> dict[str, Any]:
    """A key as GET /state lists it: without its value (values can be big; read one by its key)."""
    return {"key": doc["key"], "ttl": doc["expires_at"], "updated_at": doc["updated_at"]}


def to_api(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": doc["key"],
        "value": doc["value"],
        "ttl": doc["expires_at"],
        "expires_at": doc["expires_at"],
        "ttl_seconds": doc["ttl_seconds"],
        "subject_id": doc["subject_id"],
        "created_at": doc["created_at"],
        "updated_at": doc["updated_at"],
    }
