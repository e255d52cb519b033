"""The embedded memory index: Qdrant Edge, the Qdrant engine running in-process.

Data lives in one directory and survives restarts (Edge's write-ahead log, then a
flush on close). Calls are synchronous and sub-millisecond, so they run on the
event loop directly, as the SQLite store does. Only one process may open the
directory: the embedded default is one gateway process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, cast
from collections.abc import Iterator, Sequence

from qdrant_edge import (CountRequest, Distance, EdgeConfig, EdgeShard, EdgeSparseVectorParams, EdgeVectorParams,
                         FieldCondition, Filter, Fusion, HasIdCondition, KeywordIndexParams, MatchValue, Memory,
                         PayloadSchemaType, Point, PointVectors, Prefetch, Query, QueryRequest, ScrollRequest,
                         SparseVector, UpdateOperation)

from gateway.errors import ConfigError
from gateway.memory.document_frequencies import DocumentFrequencies
from gateway.memory.lexical_postings import posted, query_postings, reposting_salt, salted
from gateway.memory.vector_index import (DENSE, FUSION_K, LAST_SEEN_KEY, LEG_WEIGHTS, PREFETCH_MIN, SEEN_KEY, SPARSE,
                                         IndexedMemory, IndexMismatch, IndexQuery, RecallCounts, VectorHit,
                                         check_dimensions, counts_payload, owner_key, owner_of, packed_payload,
                                         require_project, scored_hits, search_legs, searchable_by, unpacked_fields)


# What the directory holds besides the engine's files: the layout it was built with (an
# index written with an older one is migrated on open: one without the file predates
# per-reader postings, one without "point_ids" has UUID point ids) plus, under "lexical",
# how its BM25 vectors were built (memory.vectors.lexical; "contextual" if not recorded,
# the only kind before it was), and the document frequencies as of the last clean close.
LAYOUT_FILE = "lexical_layout.json"
LAYOUT = {"postings": "per-reader", "idf": "gateway", "point_ids": "blake2b-64"}
FREQUENCIES_FILE = "document_frequencies.npz"
_PAGE = 2000

log = logging.getLogger("gateway.memory")


class IndexInUse(ConfigError):
    """Another process (another gateway) has the index directory open."""


@contextlib.contextmanager
def _lock_failure_named(path: str) -> Iterator[None]:
    """Qdrant Edge locks the directory's write-ahead log for the process that opens it; a
    second one fails with a bare Exception ("Can't init WAL: Kind(WouldBlock)") that names
    neither the setting nor the cause. Raise one that does (the binding gives no error
    type to catch, so the message is matched: re-check it when upgrading qdrant-edge-py)."""
    try:
        yield
    except Exception as error:
        if "Can't init WAL" in str(error) and "WouldBlock" in str(error):
            raise IndexInUse(f"another gateway process holds {path} (memory.vectors.edge.path): stop it, or give "
                             "this gateway a path of its own (gateways share data through the redis and qdrant "
                             "backends)") from None
        raise


def point_number(project_id: str, memory_id: str) -> int:
    """A memory's point id in the embedded index: 64 bits of a hash of (project, memory id).

    An integer, where the server adapter uses a UUID (vector_index.point_id): the binding
    turns each UUID a query returns into a ``uuid.UUID`` object, and a hybrid search
    handles twenty of them (ten hits, then the same ten for their cosines). With integer
    ids its p50 went 0.74 -> 0.68 ms at 100k memories, and 2% down at 1M, where the engine
    takes a larger share (bench/memory_search, eighth round). Two
    memories would share a point only if their hashes collided: at ten million points in
    one index that chance is about 3 in a million.
    """
    digest = hashlib.blake2b(f"{project_id}\x00{memory_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class EdgeIndex:
    def __init__(self, path: str, dense_dimensions: int | None, lexical: str = "contextual", *,
                 search_threads: int = 1) -> None:
        self.dense_dimensions = dense_dimensions
        self._directory = directory = Path(path)
        _recover_interrupted_migration(directory)
        with _lock_failure_named(path):
            stored_config = directory / "edge_config.json"
            if stored_config.exists():
                vectors = json.loads(stored_config.read_text()).get("vectors") or {}
                check_dimensions((vectors.get(DENSE) or {}).get("size"), dense_dimensions,
                                 f"the memory index at {path}")
                layout = directory / LAYOUT_FILE
                stored_layout = json.loads(layout.read_text()) if layout.exists() else {}
                recorded = "lexical" in stored_layout
                stored_lexical = stored_layout.pop("lexical", "contextual")
                if stored_lexical != lexical:
                    # Its memories' vectors were built the other way: searching both kinds together
                    # would rank one kind over the other.
                    raise IndexMismatch(f"the memory index at {path} holds {stored_lexical} BM25 vectors but "
                                        f"memory.vectors.lexical is {lexical}; use a new index path to switch",
                                        setting="memory.vectors.lexical")
                if stored_layout != LAYOUT:
                    _migrate_layout(directory, dense_dimensions, stored_layout, lexical)
                elif not recorded:
                    _write_layout(directory, lexical)
                self._shard = _load_shard(directory, _config(dense_dimensions, search_threads))
            else:
                self._shard = _create_shard(directory, dense_dimensions, lexical, search_threads)
        self._frequencies = self._load_frequencies()

    async def upsert(self, project_id: str, memories: Sequence[IndexedMemory]) -> None:
        require_project(project_id)
        points = []
        for memory in memories:
            vectors: dict[str, Any] = {SPARSE: posted(project_id, memory.subject_id, memory.fields, memory.sparse)}
            if memory.dense is not None:
                vectors[DENSE] = memory.dense
            payload = packed_payload(project_id, memory.subject_id, memory.memory_id, memory.fields,
                                     memory.access)
            points.append(Point(point_number(project_id, memory.memory_id), vectors, payload))
        if not points:
            return
        replaced = self._shard.retrieve([point.id for point in points], with_payload=True, with_vector=False)
        # A rewritten point keeps the recall counts touched since its fields were packed.
        touched = {record.id: {key: record.payload[key] for key in (SEEN_KEY, LAST_SEEN_KEY)}
                   for record in replaced if record.payload and SEEN_KEY in record.payload}
        if touched:
            points = [Point(point.id, point.vector, {**(point.payload or {}), **touched[point.id]})
                      if point.id in touched else point for point in points]
        self._shard.update(UpdateOperation.upsert_points(points))
        for record in replaced:
            self._frequencies.remove(project_id, unpacked_fields(record.payload or {}))
        for memory in memories:
            self._frequencies.add(project_id, memory.fields)

    async def update_fields(self, project_id: str, subject_id: str, memory_id: str, fields: dict[str, Any]) -> None:
        await self._replace(project_id, subject_id, memory_id, fields, None)

    async def update_lexical(self, project_id: str, subject_id: str, memory_id: str, sparse: SparseVector,
                             fields: dict[str, Any]) -> None:
        await self._replace(project_id, subject_id, memory_id, fields, sparse)

    async def _replace(self, project_id: str, subject_id: str, memory_id: str, fields: dict[str, Any],
                       sparse: SparseVector | None) -> None:
        """Replace a point's fields and, given ``sparse``, its lexical vector. A visibility
        change moves the vector to the other key's postings even without a new one."""
        require_project(project_id)
        pid = point_number(project_id, memory_id)
        found = self._shard.retrieve([pid], with_payload=True, with_vector=False)
        old_fields = unpacked_fields(found[0].payload or {}) if found else None
        vector: SparseVector | None = None
        if sparse is not None:
            vector = posted(project_id, subject_id, fields, sparse)
        elif old_fields is not None:
            move = reposting_salt(project_id, subject_id, old_fields, fields)
            if move:
                stored = self._shard.retrieve([pid], with_payload=False, with_vector=[SPARSE])[0]
                # Retrieved with the sparse vector only: a dict of one SparseVector.
                stored_vector = cast(dict[str, SparseVector], stored.vector or {})
                vector = salted(stored_vector[SPARSE], move)
        if vector is not None:
            self._shard.update(UpdateOperation.update_vectors([PointVectors(pid, {SPARSE: vector})]))
        payload = packed_payload(project_id, subject_id, memory_id, fields)
        self._shard.update(UpdateOperation.set_payload([pid], {"access": payload["access"],
                                                                "fields": payload["fields"]}))
        if old_fields is not None:
            self._frequencies.remove(project_id, old_fields)
            self._frequencies.add(project_id, fields)

    async def touch(self, project_id: str, counts: Sequence[RecallCounts]) -> None:
        require_project(project_id)
        for memory in counts:
            # Only these two keys: the packed fields, vectors and document frequencies stay as they are.
            try:
                self._shard.update(UpdateOperation.set_payload([point_number(project_id, memory.memory_id)],
                                                               counts_payload(memory)))
            except Exception as error:  # the binding raises a bare Exception for a missing point
                if "No point with id" not in str(error):
                    raise

    async def search(self, project_id: str, query: IndexQuery) -> list[VectorHit]:
        require_project(project_id)
        keys = searchable_by(project_id, query)
        # Any of the keys, as one condition per key: at a million memories a leg filtered this
        # way took 0.1-0.2 ms less than with one MatchAny condition (bench/memory_search).
        where = Filter(should=[FieldCondition("access", match=MatchValue(key)) for key in keys])
        legs = [(using, self._lexical_query(project_id, query) if using == SPARSE else vector)
                for using, vector in search_legs(query, bool(self.dense_dimensions))]
        if not legs:
            return []  # Only stopwords and no dense model: nothing to match on.
        dense_only = len(legs) == 1 and legs[0][0] == DENSE
        if len(legs) == 1:
            using, vector = legs[0]
            request = QueryRequest(limit=query.limit, query=Query.Nearest(vector, using=using), filter=where,
                                   with_payload=True)
        else:
            depth = max(PREFETCH_MIN, query.limit)
            prefetches = [Prefetch(limit=depth, query=Query.Nearest(vector, using=using), filter=where)
                          for using, vector in legs]
            fusion = Fusion.Rrf(k=FUSION_K, weights=[LEG_WEIGHTS[using] for using, _ in legs])
            # qdrant-edge-py 0.9 accepts Fusion.Rrf here; its type stubs leave it out of the union.
            request = QueryRequest(limit=query.limit, prefetches=prefetches, query=fusion,  # type: ignore[arg-type]
                                   with_payload=True)
        points = self._shard.query(request)
        # A dense-only search's own score is the cosine. Fused hits get theirs from a second
        # query over just those points: returning their vectors to Python and multiplying
        # there took longer (hybrid search at 1M, p50 1.04-1.13 -> 0.88-1.00 ms).
        if dense_only:
            similarities: list[float | None] = [point.score for point in points]
        elif any(using == DENSE for using, _ in legs) and points:
            similarities = self._cosines([point.id for point in points], query.dense or [])
        else:
            similarities = [None] * len(points)
        return scored_hits([(point.score, point.payload) for point in points], similarities)

    def _cosines(self, point_ids: list[Any], dense: Sequence[float]) -> list[float | None]:
        """The cosine of each point's dense vector to ``dense`` (None if it has none)."""
        scored = self._shard.query(QueryRequest(limit=len(point_ids), query=Query.Nearest(list(dense), using=DENSE),
                                                filter=Filter(must=[HasIdCondition(set(point_ids))])))
        by_id = {point.id: point.score for point in scored}
        return [by_id.get(pid) for pid in point_ids]

    def _lexical_query(self, project_id: str, query: IndexQuery) -> SparseVector:
        """The query's terms weighted by their IDF over the project, in the asker's postings."""
        indices, values = query.sparse.indices, query.sparse.values
        idf = self._frequencies.idf(project_id, indices)
        return query_postings(project_id, query.subject_id, indices, [v * w for v, w in zip(values, idf)])

    async def delete_subject(self, project_id: str, subject_id: str) -> None:
        require_project(project_id)
        owned = Filter(must=[FieldCondition("access", match=MatchValue(owner_key(project_id, subject_id)))])
        erased = [unpacked_fields(payload) for _, payload in _payloads(self._shard, owned)]
        self._shard.update(UpdateOperation.delete_points_by_filter(owned))
        for fields in erased:
            self._frequencies.remove(project_id, fields)

    async def count(self, project_id: str, subject_id: str | None = None) -> int:
        require_project(project_id)
        condition = (FieldCondition("project", match=MatchValue(project_id)) if subject_id is None
                     else FieldCondition("access", match=MatchValue(owner_key(project_id, subject_id))))
        return self._shard.count(CountRequest(filter=Filter(must=[condition]), exact=True))

    async def close(self) -> None:
        self._shard.flush()
        self._shard.close()
        self._frequencies.save(self._directory / FREQUENCIES_FILE)

    def _load_frequencies(self) -> DocumentFrequencies:
        """The counts saved at the last clean close, or counted again from the points. The
        saved file is removed once read: if this process dies, the next one counts again
        rather than trust counts that missed its writes."""
        saved = self._directory / FREQUENCIES_FILE
        if saved.exists():
            frequencies = DocumentFrequencies.load(saved)
            saved.unlink()
            return frequencies
        frequencies = DocumentFrequencies()
        for project_id, payload in _payloads(self._shard, None):
            frequencies.add(project_id, unpacked_fields(payload))
        return frequencies

    def optimize(self) -> bool:
        """Build HNSW and merge segments; blocking, so for maintenance and benchmarks only."""
        return self._shard.optimize()


