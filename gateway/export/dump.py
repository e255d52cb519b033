"""Writing an export: the lines of one subject's data, or of a whole project's.

A line is one JSON object: ``{"kind": ..., "data": {...}}``, a document line adding its ``id``
(and ``tallies`` or ``expires_at`` when it has them). The first line is the header (format,
version, project, subject, when, which gateway), the last the ``end`` line counting the lines
before it. Lines come a page of documents at a time, so a project of any size is written in
bounded memory (beside a page, only the ids of the subjects with claims are held, to add their
truth-change counts at the end). The export reads the store only: on SQLite it runs beside a
serving gateway.

It is not a snapshot: a write landing while the export runs may or may not be in it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import orjson

from gateway.clock import now_iso
from gateway.export.kinds import (
    CLAIM_TRUTH_CHANGES, END, FORMAT, FORMAT_VERSION, HEADER, PROJECT_KINDS, SUBJECT_KINDS, Kind,
)
from gateway.integrations.cache import VALUES
from gateway.integrations.definitions import INTEGRATIONS
from gateway.memory.truth_graph import CHANGES as TRUTH_CHANGES
from gateway.memory.truth_graph import CLAIMS, SNAPSHOTS
from gateway.memory.truth_graph import _subject_key as truth_changes_key
from gateway.memory_policies import POLICIES
from gateway.prompts import PROMPTS
from gateway.records.records import RECORDS, SCHEMAS
from gateway.store import DocumentStore

# Documents read per store call.
PAGE = 500


def gateway_version() -> str:
    try:
        return version("mnx-gateway")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def line(kind: str, data: Any, **extra: Any) -> bytes:
    return orjson.dumps({"kind": kind, **extra, "data": data}) + b"\n"


async def export_lines(store: DocumentStore, project_id: str, subject_id: str | None) -> AsyncIterator[bytes]:
    """The export of ``subject_id``'s data in the project, or of the whole project (None)."""
    yield line(HEADER, {"format": FORMAT, "version": FORMAT_VERSION, "project_id": project_id,
                        "subject_id": subject_id, "exported_at": now_iso(), "gateway_version": gateway_version()})
    written = 1
    dumper = _Dumper(store, project_id)
    body = dumper.subject(subject_id) if subject_id is not None else dumper.project()
    async for chunk in body:
        written += 1
        yield chunk
    yield line(END, {"lines": written})


class _Dumper:
    def __init__(self, store: DocumentStore, project_id: str) -> None:
        self._store = store
        self._project = project_id
        # The integrations' cache lifetimes, read once each (integration values' expiry).
        self._ttls: dict[str, float | None] = {}

    async def project(self) -> AsyncIterator[bytes]:
        for kind in PROJECT_KINDS:
            async for chunk in self._documents(kind, None):
                yield chunk
        subjects: dict[str, None] = {}
        for kind in SUBJECT_KINDS:
            async for chunk in self._documents(kind, None, seen_subjects=subjects if kind.collection is CLAIMS
                                               else None):
                yield chunk
        for subject in subjects:
            async for chunk in self._truth_changes(subject):
                yield chunk

    async def subject(self, subject_id: str) -> AsyncIterator[bytes]:
        # The schemas of the subject's records first: records mean nothing without them.
        type_names: dict[str, None] = {}
        for where in ({"owner_id": subject_id}, {"collaborators": subject_id}):
            for doc in await self._all(RECORDS, where):
                type_names[doc["type_name"]] = None
        for type_name in type_names:
            schema = await self._store.get(SCHEMAS, self._project, type_name)
            if schema is not None:
                yield line(SCHEMAS.name, schema, id=type_name)
        records_seen: set[str] = set()
        for kind in SUBJECT_KINDS:
            if kind.collection is RECORDS:
                # Owned, and those the subject collaborates on (each once).
                for where in ({"owner_id": subject_id}, {"collaborators": subject_id}):
                    async for chunk in self._documents(kind, where, skip=records_seen):
                        yield chunk
                continue
            where = ({"scope": "subject", "scope_id": subject_id} if kind.collection in (PROMPTS, POLICIES)
                     else {"subject_id": subject_id})
            async for chunk in self._documents(kind, where):
                yield chunk
        async for chunk in self._truth_changes(subject_id):
            yield chunk

    async def _documents(self, kind: Kind, where: Mapping[str, str] | None, *, skip: set[str] | None = None,
                         seen_subjects: dict[str, None] | None = None) -> AsyncIterator[bytes]:
        offset = 0
        while True:
            docs = await self._store.find(kind.collection, self._project, where, limit=PAGE, offset=offset)
            if not docs:
                return
            offset += len(docs)
            ids = [kind.doc_id(doc) for doc in docs]
            tallies = await self._store.tallies(kind.collection, self._project, ids) if kind.tallied else {}
            for doc_id, doc in zip(ids, docs):
                if skip is not None:
                    if doc_id in skip:
                        continue
                    skip.add(doc_id)
                if seen_subjects is not None:
                    seen_subjects[doc["subject_id"]] = None
                extra: dict[str, Any] = {"id": doc_id}
                if doc_id in tallies:
                    extra["tallies"] = {name: {"count": tally.count, "last_at": tally.last_at}
                                        for name, tally in sorted(tallies[doc_id].items())}
                expires_at = await self._expires_at(kind, doc)
                if expires_at is not None:
                    extra["expires_at"] = expires_at
                yield line(kind.name, _exported(kind, doc), **extra)
            if len(docs) < PAGE:
                return

    async def _truth_changes(self, subject_id: str) -> AsyncIterator[bytes]:
        key = truth_changes_key(subject_id)
        tally = (await self._store.tallies(SNAPSHOTS, self._project, [key])).get(key, {}).get(TRUTH_CHANGES)
        if tally is not None:
            yield line(CLAIM_TRUTH_CHANGES, {"subject_id": subject_id, "count": tally.count,
                                             "last_at": tally.last_at})

    async def _all(self, collection: Any, where: Mapping[str, str]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            page = await self._store.find(collection, self._project, where, limit=PAGE, offset=len(found))
            found += page
            if len(page) < PAGE:
                return found

    async def _expires_at(self, kind: Kind, doc: Mapping[str, Any]) -> float | None:
        if kind.expires_at is not None:
            return kind.expires_at(doc)
        if kind.collection is not VALUES:
            return None
        # A cached value lives its integration's cache_ttl_seconds from its last write (0: until replaced).
        integration_id = doc["integration_id"]
        if integration_id not in self._ttls:
            integration = await self._store.get(INTEGRATIONS, self._project, integration_id)
            self._ttls[integration_id] = (integration or {}).get("cache_ttl_seconds") or None
        ttl = self._ttls[integration_id]
        if ttl is None:
            return None
        return datetime.fromisoformat(doc["updated_at"]).timestamp() + ttl


def _exported(kind: Kind, doc: dict[str, Any]) -> dict[str, Any]:
    if kind.collection is INTEGRATIONS:
        # Secrets stay where they are: an export is a file people pass around.
        return {**doc, "secrets": {}}
    return doc
