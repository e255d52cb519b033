"""The memories of a project: create with versioning, list, edit, search, recall, erase.

Each memory is a document in the document store (what the REST API reads and
pages through) plus a point in the vector index (what search reads: its vectors
and the fields that filter and score it). Writes go to the store first, then to
the index; search never reads the store.
"""

from __future__ import annotations

import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Sequence

from qdrant_edge import SparseVector

from gateway.clock import from_timestamp
from gateway.config import MemoryConfig
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.jobs.queue import JobQueue
from gateway.memory.claims import Claim, extract_claims
from gateway.memory.embedding import Embedder
from gateway.memory.events import MemoryEvents
from gateway.memory.lexical import Lexicon, coverage
from gateway.memory.scoring import weight
from gateway.memory.vector_index import IndexedMemory, IndexQuery, VectorHit, VectorIndex
from gateway.memory.versioning import Candidate, Comparer, Decision, decide
from gateway.store import Collection, DocumentStore
from gateway.validation import Body, addressable_id

# "listing" is the one field list queries filter on: active, superseded or deleted.
MEMORIES = Collection("memories", indexes=(("subject_id",), ("subject_id", "listing")))
CLAIMS = Collection("memory_claims", indexes=(("memory_id",), ("subject_id", "predicate"), ("subject_id",)))

MAX_TEXT = 10_000
# A client may choose a memory's id: not one the /memories routes take for themselves.
MAX_ID = 200
_RESERVED_IDS = ("search", "superseded", "recalls")
# The job kind of an index repair (see Memories._index_repair).
REINDEX_JOB = "memory.reindex"
KINDS = ("fact", "preference", "context", "note", "event", "trait", "instruction")
VISIBILITIES = ("private", "shared", "public")
# Weight of conversation context next to the query itself, in the lexical query.
CONTEXT_TERM_WEIGHT = 0.3
# A query term found only in the memory stored before a memory (its context) counts half:
# a hit's score is the share of query terms in its text plus half the share only in its context.
CONTEXT_MATCH_WEIGHT = 0.5
MAX_CONTEXT = 5
_HIDDEN = ("listing", "is_deleted", "_created", "_last_seen", "_previous_id", "_previous_text", "_next_id",
           "_next_text", "_claims", "_terms", "_context_terms")


def to_api(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in _HIDDEN}


def _number(body: dict[str, Any], field: str, low: float, high: float) -> float | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise BadRequest(f"{field} must be a number from {low:g} to {high:g}", code=f"invalid_{field}", param=field)
    return value


def _choice(body: Body, field: str, allowed: Sequence[str]) -> str | None:
    value = body.string(field)
    if value is not None and value not in allowed:
        raise BadRequest(f"{field} must be one of {', '.join(allowed)}", code=f"invalid_{field}", param=field)
    return value


def _tags(data: dict[str, Any]) -> list[str] | None:
    tags = data.get("tags")
    if tags is None:
        return None
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise BadRequest("tags must be an array of strings", code="invalid_tags", param="tags")
    return tags


