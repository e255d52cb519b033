"""Records in the vector index: found by the words of their text fields, by whoever may read them.

Records share the memories' index (Qdrant Edge or a Qdrant server) and its BM25 (+ dense)
hybrid search, under an index "project" of their own, ``<project>\\x1frecords``: project ids
cannot hold the separator, so no memory search or erasure ever meets a record, and the
lexical IDF of records is counted apart from the memories'. Each point carries the whole
API record in its packed fields, so a search or a chat's recall answers without a store read.

Who finds a record is said by explicit access keys (``IndexedMemory.access``), each built on
that index project, so tenants stay apart as with memories:

* ``type``: every live record of its type (the REST search with no subject);
* ``owned``: the records of a type one subject owns (the REST search's ``subject_id`` filter);
* ``reader``: a private record's owner and collaborators may read it (a chat's recall);
* ``public``: a public record any subject's chat may recall;
* the owner key of memories' own scheme (``owner_key``), which erasure deletes by.

A deleted record stays in the index without any key but its owner's, until the subject is
erased: the document store still holds it (soft delete), and search can no longer find it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from collections.abc import Mapping, Sequence

from gateway.memory.embedding import Embedder
from gateway.memory.lexical import Lexicon
from gateway.memory.vector_index import IndexedMemory, IndexQuery, VectorIndex, own_key, owner_key

# Project ids are [A-Za-z0-9_.-]+ (gateway.config): nothing else can name this index project.
_SUFFIX = "\x1frecords"


# Stands for every type in reader keys: no type name can be "*" (gateway/records/schema.py).
ANY_TYPE = "*"


def index_project(project_id: str) -> str:
    return project_id + _SUFFIX


def _key(project_id: str, kind: str, *parts: str) -> str:
    return own_key(index_project(project_id), "\x1f".join((kind, *parts)))


def type_key(project_id: str, type_name: str) -> str:
    return _key(project_id, "type", type_name)


def owned_key(project_id: str, type_name: str, owner_id: str) -> str:
    return _key(project_id, "owned", type_name, owner_id)


def reader_key(project_id: str, type_name: str, subject_id: str) -> str:
    return _key(project_id, "reader", type_name, subject_id)


def public_key(project_id: str, type_name: str) -> str:
    return _key(project_id, "public", type_name)


def record_access(project_id: str, record: dict[str, Any]) -> tuple[str, ...]:
    """The keys a stored record is found by (only its owner's erasure key once deleted)."""
    owner = record.get("owner_id") or ""
    keys = [owner_key(index_project(project_id), owner)]
    if record.get("is_deleted"):
        return tuple(keys)
    type_name = record["type_name"]
    keys.append(type_key(project_id, type_name))
    if owner:
        keys.append(owned_key(project_id, type_name, owner))
    # Each reader key twice: for its type, and for any type (a recall over every type of the
    # project then needs no list of the types, so no store read on the chat's path).
    if record.get("visibility") == "public":
        keys += [public_key(project_id, type_name), public_key(project_id, ANY_TYPE)]
    else:
        readers = dict.fromkeys([owner, *record.get("collaborators", ())])
        keys += [reader_key(project_id, kind, subject) for subject in readers if subject
                 for kind in (type_name, ANY_TYPE)]
    return tuple(keys)


def recall_access(project_id: str, subject_id: str, type_names: Sequence[str] | None) -> tuple[str, ...]:
    """What a subject's chat may recall of these types (None: of every type): public records and
    those it may read."""
    keys: list[str] = []
    for type_name in type_names or (ANY_TYPE,):
        keys += [public_key(project_id, type_name), reader_key(project_id, type_name, subject_id)]
    return tuple(keys)


@dataclass(frozen=True)
class RecordHit:
    record: dict[str, Any]
    # Cosine to the query with a dense model; else the share of the query's words the record holds.
    similarity: float


class RecordIndex:
    def __init__(self, index: VectorIndex, lexicon: Lexicon, embedder: Embedder | None = None) -> None:
        self._index = index
        self._lexicon = lexicon
        self.embedder = embedder

    async def upsert(self, project_id: str, points: Sequence[IndexedMemory]) -> None:
        await self._index.upsert(index_project(project_id), points)

    async def embed(self, entries: Sequence[tuple[dict[str, Any], str]], *,
                    api_key: str | None = None) -> dict[str, list[float]]:
        """The live records' dense vectors by record id (none without a dense model)."""
        live = [(record, text) for record, text in entries if not record.get("is_deleted")]
        if self.embedder is None or not live:
            return {}
        vectors = await self.embedder.embed([text for _, text in live], api_key=api_key)
        return {record["record_id"]: vector for (record, _), vector in zip(live, vectors)}

    async def rewrite(self, project_id: str, entries: Sequence[tuple[dict[str, Any], str]]) -> int:
        """Write stored records' points again (an import, a reindex): ``entries`` are each record
        as the API shows it and its searchable text; returns how many texts were embedded."""
        vectors = await self.embed(entries)
        await self.upsert(project_id, self.points(project_id, entries, vectors))
        return len(vectors)

    def points(self, project_id: str, entries: Sequence[tuple[dict[str, Any], str]],
               dense: Mapping[str, list[float]]) -> list[IndexedMemory]:
        """The index points of records, with their dense vectors from ``embed``."""
        points = []
        for record, text in entries:
            deleted = bool(record.get("is_deleted"))
            indexed = self._lexicon.index_text("" if deleted else text, "")
            # Shared visibility: the lexical postings of every record are the index project's
            # (gateway/memory/lexical_postings.py); who may see a hit is the access keys' business.
            fields = {"status": "active", "visibility": "shared", "record": record,
                      "terms": [] if deleted else indexed.terms}
            points.append(IndexedMemory(record["record_id"], record.get("owner_id") or "", fields, indexed.vector,
                                        dense.get(record["record_id"]), access=record_access(project_id, record)))
        return points

    async def search(self, project_id: str, text: str, *, access: tuple[str, ...], limit: int,
                     api_key: str | None = None) -> list[RecordHit]:
        """The records readable through ``access`` best matching ``text``, best first."""
        dense = None
        if self.embedder is not None:
            dense = (await self.embedder.embed([text], api_key=api_key))[0]
        query = IndexQuery("", self._lexicon.query_vector(text), dense, limit=limit, access=access)
        hits = await self._index.search(index_project(project_id), query)
        wanted = self._lexicon.terms(text)
        found = []
        for hit in hits:
            if hit.similarity is not None:
                similarity = hit.similarity
            else:
                held = wanted.intersection(hit.fields.get("terms") or ())
                similarity = len(held) / len(wanted) if wanted else 0.0
            found.append(RecordHit(hit.fields["record"], round(similarity, 4)))
        return found

    async def erase_owner(self, project_id: str, owner_id: str) -> None:
        await self._index.delete_subject(index_project(project_id), owner_id)
