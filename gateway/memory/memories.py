"""The memories of a project: create with versioning, list, edit, search, recall, erase.

Each memory is a document in the document store (what the REST API reads and
pages through) plus a point in the vector index (what search reads: its vectors
and the fields that filter and score it). Writes go to the store first, then to
the index (gateway/memory/index_upkeep.py); search never reads the store, and its
hits are scored in gateway/memory/ranking.py.

The claims a memory states live in the truth graph (gateway/memory/truth_graph.py), and
this module keeps the two in agreement: a memory's claims are asserted when it is stored
(with its provenance, when learned); superseding or deleting a memory supersedes or
retracts its claims (but a claim another memory or an API call still states stands),
restoring it makes them the truths of their slots again, rewriting its text retracts what it
no longer says and asserts the new. The other way round (``add_claim``, ``retract_claim``): a
memory left with no truth, because a claim superseded or retracted the last of its own, is
superseded, and retracting a claim brings back the memory of the claim that is true again, if
this claim had superseded it; rewriting a memory's text retires the memories its new claims
leave with no truth likewise. (Restoring a memory is the exception: it undoes one supersede
and changes no other memory, so the memory whose truth it displaced stays active.)
Each operation holds the subject's truth-graph lock (TruthGraph.writing).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from typing import Any
from collections.abc import Awaitable, Callable, Mapping, Sequence

from gateway.clock import from_timestamp
from gateway.config import MemoryConfig, VersioningConfig
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.jobs.queue import JobQueue
from gateway.memory.changes import MemoryEdit, NewMemory
from gateway.memory.claims import Claim, extract_claims, value_key
from gateway.memory.embedding import EMBED_BATCH, Embedder
from gateway.memory.events import MemoryEvents
from gateway.memory.index_upkeep import MEMORIES, REINDEX_JOB, IndexUpkeep, neighbours
from gateway.memory.judgement import Verdict, reconcile
from gateway.memory.lexical import Lexicon
from gateway.memory.paraphrase import shared_encoder
from gateway.memory.ranking import Ranking, SearchHit
from gateway.memory.reinforcement import REINFORCED, index_is_behind, seen_counts, with_tallies
from gateway.memory.truth_graph import DEFAULT_RETRACT_REASON, Asserted, ClaimDoc, NewClaim, Retracted, TruthGraph
from gateway.memory.vector_index import IndexQuery, RecallCounts, VectorIndex
from gateway.memory.versioning import Candidate, Comparer, Decision, decide
from gateway.store import Collection, DocumentStore, Increment
from gateway.subject_locks import SubjectLocks

log = logging.getLogger("gateway.memory")

__all__ = ["DUPLICATE_WORDINGS", "KINDS", "LEGACY_CLAIMS", "MEMORIES", "REINDEX_JOB", "VISIBILITIES", "Memories",
           "SearchHit", "to_api"]

# Where memories' claims were kept before the truth graph: rows no longer written, still read
# for the memories that have them (see ``claims``) and erased with their subject.
LEGACY_CLAIMS = Collection("memory_claims", indexes=(("memory_id",), ("subject_id", "predicate"), ("subject_id",)))

# A learned text versioning judged a duplicate of an active memory (worded differently), by
# (subject, text key): stated again, it is the same duplicate at the cost of one read, not a
# search and a comparison with each candidate. No text is kept (the key is a hash); a pointer
# to a memory no longer active is ignored (and replaced by the next decision), and those of a
# memory whose text is edited are dropped (they matched the old text).
DUPLICATE_WORDINGS = Collection("memory_duplicate_wordings", indexes=(("subject_id",), ("memory_id",)))

KINDS = ("fact", "preference", "context", "note", "event", "trait", "instruction")
VISIBILITIES = ("private", "shared", "public")
# How many lines of conversation context a search takes (the latest ones).
MAX_CONTEXT = 5
_HIDDEN = ("listing", "is_deleted", "_created", "_last_seen", "_previous_id", "_previous_text", "_next_id",
           "_next_text", "_claims", "_terms", "_context_terms", "_text_key")


def text_key(text: str) -> str:
    """The same for two texts that differ only in case, spacing and final punctuation."""
    normal = " ".join(text.casefold().split()).rstrip(" .!")
    return hashlib.blake2b(normal.encode(), digest_size=12).hexdigest()


def _wording_id(subject_id: str, key: str) -> str:
    return hashlib.blake2b(f"{subject_id}\n{key}".encode(), digest_size=16).hexdigest()


def to_api(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in _HIDDEN}


def created_event(doc: dict[str, Any]) -> dict[str, Any]:
    """The data of a stored memory's ``memory.created`` event (contract §13)."""
    return {"id": doc["id"], "subject_id": doc["subject_id"], "text": doc["text"], "kind": doc["kind"],
            "visibility": doc["visibility"], "importance": doc["importance"], "tags": doc["tags"],
            "created_at": doc["created_at"]}