def _editable_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The optional fields POST and PATCH share, validated; absent ones are left out."""
    body = Body(data)
    fields: dict[str, Any] = {
        "kind": _choice(body, "kind", KINDS),
        "visibility": _choice(body, "visibility", VISIBILITIES),
        "importance": _number(data, "importance", 0, 100),
        "confidence": _number(data, "confidence", 0, 1),
        "tags": _tags(data),
        "metadata": body.obj("metadata"),
    }
    if data.get("is_temporal") is not None:
        fields["is_temporal"] = body.flag("is_temporal", default=False)
    return {k: v for k, v in fields.items() if v is not None}


def _neighbours(doc: dict[str, Any]) -> list[str]:
    """The ids of the memories stored just before and just after this one (same subject)."""
    return [i for i in (doc.get("_previous_id"), doc.get("_next_id")) if i]


def _index_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """What the vector index keeps of a memory: enough to filter, score and show a hit."""
    return {
        "text": doc["text"], "kind": doc["kind"], "status": doc["listing"], "visibility": doc["visibility"],
        "importance": doc["importance"], "confidence": doc["confidence"], "is_temporal": doc["is_temporal"],
        "created_at": doc["_created"], "last_seen_at": doc.get("_last_seen"), "seen_count": doc["seen_count"],
        "claims": doc.get("_claims", []), "terms": doc["_terms"], "context_terms": doc["_context_terms"],
    }


@dataclass(frozen=True)
class SearchHit:
    memory_id: str
    text: str
    fields: dict[str, Any]
    # How well the memory matches the query, 0-1 (share of its terms; cosine with a dense model).
    score: float
    # The ranking key: relevance relative to the best match, times the memory's weight.
    effective_score: float

    def to_api(self) -> dict[str, Any]:
        return {"id": self.memory_id, "text": self.text, "kind": self.fields.get("kind"),
                "importance": self.fields.get("importance"), "is_temporal": self.fields.get("is_temporal", False),
                "created_at": from_timestamp(self.fields["created_at"]) if self.fields.get("created_at") else None,
                "score": round(self.score, 4), "effective_score": round(self.effective_score, 4)}


class Memories:
    def __init__(self, store: DocumentStore, index: VectorIndex, config: MemoryConfig,
                 embedder: Embedder | None = None, lexicon: Lexicon | None = None,
                 events: MemoryEvents | None = None, repairs: JobQueue | None = None) -> None:
        self._store = store
        # Where index repairs are noted before a write (see _index_repair); None: not noted.
        self._repairs = repairs
        self.events = events or MemoryEvents()
        self._index = index
        self._config = config
        self.embedder = embedder
        self._lexicon = lexicon or Lexicon(contextual=config.vectors.lexical == "contextual")
        self._comparer = Comparer(self._lexicon)

    # --- reading -------------------------------------------------------------------------

    async def exists(self, project_id: str, memory_id: str) -> bool:
        return await self._store.get(MEMORIES, project_id, memory_id) is not None

    async def reindex(self, project_id: str, memory_id: str, *, api_key: str | None = None) -> None:
        """Write a stored memory's index point again from the store (idempotent). A process
        that died between the store write and the index write left the memory listed but
        unsearchable (or deleted but findable); a re-run learn job or an index repair job
        calls this to finish the write."""
        doc = await self._store.get(MEMORIES, project_id, memory_id)
        if doc is None:
            return
        dense = (await self._embed([doc["text"]], api_key))[0] if self.embedder else None
        await self._index.upsert(project_id, [self._indexed(doc, dense)])

    async def get(self, project_id: str, memory_id: str, *, allow_deleted: bool = False) -> dict[str, Any]:
        doc = await self._store.get(MEMORIES, project_id, memory_id)
        if doc is None:
            raise NotFound("memory not found", code="memory_not_found")
        if doc.get("is_deleted") and not allow_deleted:
            raise NotFound("memory was deleted", code="memory_deleted")
        return doc

    async def list(self, project_id: str, subject_id: str, *, limit: int, offset: int,
                   include_superseded: bool = False, include_deleted: bool = False) -> list[dict[str, Any]]:
        if not include_superseded and not include_deleted:
            return await self._store.find(MEMORIES, project_id, {"subject_id": subject_id, "listing": "active"},
                                          limit=limit, offset=offset, newest_first=True)
        everyone = {"subject_id": subject_id}
        if include_superseded and include_deleted:
            return await self._store.find(MEMORIES, project_id, everyone, limit=limit, offset=offset, newest_first=True)
        shown = {"active", "superseded" if include_superseded else "deleted"}
        # Read newest first, a chunk at a time (as many as the page would take if nothing were
        # hidden), until the page is full: a page costs what it skips, not the whole history.
        chunk_size = offset + limit
        matches: list[dict[str, Any]] = []
        start = 0
        while len(matches) < offset + limit:
            chunk = await self._store.find(MEMORIES, project_id, everyone, limit=chunk_size, offset=start,
                                           newest_first=True)
            matches += [doc for doc in chunk if doc["listing"] in shown]
            if len(chunk) < chunk_size:
                break
            start += chunk_size
        return matches[offset:offset + limit]

    async def superseded(self, project_id: str, subject_id: str, *, limit: int, offset: int) -> list[dict[str, Any]]:
        return await self._store.find(MEMORIES, project_id, {"subject_id": subject_id, "listing": "superseded"},
                                      limit=limit, offset=offset, newest_first=True)

    async def claims(self, project_id: str, memory_id: str) -> list[dict[str, Any]]:
        await self.get(project_id, memory_id)
        return await self._store.find(CLAIMS, project_id, {"memory_id": memory_id})

    # --- writing -------------------------------------------------------------------------

    async def create(self, project_id: str, data: dict[str, Any], *, source_type: str = "explicit",
                     api_key: str | None = None, origin: dict[str, Any] | None = None,
                     claims: Sequence[Claim] | None = None) -> tuple[dict[str, Any], bool]:
        """(response body, created); a near-duplicate is skipped and reinforces the original.

        ``origin`` records where a learned memory came from (chat, messages, job);
        ``claims`` are an extractor's own, used instead of those read from the text.
        """
        body = Body(data)
        subject_id = body.string("subject_id", required=True)
        text = body.string("text", required=True, max_length=MAX_TEXT, strip=True)
        assert subject_id is not None and text is not None
        fields = _editable_fields(data)
        memory_id = addressable_id(body.string("id"), MAX_ID, _RESERVED_IDS) or f"mem_{secrets.token_hex(12)}"
        no_supersede = body.flag("no_supersede", default=False)
        source = body.string("source_type") or body.string("source") or source_type
        if claims is None:
            claims = extract_claims(text) if body.flag("extract_claims", default=True) else []
        replaces = body.string("supersedes") or None
        if await self._store.get(MEMORIES, project_id, memory_id) is not None:
            raise Conflict(f"a memory with id {memory_id} already exists", code="memory_exists", param="id")
        if replaces is not None:
            await self._check_replaceable(project_id, subject_id, replaces)

        dense = (await self._embed([text], api_key))[0] if self.embedder else None
        decision = Decision("create")
        if not no_supersede:
            # The memory named in ``supersedes`` is replaced, never a reason to skip this one.
            candidates = [candidate for candidate in await self._candidates(project_id, subject_id, text, claims, dense)
                          if candidate.memory_id != replaces]
            decision = decide(self._comparer, self._config.versioning, text, claims, candidates)
        summary = {"subject_id": subject_id, "text": text, "kind": fields.get("kind", "fact")}
        if decision.action == "skip":
            assert decision.duplicate_of is not None
            await self._reinforce(project_id, decision.duplicate_of)
            return {"id": None, **summary, "created": False, "skipped": True, "reason": "duplicate",
                    "duplicate_of": decision.duplicate_of}, False
        if replaces is not None and replaces not in decision.superseded_ids:
            replaced = await self._store.get(MEMORIES, project_id, replaces)
            if replaced is not None and replaced["status"] == "active":
                decision = Decision("supersede", superseded_ids=[*decision.superseded_ids, replaces])

        # The subject's memory stored just before this one: each lends the other its words
        # as context (Lexicon.index_text), while both are active. A plain lexicon takes no
        # context, so its memories are not linked at all (nothing to re-index on later writes).
        newest = (await self._store.find(MEMORIES, project_id, {"subject_id": subject_id}, limit=1, newest_first=True)
                  if self._lexicon.contextual else [])
        previous = newest[0] if newest else None
        lends = previous is not None and previous["listing"] == "active" and (
            previous["id"] not in decision.superseded_ids)
        now = time.time()
        stamp = from_timestamp(now)
        doc = {
            "id": memory_id, "project_id": project_id, "subject_id": subject_id, "text": text,
            "kind": "fact", "visibility": "private", "importance": 50, "confidence": 0.8, "is_temporal": False,
            "tags": [], "metadata": {}, **fields,
            "status": "active", "superseded_by": None, "source_type": source,
            "created_at": stamp, "updated_at": stamp, "last_seen_at": None, "seen_count": 0,
            "reinforcement_count": 0, "last_reinforced_at": None,
            "listing": "active", "is_deleted": False, "_created": now,
            "_previous_id": previous["id"] if previous else None, "_next_id": None,
            "_previous_text": previous["text"] if lends and previous else "", "_next_text": "",
            "_claims": [[c.predicate, c.value] for c in claims],
        }
        if origin is not None:
            doc["origin"] = origin
        indexed = self._indexed(doc, dense)
        before = [previous["id"]] if previous else []
        async with self._index_repair(project_id, subject_id, [memory_id, *before, *decision.superseded_ids]):
            await self._store.put(MEMORIES, project_id, memory_id, doc)
            await self._save_claims(project_id, doc, claims, stamp)
            await self._index.upsert(project_id, [indexed])
            if previous is not None:
                await self._link_next(project_id, previous["id"], memory_id)
            for old_id in decision.superseded_ids:
                await self._set_status(project_id, old_id, "superseded", superseded_by=memory_id)
        self.events.publish(project_id, subject_id, "memory.created", {
            "id": memory_id, "subject_id": subject_id, "text": text, "kind": doc["kind"],
            "visibility": doc["visibility"], "importance": doc["importance"], "tags": doc["tags"],
            "created_at": stamp})
        for old_id in decision.superseded_ids:
            self.events.publish(project_id, subject_id, "memory.superseded", {"id": old_id, "superseded_by": memory_id})
        return {"id": memory_id, **summary, "created": True, "superseded_count": len(decision.superseded_ids),
                "superseded_ids": decision.superseded_ids}, True

    async def _check_replaceable(self, project_id: str, subject_id: str, memory_id: str) -> None:
        """A memory named in ``supersedes`` must be one of the subject's own, not deleted."""
        doc = await self._store.get(MEMORIES, project_id, memory_id)
        if doc is None or doc["subject_id"] != subject_id:
            raise NotFound(f"supersedes names no memory of subject {subject_id}", code="memory_not_found",
                           param="supersedes")
        if doc.get("is_deleted"):
            raise NotFound("supersedes names a deleted memory", code="memory_deleted", param="supersedes")

    async def update(self, project_id: str, memory_id: str, data: dict[str, Any], *,
                     api_key: str | None = None) -> None:
        doc = await self.get(project_id, memory_id)
        fields = _editable_fields(data)
        text = Body(data).string("text", max_length=MAX_TEXT, strip=True)
        if text:
            fields["text"] = text
        if not fields:
            return
        # Embed first: if the model fails, nothing has changed yet.
        dense = (await self._embed([fields["text"]], api_key))[0] if self.embedder and "text" in fields else None
        doc.update(fields, updated_at=from_timestamp(time.time()))
        if "text" in fields:
            claims = extract_claims(doc["text"])
            doc["_claims"] = [[c.predicate, c.value] for c in claims]
            indexed = self._indexed(doc, dense)
        async with self._index_repair(project_id, doc["subject_id"], [memory_id, *_neighbours(doc)]):
            await self._store.put(MEMORIES, project_id, memory_id, doc)
            if "text" in fields:
                await self._store.delete_where(CLAIMS, project_id, {"memory_id": memory_id})
                await self._save_claims(project_id, doc, claims, doc["updated_at"])
                await self._index.upsert(project_id, [indexed])
                await self._refresh_context(project_id, _neighbours(doc))
            else:
                await self._update_index(project_id, doc)
        self.events.publish(project_id, doc["subject_id"], "memory.updated",
                            {"id": memory_id, "subject_id": doc["subject_id"]})

    async def delete(self, project_id: str, memory_id: str) -> bool:
        doc = await self._store.get(MEMORIES, project_id, memory_id)
        if doc is None or doc.get("is_deleted"):
            return False
        stamp = from_timestamp(time.time())
        # deleted_at shows in listings that include deleted memories (is_deleted stays internal).
        doc.update(is_deleted=True, listing="deleted", updated_at=stamp, deleted_at=stamp)
        async with self._index_repair(project_id, doc["subject_id"], [memory_id, *_neighbours(doc)]):
            await self._store.put(MEMORIES, project_id, memory_id, doc)
            await self._update_index(project_id, doc)
            await self._refresh_context(project_id, _neighbours(doc))
        self.events.publish(project_id, doc["subject_id"], "memory.deleted", {"id": memory_id})
        return True

    async def restore(self, project_id: str, memory_id: str) -> tuple[dict[str, Any], bool]:
        doc = await self.get(project_id, memory_id, allow_deleted=True)
        if doc.get("is_deleted"):
            raise BadRequest("memory was deleted and cannot be restored", code="memory_deleted")
        if doc["status"] == "active":
            return doc, False
        async with self._index_repair(project_id, doc["subject_id"], [memory_id, *_neighbours(doc)]):
            await self._set_status(project_id, memory_id, "active", superseded_by=None)
        self.events.publish(project_id, doc["subject_id"], "memory.updated", {"id": memory_id, "status": "active"})
        return doc, True

    async def erase_subject(self, project_id: str, subject_id: str) -> dict[str, int]:
        """Remove every memory, claim and vector of one subject (not a soft delete)."""
        # The index first: if the process dies half-way, what is left is listed (and erased
        # by the next call), never findable without a stored memory behind it.
        await self._index.delete_subject(project_id, subject_id)
        memories = await self._store.delete_where(MEMORIES, project_id, {"subject_id": subject_id})
        claims = await self._store.delete_where(CLAIMS, project_id, {"subject_id": subject_id})
        return {"memories": memories, "claims": claims}

    # --- search and recall ---------------------------------------------------------------

    async def search(self, project_id: str, subject_id: str, query: str, *, limit: int, min_score: float = 0.0,
                     context: Sequence[str] = (), api_key: str | None = None,
                     use_dense: bool = True) -> list[SearchHit]:
        """The subject's (and the project's shared) active memories best matching ``query``.

        ``use_dense=False`` searches lexically only, even with an embedder configured."""
        dense = (await self._embed([query], api_key))[0] if self.embedder and use_dense else None
        sparse = self._query_vector(query, context[-MAX_CONTEXT:])
        hits = await self._index.search(project_id, IndexQuery(subject_id, sparse, dense, limit=limit))
        return self._rank(query, dense, hits, min_score)

    async def mark_recalled(self, project_id: str, hits: Sequence[SearchHit]) -> None:
        """Reinforce recalled memories: seen_count up, decay restarted from now."""
        now = time.time()
        docs = []
        for hit in hits:
            doc = await self._store.get(MEMORIES, project_id, hit.memory_id)
            if doc is not None:
                doc.update(seen_count=doc["seen_count"] + 1, last_seen_at=from_timestamp(now), _last_seen=now)
                docs.append((hit.memory_id, doc))
        # One write for all of them: this runs before the chat is forwarded.
        await self._store.put_many(MEMORIES, project_id, docs)
        for _, doc in docs:
            await self._update_index(project_id, doc)

    def _query_vector(self, query: str, context: Sequence[str]) -> SparseVector:
        weights = {index: 1.0 for index in self._lexicon.query_vector(query).indices}
        for line in context:
            for index in self._lexicon.query_vector(line).indices:
                weights.setdefault(index, CONTEXT_TERM_WEIGHT)
        ordered = sorted(weights)
        return SparseVector(ordered, [weights[i] for i in ordered])

    def _rank(self, query: str, dense: list[float] | None, hits: Sequence[VectorHit],
              min_score: float) -> list[SearchHit]:
        if not hits:
            return []
        query_terms = self._lexicon.terms(query)
        best = max(hit.rank_score for hit in hits) or 1.0
        now = time.time()
        ranked = []
        for hit in hits:
            text = hit.fields.get("text", "")
            score = (coverage(query_terms, hit.fields.get("terms", ()))
                     + CONTEXT_MATCH_WEIGHT * coverage(query_terms, hit.fields.get("context_terms", ())))
            if hit.similarity is not None:
                score = max(score, hit.similarity)
            if score < min_score:
                continue
            effective = hit.rank_score / best * weight(hit.fields, now, self._config.recall)
            ranked.append(SearchHit(hit.memory_id, text, hit.fields, score, effective))
        ranked.sort(key=lambda h: h.effective_score, reverse=True)
        return ranked

    # --- internals -----------------------------------------------------------------------

    async def _embed(self, texts: list[str], api_key: str | None) -> list[list[float]]:
        assert self.embedder is not None
        return await self.embedder.embed(texts, api_key=api_key)

    @asynccontextmanager
    async def _index_repair(self, project_id: str, subject_id: str, memory_ids: Sequence[str]) -> AsyncIterator[None]:
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
                                             delay_seconds=self._config.vectors.repair_after_seconds)
        yield
        await self._repairs.complete(job_id)

    async def repair(self, project_id: str, memory_ids: Sequence[str]) -> None:
        """Run an index-repair job: rewrite each memory's index point from the store."""
        for memory_id in memory_ids:
            await self.reindex(project_id, memory_id)

    async def _update_index(self, project_id: str, doc: dict[str, Any]) -> None:
        if "_terms" not in doc:
            self._indexed(doc, None)  # a memory stored before terms were kept: add them
        await self._index.update_fields(project_id, doc["subject_id"], doc["id"], _index_fields(doc))

    def _indexed(self, doc: dict[str, Any], dense: list[float] | None) -> IndexedMemory:
        """The memory's index entry. Also keeps its terms in ``doc`` (the caller stores
        it), so a later payload-only index update need not tokenize it again."""
        lexical = self._lexicon.index_text(doc["text"], doc.get("_previous_text", ""), doc.get("_next_text", ""))
        doc["_terms"], doc["_context_terms"] = lexical.terms, lexical.context_terms
        return IndexedMemory(doc["id"], doc["subject_id"], _index_fields(doc), lexical.vector, dense)

    async def _link_next(self, project_id: str, memory_id: str, next_id: str) -> None:
        """Record the memory stored after ``memory_id``; it lends its words as context."""
        doc = await self._store.get(MEMORIES, project_id, memory_id)
        if doc is None:
            return
        doc["_next_id"] = next_id
        if "_previous_id" in doc:
            await self._lend_context(project_id, doc, unsaved=True)
        else:  # stored before neighbours were linked: its context stays as it was
            await self._store.put(MEMORIES, project_id, memory_id, doc)

    async def _refresh_context(self, project_id: str, memory_ids: Sequence[str]) -> None:
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
        indexed = self._indexed(doc, None)
        await self._store.put(MEMORIES, project_id, doc["id"], doc)
        await self._index.update_lexical(project_id, doc["subject_id"], doc["id"], indexed.sparse, indexed.fields)

    async def _active_text(self, project_id: str, memory_id: str | None) -> str:
        doc = await self._store.get(MEMORIES, project_id, memory_id) if memory_id else None
        return doc["text"] if doc is not None and doc["listing"] == "active" else ""

    async def _candidates(self, project_id: str, subject_id: str, text: str, claims: Sequence[Claim],
                          dense: list[float] | None) -> list[Candidate]:
        """The subject's active memories a new one could duplicate or contradict."""
        query = IndexQuery(subject_id, self._lexicon.query_vector(text), dense, include_shared=False,
                           limit=self._config.versioning.candidates)
        found = {hit.memory_id: Candidate(hit.memory_id, hit.fields["text"],
                                          [Claim(p, v) for p, v in hit.fields.get("claims", [])], hit.similarity)
                 for hit in await self._index.search(project_id, query)}
        # Same-slot memories count whatever their wording, even if search did not surface them.
        for claim in claims:
            rows = await self._store.find(CLAIMS, project_id, {"subject_id": subject_id, "predicate": claim.predicate})
            for row in rows:
                if row["status"] == "active" and row["memory_id"] not in found:
                    other = await self._store.get(MEMORIES, project_id, row["memory_id"])
                    if other is not None and other["listing"] == "active":
                        found[other["id"]] = Candidate(other["id"], other["text"],
                                                       [Claim(row["predicate"], row["value"])])
        return list(found.values())

    async def _save_claims(self, project_id: str, doc: dict[str, Any], claims: Sequence[Claim], stamp: str) -> None:
        rows = []
        for claim in claims:
            claim_id = f"ast_{secrets.token_hex(12)}"
            rows.append((claim_id, {
                "id": claim_id, "memory_id": doc["id"], "subject_id": doc["subject_id"],
                "predicate": claim.predicate, "type": "string", "value": claim.value,
                "claim_type": claim.claim_type, "confidence": doc["confidence"], "status": "active",
                "first_seen_at": stamp, "last_seen_at": stamp,
            }))
        if rows:
            await self._store.put_many(CLAIMS, project_id, rows)

    async def _set_status(self, project_id: str, memory_id: str, status: str, *, superseded_by: str | None) -> None:
        doc = await self._store.get(MEMORIES, project_id, memory_id)
        if doc is None:
            return
        stamp = from_timestamp(time.time())
        doc.update(status=status, listing=status, superseded_by=superseded_by, updated_at=stamp,
                   superseded_at=stamp if status == "superseded" else None)
        await self._store.put(MEMORIES, project_id, memory_id, doc)
        for row in await self._store.find(CLAIMS, project_id, {"memory_id": memory_id}):
            row["status"] = "active" if status == "active" else "superseded"
            await self._store.put(CLAIMS, project_id, row["id"], row)
        await self._update_index(project_id, doc)
        # Its neighbours gain or lose its words; a restored memory's own neighbours may have changed.
        await self._refresh_context(project_id, [*_neighbours(doc), *([memory_id] if status == "active" else [])])

    async def _reinforce(self, project_id: str, memory_id: str) -> None:
        """Stating a remembered fact again strengthens it and restarts its decay."""
        doc = await self._store.get(MEMORIES, project_id, memory_id)
        if doc is None:
            return
        now = time.time()
        doc.update(reinforcement_count=doc["reinforcement_count"] + 1, last_reinforced_at=from_timestamp(now),
                   _last_seen=max(now, doc.get("_last_seen") or 0))
        await self._store.put(MEMORIES, project_id, memory_id, doc)
        await self._update_index(project_id, doc)