def _config(dense_dimensions: int | None, search_threads: int | None = None) -> EdgeConfig:
    dense = {DENSE: EdgeVectorParams(size=dense_dimensions, distance=Distance.Cosine)} if dense_dimensions else {}
    # No IDF modifier: the engine would count one subject's postings (lexical_postings);
    # queries carry the project's IDF instead (document_frequencies).
    # Payloads in RAM (Pinned): on disk, returning the ten hits' payloads took longer
    # than the whole filtered search at a million memories (bench/memory_search).
    return EdgeConfig(vectors=dense or None, sparse_vectors={SPARSE: EdgeSparseVectorParams()},
                      payload_memory=Memory.Pinned, max_search_threads=search_threads)


def _load_shard(directory: Path, config: EdgeConfig) -> EdgeShard:
    """Open an existing shard with this gateway's settings (the search threads), which Edge checks
    against the stored ones and records; one it finds incompatible opens as it was stored."""
    try:
        return EdgeShard.load(str(directory), config)
    except Exception as error:  # the binding raises a bare Exception
        if "incompatible" not in str(error).lower():
            raise
        log.warning("the memory index at %s keeps its stored settings (%s)", directory, error)
        return EdgeShard.load(str(directory))


def _create_shard(directory: Path, dense_dimensions: int | None, lexical: str,
                  search_threads: int | None = None) -> EdgeShard:
    directory.mkdir(parents=True, exist_ok=True)
    shard = EdgeShard.create(str(directory), _config(dense_dimensions, search_threads))
    # The project is the tenant key: Qdrant keeps each tenant's points together.
    shard.update(UpdateOperation.create_field_index("project", KeywordIndexParams(is_tenant=True)))
    shard.update(UpdateOperation.create_field_index("access", PayloadSchemaType.Keyword))
    _write_layout(directory, lexical)
    return shard