class Memories:
    def __init__(self, store: DocumentStore, index: VectorIndex, config: MemoryConfig,
                 embedder: Embedder | None = None, lexicon: Lexicon | None = None,
                 events: MemoryEvents | None = None, repairs: JobQueue | None = None,
                 claim_locks: SubjectLocks | None = None) -> None:
        self._store = store
        self.events = events or MemoryEvents()
        self._index = index
        self._config = config
        self.embedder = embedder
        self._lexicon = lexicon or Lexicon(contextual=config.vectors.lexical == "contextual")
        # The paraphrase model is read on first use, not here (gateway/memory/paraphrase.py).
        encoder = shared_encoder() if config.versioning.paraphrase else None
        self._comparer = Comparer(self._lexicon, encoder.similarity if encoder else None,
                                  encoder.unknown_words if encoder else None)
        self._upkeep = IndexUpkeep(store, index, self._lexicon, embedder=embedder, repairs=repairs,
                                   repair_after_seconds=config.vectors.repair_after_seconds)
        self._ranking = Ranking(self._lexicon, config.recall)
        self.truth = TruthGraph(store, claim_locks)
        # Called with (project, subject, memory id, "deleted" or "superseded") when a memory leaves
        # use, after its own writes: what was derived from it follows (gateway/profiles.py).
        self.on_left: list[Callable[[str, str, str, str], Awaitable[None]]] = []

    @property
    def versioning(self) -> VersioningConfig:
        """``memory.versioning``: learning reads whether an extraction model judges, and how much it is shown."""
        return self._config.versioning

    # --- reading -------------------------------------------------------------------------

    async def exists(self, project_id: str, memory_id: str) -> bool:
        return await self._store.get(MEMORIES, project_id, memory_id) is not None

    async def get(self, project_id: str, memory_id: str, *, allow_deleted: bool = False) -> dict[str, Any]:
        """One memory as the API shows it (its recall and reinforcement counts included)."""
        doc = await self._stored(project_id, memory_id, allow_deleted=allow_deleted)
        return (await self._counted(project_id, [doc]))[0]

    async def get_many(self, project_id: str, memory_ids: Sequence[str]) -> list[dict[str, Any]]:
        """``get`` for several memories, their counts read together; a memory deleted or erased is
        left out."""
        docs = [doc for doc in [await self._store.get(MEMORIES, project_id, i) for i in memory_ids]
                if doc is not None and not doc.get("is_deleted")]
        return await self._counted(project_id, docs)

    async def _stored(self, project_id: str, memory_id: str, *, allow_deleted: bool = False) -> dict[str, Any]:
        """The stored document, to change and store again (counts as the document has them)."""
        doc = await self._store.get(MEMORIES, project_id, memory_id)
        if doc is None:
            raise NotFound("memory not found", code="memory_not_found")
        if doc.get("is_deleted") and not allow_deleted:
            raise NotFound("memory was deleted", code="memory_deleted")
        return doc

    async def _counted(self, project_id: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``docs`` with their tallies added to their counts (gateway/memory/reinforcement.py)."""
        tallies = await self._store.tallies(MEMORIES, project_id, [doc["id"] for doc in docs]) if docs else {}
        return [with_tallies(doc, tallies.get(doc["id"])) for doc in docs]

    async def page_for_subject(self, project_id: str, subject_id: str, *, limit: int, offset: int,
                               include_superseded: bool = False,
                               include_deleted: bool = False) -> list[dict[str, Any]]:
        """One page of the subject's memories, newest first: the active ones, and the superseded
        or deleted ones if asked for."""
        if not include_superseded and not include_deleted:
            return await self._counted(project_id, await self._store.find(
                MEMORIES, project_id, {"subject_id": subject_id, "listing": "active"}, limit=limit, offset=offset,
                newest_first=True))
        everyone = {"subject_id": subject_id}
        if include_superseded and include_deleted:
            return await self._counted(project_id, await self._store.find(
                MEMORIES, project_id, everyone, limit=limit, offset=offset, newest_first=True))
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
        return await self._counted(project_id, matches[offset:offset + limit])

    async def superseded(self, project_id: str, subject_id: str, *, limit: int, offset: int) -> list[dict[str, Any]]:
        return await self._counted(project_id, await self._store.find(
            MEMORIES, project_id, {"subject_id": subject_id, "listing": "superseded"}, limit=limit, offset=offset,
            newest_first=True))

    async def claims(self, project_id: str, memory_id: str) -> list[dict[str, Any]]:
        """What the memory stated, as assertions (contract §6), each with its claim's status now."""
        doc = await self._stored(project_id, memory_id)
        rows = [{"id": assertion["id"], "claim_id": claim["claim_id"], "predicate": assertion["predicate"],
                 "type": assertion["type"], "value": assertion["value"], "confidence": assertion["confidence"],
                 "status": claim["status"], "slot": claim["slot"], "first_seen_at": assertion["first_seen_at"],
                 "last_seen_at": assertion["last_seen_at"]}
                for assertion, claim in await self.truth.memory_assertions(project_id, memory_id)]
        if rows:
            return rows
        # A memory stored before the truth graph has its claims in the old collection. They are
        # read there rather than migrated: a migration would rewrite every subject's claims at
        # an upgrade for a read that costs one index lookup, and only for such memories. Their
        # status was the memory's own, so it is derived from the memory now.
        legacy = await self._store.find(LEGACY_CLAIMS, project_id, {"memory_id": memory_id})
        status = "active" if doc["listing"] == "active" else "superseded"
        return [{**row, "status": status} for row in legacy]

    # --- writing -------------------------------------------------------------------------

    async def create(self, project_id: str, new: NewMemory, *, api_key: str | None = None,
                     origin: dict[str, Any] | None = None,
                     claims: Sequence[Claim] | None = None,
                     dense: list[float] | None = None,
                     verdict: Verdict | None = None,
                     id_unused: bool = False) -> tuple[dict[str, Any], bool]:
        """(response body, created); a near-duplicate is skipped and reinforces the original.

        ``origin`` records where a learned memory came from (chat, messages, job);
        ``claims`` are an extractor's own, used instead of those read from the text;
        ``dense`` is the text's vector when the caller embedded it with others
        (``dense_vectors``), else the embedder is called for this text alone;
        ``verdict`` is the extraction model's versioning verdict on a learned memory, weighed
        with the rules' (gateway/memory/judgement.py), and recorded as its ``versioning``;
        ``id_unused``: the caller knows no memory has ``new.id`` (a learn job's first attempt
        names its memories after the job; a later one checks them first), so it is not read.
        """
        subject_id, text, fields = new.subject_id, new.text, new.fields.given()
        memory_id = new.id or f"mem_{secrets.token_hex(12)}"
        replaces = new.supersedes
        # Only an id the client chose can be taken already (96 random bits are not).
        if (new.id is not None and not id_unused
                and await self._store.get(MEMORIES, project_id, memory_id) is not None):
            raise Conflict(f"a memory with id {memory_id} already exists", code="memory_exists", param="id")
        if replaces is not None:
            await self._check_replaceable(project_id, subject_id, replaces)
        summary = {"subject_id": subject_id, "text": text, "kind": fields.get("kind", "fact")}
        key = text_key(text)
        if not new.no_supersede and replaces is None:
            # Stated again word for word: a duplicate whatever versioning would weigh (it would
            # find that memory first and skip), known without an embedding or a search.
            same = await self._store.find(MEMORIES, project_id, {"subject_id": subject_id, "_text_key": key}, limit=10)
            original = next((doc for doc in same if doc["listing"] == "active"), None)
            if original is None:
                original = await self._known_duplicate(project_id, subject_id, key)
            if original is not None:
                await self._reinforce(project_id, original["id"], stored=original)
                return {"id": None, **summary, "created": False, "skipped": True, "reason": "duplicate",
                        "duplicate_of": original["id"]}, False

        # Read from the text only now: a word-for-word duplicate (most of what a subject says
        # again) is settled above without them.
        if claims is None:
            claims = extract_claims(text) if new.extract_claims else []
        if self.embedder is None:
            dense = None
        elif dense is None:
            dense = (await self._embed([text], api_key))[0]
        decision = Decision("create")
        searched: dict[str, dict[str, Any]] = {}  # the index fields of the candidates search found
        # Who decided, when an extraction model judged (None: the rules alone, as ever).
        versioning: dict[str, Any] | None = None
        if not new.no_supersede:
            found, searched = await self._candidates(project_id, subject_id, text, claims, dense)
            # The memory named in ``supersedes`` is replaced, never a reason to skip this one.
            candidates = [candidate for candidate in found if candidate.memory_id != replaces]
            if verdict is not None and replaces is None:
                targets = await self._verdict_targets(project_id, subject_id, verdict, candidates)
                decision, versioning = reconcile(self._comparer, self._config.versioning, text, claims, candidates,
                                                 targets, verdict)
            else:
                decision = decide(self._comparer, self._config.versioning, text, claims, candidates)
        if decision.action == "skip":
            assert decision.duplicate_of is not None
            await self._reinforce(project_id, decision.duplicate_of, indexed=searched.get(decision.duplicate_of))
            if replaces is None:
                wording_id = _wording_id(subject_id, key)
                await self._store.put(DUPLICATE_WORDINGS, project_id, wording_id, {
                    "id": wording_id, "subject_id": subject_id, "memory_id": decision.duplicate_of})
            return {"id": None, **summary, "created": False, "skipped": True, "reason": "duplicate",
                    "duplicate_of": decision.duplicate_of,
                    **({"versioning": versioning} if versioning is not None else {})}, False
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
            "status": "active", "superseded_by": None, "superseded_by_claim_id": None,
            "source_type": new.source_type,
            "created_at": stamp, "updated_at": stamp, "last_seen_at": None, "seen_count": 0,
            "reinforcement_count": 0, "last_reinforced_at": None,
            "listing": "active", "is_deleted": False, "_created": now,
            "_previous_id": previous["id"] if previous else None, "_next_id": None,
            "_previous_text": previous["text"] if lends and previous else "", "_next_text": "",
            "_claims": [[c.predicate, c.value] for c in claims], "_text_key": key,
        }
        if origin is not None:
            doc["origin"] = origin
        if versioning is not None:
            doc["versioning"] = versioning
        indexed = self._upkeep.indexed(doc, dense)
        before = [previous["id"]] if previous else []
        async with self.truth.writing(project_id, subject_id), self._upkeep.index_repair(
                project_id, subject_id, [memory_id, *before, *decision.superseded_ids]):
            await self._store.put(MEMORIES, project_id, memory_id, doc)
            if not new.no_supersede:
                # A memory stored as is replaces nothing, so it asserts no truths either (as in
                # Mnexium's engine); its claims still weigh in later versioning (``_claims``).
                await self._assert_claims(project_id, doc, claims)
            await self._index.upsert(project_id, [indexed])
            if previous is not None:
                await self._upkeep.link_next(project_id, previous["id"], memory_id)
            for old_id in decision.superseded_ids:
                await self._set_status(project_id, old_id, "superseded", superseded_by=memory_id)
        self.events.publish(project_id, subject_id, "memory.created", created_event(doc))
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

    async def update(self, project_id: str, memory_id: str, edit: MemoryEdit, *,
                     api_key: str | None = None) -> None:
        doc = await self._stored(project_id, memory_id)
        fields = edit.fields.given()
        if edit.text:
            fields["text"] = edit.text
        if not fields:
            return
        # Embed first: if the model fails, nothing has changed yet.
        dense = (await self._embed([fields["text"]], api_key))[0] if self.embedder and "text" in fields else None
        doc.update(fields, updated_at=from_timestamp(time.time()))
        if "text" in fields:
            claims = extract_claims(doc["text"])
            doc["_claims"] = [[c.predicate, c.value] for c in claims]
            doc["_text_key"] = text_key(doc["text"])
            indexed = self._upkeep.indexed(doc, dense)
        async with self.truth.writing(project_id, doc["subject_id"]), self._upkeep.index_repair(
                project_id, doc["subject_id"], [memory_id, *neighbours(doc)]):
            await self._store.put(MEMORIES, project_id, memory_id, doc)
            if "text" in fields:
                await self._store.delete_where(LEGACY_CLAIMS, project_id, {"memory_id": memory_id})
                await self._store.delete_where(DUPLICATE_WORDINGS, project_id, {"memory_id": memory_id})
                await self._rewrite_claims(project_id, doc, claims)
                await self._index.upsert(project_id, [indexed])
                await self._upkeep.refresh_context(project_id, neighbours(doc))
            else:
                await self._upkeep.update_index(project_id, doc)
        self.events.publish(project_id, doc["subject_id"], "memory.updated",
                            {"id": memory_id, "subject_id": doc["subject_id"]})

    async def delete(self, project_id: str, memory_id: str) -> bool:
        doc = await self._store.get(MEMORIES, project_id, memory_id)
        if doc is None or doc.get("is_deleted"):
            return False
        stamp = from_timestamp(time.time())
        # deleted_at shows in listings that include deleted memories (is_deleted stays internal).
        doc.update(is_deleted=True, listing="deleted", updated_at=stamp, deleted_at=stamp)
        async with self.truth.writing(project_id, doc["subject_id"]), self._upkeep.index_repair(
                project_id, doc["subject_id"], [memory_id, *neighbours(doc)]):
            await self._store.put(MEMORIES, project_id, memory_id, doc)
            await self.truth.retract_memory_claims(project_id, memory_id, "memory_deleted",
                                                   is_active=self._is_active_in(project_id))
            await self._upkeep.update_index(project_id, doc)
            await self._upkeep.refresh_context(project_id, neighbours(doc))
        self.events.publish(project_id, doc["subject_id"], "memory.deleted", {"id": memory_id})
        for hook in self.on_left:
            await hook(project_id, doc["subject_id"], memory_id, "deleted")
        return True

    async def restore(self, project_id: str, memory_id: str) -> tuple[dict[str, Any], bool]:
        doc = await self._stored(project_id, memory_id, allow_deleted=True)
        if doc.get("is_deleted"):
            raise BadRequest("memory was deleted and cannot be restored", code="memory_deleted")
        if doc["status"] == "active":
            return doc, False
        async with self.truth.writing(project_id, doc["subject_id"]), self._upkeep.index_repair(
                project_id, doc["subject_id"], [memory_id, *neighbours(doc)]):
            await self._set_status(project_id, memory_id, "active", superseded_by=None)
        self.events.publish(project_id, doc["subject_id"], "memory.updated", {"id": memory_id, "status": "active"})
        return doc, True

    async def erase_subject(self, project_id: str, subject_id: str) -> dict[str, int]:
        """Remove every memory, claim (the truth graph's and the old collection's) and vector of
        one subject (not a soft delete)."""
        # The index first: if the process dies half-way, what is left is listed (and erased
        # by the next call), never findable without a stored memory behind it.
        await self._index.delete_subject(project_id, subject_id)
        memory_ids = [doc["id"] for doc in await self._store.find(MEMORIES, project_id, {"subject_id": subject_id})]
        await self._store.delete_tallies(MEMORIES, project_id, memory_ids)
        memories = await self._store.delete_where(MEMORIES, project_id, {"subject_id": subject_id})
        async with self.truth.writing(project_id, subject_id):
            claims = await self.truth.erase_subject(project_id, subject_id)
        claims += await self._store.delete_where(LEGACY_CLAIMS, project_id, {"subject_id": subject_id})
        await self._store.delete_where(DUPLICATE_WORDINGS, project_id, {"subject_id": subject_id})
        # This process's caches of texts (versioning's readings, query terms) keep no copy of the
        # subject's words either; another gateway's lose them as those bounded caches fill.
        self._comparer.forget_texts()
        return {"memories": memories, "claims": claims}

    # --- claims through the API (the truth graph, kept in agreement with versioning) -------

    async def add_claim(self, project_id: str, new: NewClaim) -> tuple[Asserted, list[str]]:
        """Assert a claim (``POST /claims``); returns it and the memories it superseded.

        A claim that supersedes a slot's truth supersedes the memories that stated that truth
        too, once none of their claims is a truth any more (see _retire_memories). A claim
        naming its ``source_memory_id`` is that memory's: it is the truth only while the memory
        is active, and never supersedes its own memory."""
        async with self.truth.writing(project_id, new.subject_id):
            if new.source_memory_id is not None:
                source = await self._store.get(MEMORIES, project_id, new.source_memory_id)
                if source is None or source["subject_id"] != new.subject_id or source.get("is_deleted"):
                    raise NotFound(f"source_memory_id names no memory of subject {new.subject_id}",
                                   code="memory_not_found", param="source_memory_id")
                winner = source["listing"] == "active"
            else:
                winner = True
            asserted = await self.truth.assert_claim(project_id, new, winner=winner)
            superseded = await self._retire_memories(project_id, [asserted], spare=new.source_memory_id)
        return asserted, superseded

    async def retract_claim(self, project_id: str, claim_id: str,
                            reason: str = DEFAULT_RETRACT_REASON) -> tuple[Retracted, list[str], list[str]]:
        """Retract a claim (``POST /claims/{id}/retract``); returns it, the memories taken out of
        use (those that stated it and now state no truth: they are superseded, by the claim true
        again if any) and the memories restored (that claim's, if this claim or its memory
        superseded it).

        The claim true again must come from no memory, an active one, or one this claim
        superseded; a claim whose memory was deleted or superseded by something else is passed
        over for the one before it."""
        claim = await self.truth.claim(project_id, claim_id)
        if claim is None:
            raise NotFound(f"no claim {claim_id}", code="claim_not_found", claim_id=claim_id)
        async with self.truth.writing(project_id, claim["subject_id"]):
            return await self._retract_claim(project_id, claim, reason)

    async def _retract_claim(self, project_id: str, claim: ClaimDoc,
                             reason: str) -> tuple[Retracted, list[str], list[str]]:
        claim_id = claim["claim_id"]
        behind = await self.truth.memories_behind(project_id, claim)
        replaced_by = {claim_id, *behind}

        def replaced_by_this(doc: dict[str, Any]) -> bool:
            return doc.get("superseded_by") in replaced_by or doc.get("superseded_by_claim_id") in replaced_by

        async def may_return(earlier: dict[str, Any]) -> bool:
            memory_id = earlier.get("source_memory_id")
            if not memory_id:
                return True
            doc = await self._store.get(MEMORIES, project_id, memory_id)
            if doc is None or doc.get("is_deleted"):
                return False
            return doc["listing"] == "active" or replaced_by_this(doc)

        retracted = await self.truth.retract(project_id, claim_id, reason, may_return=may_return)
        restored = retracted.restored
        superseded = [memory_id for memory_id in behind
                      if await self._supersede_for_claim(project_id, memory_id, restored)]
        brought_back: list[str] = []
        memory_id = restored.get("source_memory_id") if restored is not None else None
        if memory_id:
            doc = await self._store.get(MEMORIES, project_id, memory_id)
            if (doc is not None and not doc.get("is_deleted") and doc["listing"] == "superseded"
                    and replaced_by_this(doc)):
                async with self._upkeep.index_repair(project_id, doc["subject_id"], [memory_id, *neighbours(doc)]):
                    await self._set_status(project_id, memory_id, "active", superseded_by=None)
                self.events.publish(project_id, doc["subject_id"], "memory.updated",
                                    {"id": memory_id, "status": "active"})
                brought_back.append(memory_id)
        return retracted, superseded, brought_back

    async def _retire_memories(self, project_id: str, asserted: Sequence[Asserted], *,
                               spare: str | None) -> list[str]:
        """Supersede the memories behind the claims that ``asserted`` displaced, each by the claim
        that displaced it, once the memory states no truth (but ``spare``, the asserting
        memory): recall would otherwise inject a memory beside a truth that replaced what it
        says. One that still states another truth stays in use, with its other slots."""
        retired: list[str] = []
        for result in asserted:
            for old in result.superseded:
                for memory_id in await self.truth.memories_behind(project_id, old):
                    if memory_id != spare and memory_id not in retired and (
                            await self._supersede_for_claim(project_id, memory_id, result.claim)):
                        retired.append(memory_id)
        return retired

    async def _supersede_for_claim(self, project_id: str, memory_id: str, claim: ClaimDoc | None) -> bool:
        """Supersede an active memory that states no truth any more, because of ``claim`` (the
        truth now, if any): superseded_by is that claim's memory, superseded_by_claim_id the
        claim. False if the memory was not active or still states a truth."""
        doc = await self._store.get(MEMORIES, project_id, memory_id)
        if doc is None or doc["listing"] != "active":
            return False
        if any(stated["status"] == "active" for _, stated in await self.truth.memory_assertions(project_id, memory_id)):
            return False
        by_memory = claim.get("source_memory_id") if claim is not None else None
        by_claim = claim["claim_id"] if claim is not None else None
        async with self._upkeep.index_repair(project_id, doc["subject_id"], [memory_id, *neighbours(doc)]):
            await self._set_status(project_id, memory_id, "superseded", superseded_by=by_memory,
                                   superseded_by_claim_id=by_claim)
        self.events.publish(project_id, doc["subject_id"], "memory.superseded",
                            {"id": memory_id, "superseded_by": by_memory, "superseded_by_claim_id": by_claim})
        return True

    def _is_active_in(self, project_id: str) -> Callable[[str], Awaitable[bool]]:
        """Whether a memory of the project is active (TruthGraph's ``is_active``)."""
        async def is_active(memory_id: str) -> bool:
            doc = await self._store.get(MEMORIES, project_id, memory_id)
            return doc is not None and not doc.get("is_deleted") and doc["listing"] == "active"
        return is_active

    # --- finishing interrupted index writes (the work is IndexUpkeep's) ---------------

    async def reindex(self, project_id: str, memory_id: str, *, api_key: str | None = None) -> None:
        """Write a stored memory's index point again from the store (see IndexUpkeep.reindex)."""
        await self._upkeep.reindex(project_id, memory_id, api_key=api_key)

    async def reindex_many(self, project_id: str, memory_ids: Sequence[str], *, api_key: str | None = None) -> None:
        """``reindex`` for many memories, their texts embedded a batch per model call (an import)."""
        await self._upkeep.reindex_many(project_id, memory_ids, api_key=api_key)

    async def repair(self, project_id: str, memory_ids: Sequence[str]) -> None:
        """Run an index-repair job (REINDEX_JOB): rewrite each memory's index point from the store."""
        await self._upkeep.repair(project_id, memory_ids)

    async def dense_vectors(self, texts: Sequence[str], *, api_key: str | None = None) -> list[list[float] | None]:
        """The dense vectors of texts about to be stored, a batch per embedder call (None each
        without an embedder), for ``create(dense=...)``. A local model encodes a batch in
        little more time than one text (bench/embed_ingest), and a text's vector does not
        depend on what is stored, so versioning still weighs each new memory against those
        created just before it."""
        if self.embedder is None or not texts:
            return [None] * len(texts)
        vectors: list[list[float] | None] = []
        for start in range(0, len(texts), EMBED_BATCH):
            vectors += await self._embed(list(texts[start:start + EMBED_BATCH]), api_key)
        return vectors

    # --- search and recall ---------------------------------------------------------------

    async def search(self, project_id: str, subject_id: str, query: str, *, limit: int, min_score: float = 0.0,
                     context: Sequence[str] = (), api_key: str | None = None,
                     use_dense: bool = True) -> list[SearchHit]:
        """The subject's (and the project's shared) active memories best matching ``query``.

        ``use_dense=False`` searches lexically only, even with an embedder configured."""
        dense = (await self._embed([query], api_key))[0] if self.embedder and use_dense else None
        sparse = self._ranking.query_vector(query, context[-MAX_CONTEXT:])
        hits = await self._index.search(project_id, IndexQuery(subject_id, sparse, dense, limit=limit))
        return self._ranking.rank(query, hits, min_score)

    async def refresh_recall_counts(self, project_id: str, hits: Mapping[str, SearchHit],
                                    counted: Sequence[Increment]) -> None:
        """After recalls were counted (``counted``: their seen increments, written with their events:
        gateway/memory/recall_log.py), the index's copy of a memory's counts is rewritten where a
        ranking would notice (gateway/memory/reinforcement.py); ``hits``: each memory as search found it."""
        behind = []
        for increment in counted:
            fields = hits[increment.doc_id].fields
            seen_count = int(fields.get("seen_count") or 0) + increment.by
            if index_is_behind(fields, seen_count, increment.at):
                behind.append(RecallCounts(increment.doc_id, seen_count, increment.at))
        if not behind:
            return
        try:
            await self._index.touch(project_id, behind)
        except Exception:
            # The counts are stored; the index's copy only weighs ranking and is set again at a
            # later recall. Failing here would have the caller count these recalls twice.
            log.warning("refreshing recall counts in the memory index failed", exc_info=True)

    # --- internals -----------------------------------------------------------------------

    async def _embed(self, texts: list[str], api_key: str | None) -> list[list[float]]:
        assert self.embedder is not None
        return await self.embedder.embed(texts, api_key=api_key)

    async def _candidates(self, project_id: str, subject_id: str, text: str, claims: Sequence[Claim],
                          dense: list[float] | None) -> tuple[list[Candidate], dict[str, dict[str, Any]]]:
        """The subject's active memories a new one could duplicate or contradict, and the index
        fields of those search found (by memory id)."""
        query = IndexQuery(subject_id, self._lexicon.query_vector(text), dense, include_shared=False,
                           limit=self._config.versioning.candidates)
        hits = await self._index.search(project_id, query)
        indexed = {hit.memory_id: hit.fields for hit in hits}
        found = {hit.memory_id: Candidate(hit.memory_id, hit.fields["text"],
                                          [Claim(p, v) for p, v in hit.fields.get("claims", [])], hit.similarity)
                 for hit in hits}
        # The memory behind a slot's truth counts whatever its wording, even if search did not
        # surface it. (Memories from before the truth graph are found by search only.)
        for claim in claims:
            for truth in await self.truth.active_in_slot(project_id, subject_id, claim.slot):
                memory_id = truth.get("source_memory_id")
                if memory_id and memory_id not in found:
                    other = await self._store.get(MEMORIES, project_id, memory_id)
                    if other is not None and other["listing"] == "active":
                        found[memory_id] = Candidate(memory_id, other["text"], [
                            Claim(truth["predicate"], truth["object_value"], truth["slot"])])
        return list(found.values()), indexed

    async def related(self, project_id: str, subject_id: str, query: str, *, limit: int) -> list[tuple[str, str]]:
        """The subject's own active memories a turn may be about, most related first, as (id, text):
        the best lexical matches of ``query``, then the newest others. A change of value often
        shares no word with what it changes ("I got married" / "User is single"), so recent
        memories make up the rest (gateway/memory/judgement.py shows them to the extraction
        model). Never another subject's memory, nor a shared one: versioning compares a
        subject's own memories only. No embedder call: the judge costs no model call."""
        hits = await self._index.search(project_id, IndexQuery(subject_id, self._lexicon.query_vector(query), None,
                                                               include_shared=False, limit=limit))
        found = {hit.memory_id: str(hit.fields["text"]) for hit in hits}
        if len(found) < limit:
            newest = await self._store.find(MEMORIES, project_id, {"subject_id": subject_id, "listing": "active"},
                                            limit=limit, newest_first=True)
            for doc in newest:
                if len(found) < limit:
                    found.setdefault(doc["id"], doc["text"])
        return list(found.items())

    async def _verdict_targets(self, project_id: str, subject_id: str, verdict: Verdict,
                               candidates: Sequence[Candidate]) -> dict[str, Candidate]:
        """The memories a verdict names that are still the subject's active ones, by id (those the
        rules' search found as it found them, the others from the store)."""
        known = {candidate.memory_id: candidate for candidate in candidates}
        targets: dict[str, Candidate] = {}
        for memory_id in verdict.target_ids:
            if memory_id in known:
                targets[memory_id] = known[memory_id]
                continue
            doc = await self._store.get(MEMORIES, project_id, memory_id)
            if doc is not None and doc["subject_id"] == subject_id and doc["listing"] == "active":
                targets[memory_id] = Candidate(memory_id, doc["text"],
                                               [Claim(p, v) for p, v in doc.get("_claims", [])])
        return targets

    async def _assert_claims(self, project_id: str, doc: dict[str, Any], claims: Sequence[Claim], *,
                             winner: bool = True) -> list[Asserted]:
        """Assert a memory's claims in the truth graph, one per slot (the last, if it states
        two values for one), with the memory as their source and, for a learned memory, where
        it was learned."""
        origin = doc.get("origin")
        provenance = None
        if origin is not None:
            provenance = {"memory_id": doc["id"], "chat_id": origin.get("chat_id"), "job_id": origin.get("job_id"),
                          "message_ids": origin.get("message_ids", []), "learned_at": doc["created_at"]}
        return [await self.truth.assert_claim(project_id, NewClaim(
            doc["subject_id"], claim.predicate, claim.value, slot=claim.slot, confidence=doc["confidence"],
            importance=doc["importance"] / 100, source_memory_id=doc["id"], source_type=doc["source_type"],
            origin=provenance), winner=winner) for claim in {claim.slot: claim for claim in claims}.values()]

    async def _rewrite_claims(self, project_id: str, doc: dict[str, Any], claims: Sequence[Claim]) -> None:
        """A memory's text was rewritten to state ``claims``. A claim it still states (same slot
        and value) stays as it is; the others are retracted, unless something else still states
        them; each new one is asserted (the truth only while the memory is active: a restore
        makes it so) and linked to the claim it replaces in its slot (TruthGraph.link_edit), so
        that retracting it makes true again what the old one had superseded."""
        memory_id = doc["id"]
        by_slot = {claim.slot: claim for claim in claims}
        kept = {old["claim_id"]: old["slot"] for old in await self.truth.memory_claims(project_id, memory_id)
                if old["status"] != "retracted" and old["slot"] in by_slot
                and value_key(old["object_value"]) == value_key(by_slot[old["slot"]].value)}
        left = await self.truth.retract_memory_claims(project_id, memory_id, "memory_edited",
                                                      is_active=self._is_active_in(project_id), keep=kept)
        replaced = {old["slot"]: old for old in left}
        active = doc["listing"] == "active"
        asserted = await self._assert_claims(project_id, doc, [claim for claim in by_slot.values()
                                                               if claim.slot not in kept.values()], winner=active)
        for result in asserted:
            old = replaced.get(result.claim["slot"])
            if result.created and old is not None:
                await self.truth.link_edit(project_id, result.claim, old)
        if active:
            await self._retire_memories(project_id, asserted, spare=memory_id)

    async def _set_status(self, project_id: str, memory_id: str, status: str, *, superseded_by: str | None,
                          superseded_by_claim_id: str | None = None) -> None:
        """Supersede a memory (``superseded_by``: the memory that replaced it; with a claim's:
        that claim, ``superseded_by_claim_id``) or make it active again; its claims follow."""
        doc = await self._store.get(MEMORIES, project_id, memory_id)
        if doc is None:
            return
        stamp = from_timestamp(time.time())
        doc.update(status=status, listing=status, superseded_by=superseded_by,
                   superseded_by_claim_id=superseded_by_claim_id, updated_at=stamp,
                   superseded_at=stamp if status == "superseded" else None)
        await self._store.put(MEMORIES, project_id, memory_id, doc)
        if status == "active":
            # The memories whose truths it displaces stay active: a restore undoes one
            # supersede (contract: "undo an incorrect supersede"), it changes no other memory.
            await self.truth.reinstate_memory_claims(project_id, memory_id)
        else:
            await self.truth.supersede_memory_claims(project_id, memory_id, "memory_superseded",
                                                     is_active=self._is_active_in(project_id))
        await self._upkeep.update_index(project_id, doc)
        # Its neighbours gain or lose its words; a restored memory's own neighbours may have changed.
        await self._upkeep.refresh_context(project_id,
                                           [*neighbours(doc), *([memory_id] if status == "active" else [])])
        for hook in self.on_left if status == "superseded" else ():
            await hook(project_id, doc["subject_id"], memory_id, "superseded")

    async def _known_duplicate(self, project_id: str, subject_id: str, key: str) -> dict[str, Any] | None:
        """The active memory a text with this key was last judged a duplicate of, if any."""
        wording = await self._store.get(DUPLICATE_WORDINGS, project_id, _wording_id(subject_id, key))
        if wording is None:
            return None
        doc = await self._store.get(MEMORIES, project_id, wording["memory_id"])
        return doc if doc is not None and doc["listing"] == "active" else None

    async def _reinforce(self, project_id: str, memory_id: str, *, indexed: dict[str, Any] | None = None,
                         stored: dict[str, Any] | None = None) -> None:
        """Stating a remembered fact again strengthens it and restarts its decay: its reinforced
        tally up, and the index's "last seen" moved on if a ranking would notice. The index's
        counts are read from ``indexed`` (the memory's fields as search found them) or else from
        the store (``stored``: its document, if already read), which is at most a minute ahead."""
        if indexed is None:
            doc = stored if stored is not None else await self._store.get(MEMORIES, project_id, memory_id)
            if doc is None:
                return
            tallies = await self._store.tallies(MEMORIES, project_id, [memory_id])
            seen_count, last_seen = seen_counts(doc, tallies.get(memory_id))
            indexed = {"seen_count": seen_count, "last_seen_at": last_seen}
        now = time.time()
        await self._store.increment(MEMORIES, project_id, [Increment(memory_id, REINFORCED, now)])
        seen_count = int(indexed.get("seen_count") or 0)
        if index_is_behind(indexed, seen_count, now):
            await self._index.touch(project_id, [RecallCounts(memory_id, seen_count, now)])
