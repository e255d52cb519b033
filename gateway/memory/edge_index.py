"""The embedded memory index: Qdrant Edge, the Qdrant engine running in-process.

Data lives in one directory and survives restarts (Edge's write-ahead log, then a
flush on close). Calls are synchronous and sub-millisecond, so they run on the
event loop directly, as the SQLite store does. Only one process may open the
directory: the embedded default is one gateway process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from qdrant_edge import (CountRequest, Distance, EdgeConfig, EdgeShard, EdgeSparseVectorParams, EdgeVectorParams,
                         FieldCondition, Filter, Fusion, KeywordIndexParams, MatchAny, MatchValue, Memory, Modifier,
                         PayloadSchemaType, Point, PointVectors, Prefetch, Query, QueryRequest, SparseVector,
                         UpdateOperation)

from gateway.memory.vector_index import (DENSE, FUSION_K, LEG_WEIGHTS, PREFETCH_MIN, SPARSE, IndexedMemory,
                                         IndexQuery, VectorHit, check_dimensions, owner_key, packed_payload, point_id,
                                         require_project, scored_hits, search_legs, searchable_by)


class EdgeIndex:
    def __init__(self, path: str, dense_dimensions: int | None) -> None:
        self.dense_dimensions = dense_dimensions
        directory = Path(path)
        stored_config = directory / "edge_config.json"
        if stored_config.exists():
            vectors = json.loads(stored_config.read_text()).get("vectors") or {}
            check_dimensions((vectors.get(DENSE) or {}).get("size"), dense_dimensions, f"the memory index at {path}")
            self._shard = EdgeShard.load(str(directory))
        else:
            directory.mkdir(parents=True, exist_ok=True)
            self._shard = EdgeShard.create(str(directory), self._config(dense_dimensions))
            # The project is the tenant key: Qdrant keeps each tenant's points together.
            self._shard.update(UpdateOperation.create_field_index("project", KeywordIndexParams(is_tenant=True)))
            self._shard.update(UpdateOperation.create_field_index("access", PayloadSchemaType.Keyword))

    @staticmethod
    def _config(dense_dimensions: int | None) -> EdgeConfig:
        dense = {DENSE: EdgeVectorParams(size=dense_dimensions, distance=Distance.Cosine)} if dense_dimensions else {}
        # Payloads in RAM (Pinned): on disk, returning the ten hits' payloads took longer
        # than the whole filtered search at a million memories (bench/memory_search).
        return EdgeConfig(vectors=dense or None, sparse_vectors={SPARSE: EdgeSparseVectorParams(modifier=Modifier.Idf)},
                          payload_memory=Memory.Pinned)

    async def upsert(self, project_id: str, memories: Sequence[IndexedMemory]) -> None:
        require_project(project_id)
        points = []
        for memory in memories:
            vectors: dict[str, Any] = {SPARSE: memory.sparse}
            if memory.dense is not None:
                vectors[DENSE] = memory.dense
            payload = packed_payload(project_id, memory.subject_id, memory.memory_id, memory.fields)
            points.append(Point(point_id(project_id, memory.memory_id), vectors, payload))
        if points:
            self._shard.update(UpdateOperation.upsert_points(points))

    async def update_fields(self, project_id: str, subject_id: str, memory_id: str, fields: dict[str, Any]) -> None:
        require_project(project_id)
        payload = packed_payload(project_id, subject_id, memory_id, fields)
        self._shard.update(UpdateOperation.set_payload([point_id(project_id, memory_id)],
                                                       {"access": payload["access"], "fields": payload["fields"]}))

    async def update_lexical(self, project_id: str, subject_id: str, memory_id: str, sparse: SparseVector,
                             fields: dict[str, Any]) -> None:
        require_project(project_id)
        self._shard.update(UpdateOperation.update_vectors([PointVectors(point_id(project_id, memory_id),
                                                                        {SPARSE: sparse})]))
        await self.update_fields(project_id, subject_id, memory_id, fields)

    async def search(self, project_id: str, query: IndexQuery) -> list[VectorHit]:
        require_project(project_id)
        keys = searchable_by(project_id, query)
        where = Filter(must=[FieldCondition("access", match=MatchAny(keys) if len(keys) > 1 else MatchValue(keys[0]))])
        legs = search_legs(query, bool(self.dense_dimensions))
        if not legs:
            return []  # Only stopwords and no dense model: nothing to match on.
        dense_only = len(legs) == 1 and legs[0][0] == DENSE
        # Fused results need the stored vector to say how similar they are; a dense-only
        # search's own score already is the cosine.
        with_vector = [DENSE] if any(using == DENSE for using, _ in legs) and not dense_only else None
        if len(legs) == 1:
            using, vector = legs[0]
            request = QueryRequest(limit=query.limit, query=Query.Nearest(vector, using=using), filter=where,
                                   with_payload=True, with_vector=with_vector)
        else:
            depth = max(PREFETCH_MIN, query.limit)
            prefetches = [Prefetch(limit=depth, query=Query.Nearest(vector, using=using), filter=where)
                          for using, vector in legs]
            fusion = Fusion.Rrf(k=FUSION_K, weights=[LEG_WEIGHTS[using] for using, _ in legs])
            request = QueryRequest(limit=query.limit, prefetches=prefetches, query=fusion, with_payload=True,
                                   with_vector=with_vector)
        return scored_hits([(point.score, point.payload, point.vector) for point in self._shard.query(request)],
                           dense_only=dense_only, query_dense=query.dense)

    async def delete_subject(self, project_id: str, subject_id: str) -> None:
        require_project(project_id)
        self._shard.update(UpdateOperation.delete_points_by_filter(
            Filter(must=[FieldCondition("access", match=MatchValue(owner_key(project_id, subject_id)))])))

    async def count(self, project_id: str, subject_id: str | None = None) -> int:
        require_project(project_id)
        condition = (FieldCondition("project", match=MatchValue(project_id)) if subject_id is None
                     else FieldCondition("access", match=MatchValue(owner_key(project_id, subject_id))))
        return self._shard.count(CountRequest(filter=Filter(must=[condition]), exact=True))

    async def close(self) -> None:
        self._shard.flush()
        self._shard.close()

    def optimize(self) -> bool:
        """Build HNSW and merge segments; blocking, so for maintenance and benchmarks only."""
        return self._shard.optimize()
