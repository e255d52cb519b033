"""Keeping each memory's vector-index point in step with its stored document.

The store is the source of truth and is written first; the index holds what search reads
(vectors and the fields that filter and score a hit). This module builds a memory's index
entry, rewrites it after a change, lends each memory its neighbours' words as context, and
notes a repair before a write so a crash between the two writes is finished later.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any
from collections.abc import AsyncIterator, Sequence

from gateway.jobs.queue import JobQueue
from gateway.memory.embedding import EMBED_BATCH, Embedder
from gateway.memory.lexical import Lexicon
from gateway.memory.reinforcement import with_tallies
from gateway.memory.vector_index import IndexedMemory, VectorIndex
from gateway.store import Collection, DocumentStore

# "listing" is the one field list queries filter on: active, superseded or deleted; "_text_key"
# finds a memory stated again word for word without a search (Memories.create).
MEMORIES = Collection("memories", indexes=(("subject_id",), ("subject_id", "listing"), ("subject_id", "_text_key")))
# The job kind of an index repair (see IndexUpkeep.index_repair).
REINDEX_JOB = "memory.reindex"


def neighbours(doc: dict[str, Any]) -> list[str]:
    """The ids of the memories stored just before and just after this one (same subject)."""
    return [i for i in (doc.get("_previous_id"), doc.get("_next_id")) if i]


def index_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """What the vector index keeps of a memory: enough to filter, score and show a hit."""
    return {
        "text": doc["text"], "kind": doc["kind"], "status": doc["listing"], "visibility": doc["visibility"],
        "importance": doc["importance"], "confidence": doc["confidence"], "is_temporal": doc["is_temporal"],
        "created_at": doc["_created"], "last_seen_at": doc.get("_last_seen"), "seen_count": doc["seen_count"],
        "claims": doc.get("_claims", []), "terms": doc["_terms"], "context_terms": doc["_context_terms"],
    }


class IndexUpkeep:
    def __init__(self, store: DocumentStore, index: VectorIndex, lexicon: Lexicon, *,
                 embedder: Embedder | None = None, repairs: JobQueue | None = None,
                 repair_after_seconds: float = 60.0) -> None:
        self._store = store
        self._index = index
        self._lexicon = lexicon
        self._embedder = embedder
        # Where index repairs are noted before a write (see index_repair); None: not noted.
        self._repairs = repairs
        self._repair_after_seconds = repair_after_seconds

    async def reindex(self, project_id: str, memory_id: str, *, api_key: str | None = None) -> None:
        """Write a stored memory's index point again from the store (idempotent). A process
        that died between the store write and the index write left the memory listed but
        unsearchable (or deleted but findable); a re-run learn job or an index repair job
        calls this to finish the write."""
        await self.reindex_many(project_id, [memory_id], api_key=api_key)

    async def reindex_many(self, project_id: str, memory_ids: Sequence[str], *, api_key: str | None = None,
                           batch: int = EMBED_BATCH) -> None:
        """``reindex`` for many memories: ``batch`` of them per embedder call and per index write
        (an import re-indexes thousands; one model call each cost most of its time)."""
        for start in range(0, len(memory_ids), batch):
            wanted = list(dict.fromkeys(memory_ids[start:start + batch]))
            docs = [doc for doc in [await self._store.get(MEMORIES, project_id, i) for i in wanted] if doc is not None]
            if docs:
                await self.write_points(project_id, docs, api_key=api_key)

    async def write_points(self, project_id: str, docs: Sequence[dict[str, Any]], *,
                           api_key: str | None = None) -> int:
        """Write stored memories' index points (one embedder call, one index write); returns how
        many texts were embedded. Each point carries the memory's counts as they are now, tallies
        included."""
        tallies = await self._store.tallies(MEMORIES, project_id, [doc["id"] for doc in docs])
        counted = [with_tallies(dict(doc), tallies.get(doc["id"])) for doc in docs]
        # A deleted memory keeps its point (its owner's erasure finds it) but no search can
        # reach it, nor can it be restored: it needs no vector.
        wanted = [i for i, doc in enumerate(counted) if doc["listing"] != "deleted"]
        dense: list[list[float] | None] = [None] * len(counted)
        if self._embedder is not None and wanted:
            vectors = await self._embedder.embed([counted[i]["text"] for i in wanted], api_key=api_key)
            for i, vector in zip(wanted, vectors):
                dense[i] = vector
        await self._index.upsert(project_id, [self.indexed(doc, vector) for doc, vector in zip(counted, dense)])
        return len(wanted) if self._embedder is not None else 0

    async def repair(self, project_id: str, memory_ids: Sequence[str]) -> None:
        """Run an index-repair job: rewrite each memory's index point from the store."""
        await self.reindex_many(project_id, memory_ids)

    @asynccontextmanager
    async def index_repair(self, project_id: str, subject_id: str, memory_ids: Sequence[str]) -> AsyncIterator[None]:
        """A durable note, written before the store and index writes for ``memory_ids`` and
        removed once both are done, that those memories' index points are being rewritten.

        The store is the source of truth and is written first; if the process dies (or the
        index write fails) before the index catches up, the note stays and, once it is due
        (``memory.vectors.repair_after_seconds`` later), the job worker re-indexes the
        memories from the store. Without it, such a memory would stay listed but unfindable,
        or deleted but still recalled. Recall bookkeeping (seen counts) is not noted: a
        lost update there only shifts a score. The note names the subject, so the subject's
        erasure deletes it with the subject's other jobs.
        """
        if self._repairs is None:
            yield
            return
        job_id = await self._repairs.enqueue(project_id, REINDEX_JOB,
                                             {"memory_ids": list(memory_ids), "subject_id": subject_id},
                                             delay_seconds=self._repair_after_seconds)
        yield
        await self._repairs.complete(job_id)

    async def update_index(self, project_id: str, doc: dict[str, Any]) -> None:
        """Rewrite the memory's index fields (not its vectors): after a change of status, score or metadata."""
        if "_terms" not in doc:
            self.indexed(doc, None)  # a memory stored before terms were kept: add them
        await self._index.update_fields(project_id, doc["subject_id"], doc["id"], index_fields(doc))

    def indexed(self, doc: dict[str, Any], dense: list[float] | None) -> IndexedMemory:
        """The memory's index entry. Also keeps its terms in ``doc`` (the caller stores
        it), so a later payload-only index update need not tokenize it again."""
        lexical = self._lexicon.index_text(doc["text"], doc.get("_previous_text", ""), doc.get("_next_text", ""))
        doc["_terms"], doc["_context_terms"] = lexical.terms, lexical.context_terms
        return IndexedMemory(doc["id"], doc["subject_id"], index_fields(doc), lexical.vector, dense)

    async def link_next(self, project_id: str, memory_id: str, next_id: str) -> None:
        """Record the memory stored after ``memory_id``; it lends its words as context."""
        doc = await self._store.get(MEMORIES, project_id, memory_id)
        if doc is None:
            return
        doc["_next_id"] = next_id
        if "_previous_id" in doc:
            await self._lend_context(project_id, doc, unsaved=True)
        else:  # stored before neighbours were linked: its context stays as it was
            await self._store.put(MEMORIES, project_id, memory_id, doc)

    async def refresh_context(self, project_id: str, memory_ids: Sequence[str]) -> None:
        """Give each memory the current text of its active neighbours as context: a neighbour
        deleted, superseded or edited must not keep lending its old words (a deleted
        memory's words must not find anything)."""
        for memory_id in dict.fromkeys(memory_ids):
            doc = await self._store.get(MEMORIES, project_id, memory_id)
            if doc is not None and "_previous_id" in doc:  # else stored before neighbours were linked
                await self._lend_context(project_id, doc, unsaved=False)

    async def _lend_context(self, project_id: str, doc: dict[str, Any], *, unsaved: bool) -> None:
        """Store ``doc`` with its neighbours' current text, and index it again if that changed
        (``unsaved``: store it even if not, it has other changes)."""
        previous = await self._active_text(project_id, doc["_previous_id"])
        following = await self._active_text(project_id, doc.get("_next_id"))
        if (previous, following) == (doc.get("_previous_text", ""), doc.get("_next_text", "")):
            if unsaved:
                await self._store.put(MEMORIES, project_id, doc["id"], doc)
            return
        doc["_previous_text"], doc["_next_text"] = previous, following
        indexed = self.indexed(doc, None)
        await self._store.put(MEMORIES, project_id, doc["id"], doc)
        await self._index.update_lexical(project_id, doc["subject_id"], doc["id"], indexed.sparse, indexed.fields)

    async def _active_text(self, project_id: str, memory_id: str | None) -> str:
        doc = await self._store.get(MEMORIES, project_id, memory_id) if memory_id else None
        return doc["text"] if doc is not None and doc["listing"] == "active" else ""
