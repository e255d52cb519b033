"""The values of an integration, kept per scope for ``cache_ttl_seconds``.

One document per (integration, scope, scope id), in the store, so every gateway of a
deployment reads what any of them fetched or received, and expiry is the store's own TTL.
A document names its subject whenever one is known (subject scope, or a chat-scoped value
pushed or synced with a subject), so a subject's erasure takes its values along, and writes
for a subject go through erasure's write section so that one cannot bring them back.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from gateway.clock import now_iso
from gateway.errors import BadRequest
from gateway.store import Collection, DocumentStore

VALUES = Collection("integration_values", indexes=(("integration_id",), ("subject_id",)), expiring=True)

WriteSection = Callable[[str, str, float], AbstractAsyncContextManager[None]]


@asynccontextmanager
async def _no_section(project_id: str, subject_id: str, since: float) -> AsyncIterator[None]:
    yield


def scope_id(scope: str, subject_id: str | None, chat_id: str | None) -> str:
    """The id the integration's scope keys its values by; a 400 when the call does not name it."""
    if scope == "subject":
        if not subject_id:
            raise BadRequest("this integration is subject-scoped: subject_id is required", code="subject_id_required",
                             param="subject_id")
        return subject_id
    if scope == "chat":
        if not chat_id:
            raise BadRequest("this integration is chat-scoped: chat_id is required", code="chat_id_required",
                             param="chat_id")
        # With its subject: another subject reusing the chat id reads none of them, and the
        # subject's erasure reaches them.
        if not subject_id:
            raise BadRequest("this integration is chat-scoped: subject_id is required with chat_id",
                             code="subject_id_required", param="subject_id")
        return f"{len(subject_id)}:{subject_id}:{chat_id}"
    return ""


def _doc_id(integration_id: str, scope: str, key: str) -> str:
    return f"{len(integration_id)}:{integration_id}:{scope}:{key}"


class ValuesCache:
    def __init__(self, store: DocumentStore) -> None:
        self._store = store
        # Erasure's write section (gateway.erasure.SubjectErasure.writing), set once erasure exists.
        self.fence: WriteSection = _no_section

    async def read(self, project_id: str, integration: dict[str, Any], key: str) -> dict[str, Any] | None:
        doc = await self._store.get(VALUES, project_id, _doc_id(integration["integration_id"], integration["scope"],
                                                                key))
        return None if doc is None else doc["values"]

    async def write(self, project_id: str, integration: dict[str, Any], key: str, values: dict[str, Any], *,
                    subject_id: str | None, started: float | None = None, merge: bool = False) -> None:
        """Keep ``values`` for the scope ``key`` (``merge``: over the values kept already).
        ``started``: when the work that produced them began (erasure's fence compares it)."""
        doc_id = _doc_id(integration["integration_id"], integration["scope"], key)
        ttl = integration["cache_ttl_seconds"] or None  # 0: kept until replaced or erased
        # Project-wide values belong to no subject, whoever's call wrote them.
        scope = integration["scope"]
        subject = key if scope == "subject" else (subject_id or None) if scope == "chat" else None
        section = self.fence(project_id, subject, started or time.time()) if subject else _no_section(
            project_id, "", 0)
        async with section:
            if merge:
                previous = await self._store.get(VALUES, project_id, doc_id)
                values = {**(previous["values"] if previous else {}), **values}
            doc = {"integration_id": integration["integration_id"], "scope": scope, "scope_id": key,
                   "values": values, "updated_at": now_iso()}
            if subject:
                doc["subject_id"] = subject
            await self._store.put(VALUES, project_id, doc_id, doc, ttl_seconds=ttl)

    async def forget_integration(self, project_id: str, integration_id: str) -> int:
        return await self._store.delete_where(VALUES, project_id, {"integration_id": integration_id})

    async def delete_subject(self, project_id: str, subject_id: str) -> int:
        """Every value kept for the subject (erasure)."""
        return await self._store.delete_where(VALUES, project_id, {"subject_id": subject_id})