def _write_layout(directory: Path, lexical: str) -> None:
    (directory / LAYOUT_FILE).write_text(json.dumps({**LAYOUT, "lexical": lexical}))


def _pages(shard: EdgeShard, where: Filter | None, with_vector: bool) -> Iterator[list[Any]]:
    """Every point matching ``where`` (payload, and vectors if asked), a page at a time."""
    offset = None
    while True:
        records, offset = shard.scroll(ScrollRequest(offset=offset, limit=_PAGE, filter=where, with_payload=True,
                                                     with_vector=with_vector))
        yield records
        if offset is None:
            return


def _payloads(shard: EdgeShard, where: Filter | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(project, payload) of every point matching ``where``."""
    for records in _pages(shard, where, with_vector=False):
        for record in records:
            payload = record.payload or {}
            yield payload.get("project", ""), payload


def _migrate_layout(directory: Path, dense_dimensions: int | None, stored_layout: dict[str, Any],
                    lexical: str) -> None:
    """Rebuild an index written with an older layout (``LAYOUT``): the same points under
    their ``point_number`` ids and, if it predates per-reader postings, with their lexical
    vectors moved to their readers' postings, in a new shard that then replaces the old one."""
    repost = stored_layout.get("postings") != LAYOUT["postings"]
    log.warning("migrating the memory index at %s to the current layout: every point is rewritten once "
                "(about 7 minutes per million memories on 2 cores)", directory)
    building = directory.with_name(directory.name + ".migrating")
    shutil.rmtree(building, ignore_errors=True)
    old = EdgeShard.load(str(directory))
    new = _create_shard(building, dense_dimensions, lexical)
    for records in _pages(old, None, with_vector=True):
        points = []
        for record in records:
            payload = record.payload or {}
            project_id, fields = payload["project"], unpacked_fields(payload)
            vectors = dict(record.vector or {})
            if repost and SPARSE in vectors:
                vectors[SPARSE] = posted(project_id, owner_of(project_id, payload["access"]), fields, vectors[SPARSE])
            points.append(Point(point_number(project_id, fields["memory_id"]), vectors, payload))
        if points:
            new.update(UpdateOperation.upsert_points(points))
    new.flush()
    new.close()
    old.close()
    retired = directory.with_name(directory.name + ".retired")
    directory.rename(retired)
    building.rename(directory)
    shutil.rmtree(retired)


def _recover_interrupted_migration(directory: Path) -> None:
    """A migration that died between its two renames left the old index retired: put it back
    (it is migrated again). One that died after them left it behind: remove it."""
    retired = directory.with_name(directory.name + ".retired")
    if not retired.exists():
        return
    if directory.exists():
        shutil.rmtree(retired)
    else:
        retired.rename(directory)
