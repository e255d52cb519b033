"""The vector-index protocol every memory backend implements, and what goes in it.

The document store holds each memory (the source of truth for the REST API); the
vector index holds, per memory, its vectors plus the few fields that search needs
to filter and to score, so a search never has to touch the document store.

Tenancy lives here: every call takes the project id, every query is filtered on
it inside the adapter, and an empty project is refused, never read as "all".
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any, Protocol
from collections.abc import Sequence

import numpy as np
import orjson
from qdrant_edge import SparseVector

# One BM25 vector per memory: its own text's, plus those of its text joined with the
# memories stored just before and just after it for the same subject (Lexicon.index_text).
SPARSE = "bm25"
DENSE = "dense"

# A Qdrant server's point ids: UUIDs derived from (project, memory id), which keeps two
# projects' memories apart even if a client chose the same id in both. (The embedded index
# uses 64-bit integers derived the same way: edge_index.point_number.)
_POINT_NAMESPACE = uuid.UUID("0b6f4a52-2f0e-4a43-9a51-6c1f5e0f6d11")


def point_id(project_id: str, memory_id: str) -> str:
    """``uuid.uuid5(_POINT_NAMESPACE, project + NUL + memory id)``, spelled out: the same id
    in a third of the time, which shows on bulk inserts."""
    digest = bytearray(hashlib.sha1(_POINT_NAMESPACE.bytes + f"{project_id}\x00{memory_id}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def own_key(project_id: str, subject_id: str) -> str:
    return f"s\x1f{project_id}\x1f{subject_id}"


def shared_key(project_id: str) -> str:
    return f"p\x1f{project_id}"


def owner_key(project_id: str, subject_id: str) -> str:
    return f"o\x1f{project_id}\x1f{subject_id}"


def owner_of(project_id: str, access: Sequence[str]) -> str:
    """The subject a point's access keys say it belongs to."""
    prefix = owner_key(project_id, "")
    return next(key[len(prefix):] for key in access if key.startswith(prefix))


def is_shared(visibility: str) -> bool:
    return visibility in ("shared", "public")


def access_keys(project_id: str, subject_id: str, status: str, visibility: str) -> list[str]:
    """Keywords saying who may find a memory and whose it is: its own subject's search key,
    plus the whole project's if shared (both only while active), and always its owner key,
    which no search asks for and erasure and counting filter on.

    Search filters on this one field (any of the asker's keys). One condition instead of
    project + status + visibility makes every filtered search leg markedly cheaper at a
    million memories, and the project in every key keeps tenants apart. Keeping the owner
    here too spares a payload field and its index, which every insert pays for.
    """
    keys = [owner_key(project_id, subject_id)]
    if status == "active":
        keys.append(own_key(project_id, subject_id))
        if is_shared(visibility):
            keys.append(shared_key(project_id))
    return keys


def require_project(project_id: str) -> None:
    if not project_id:
        raise ValueError("a project id is required for every vector-index operation")


@dataclass(frozen=True)
class IndexedMemory:
    memory_id: str
    subject_id: str
    # Search-time fields: text, kind, status, visibility, importance, confidence,
    # is_temporal, created_at / last_seen_at (epoch seconds), seen_count, claims, context.
    # Backends keep them as one packed value: only the keys above are filtered on.
    fields: dict[str, Any]
    sparse: SparseVector
    dense: list[float] | None = None
    # Who may find the point, when not a memory's own rule (access_keys, from status and
    # visibility): records (gateway/records/index.py) name their readers themselves. Each
    # key must embed the project, as access_keys' do, so that tenants stay apart.
    access: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RecallCounts:
    """A memory's counts as ranking reads them (gateway/memory/reinforcement.py)."""

    memory_id: str
    seen_count: int
    last_seen: float  # epoch seconds: the latest recall or reinforcement


@dataclass(frozen=True)
class IndexQuery:
    subject_id: str
    sparse: SparseVector
    dense: list[float] | None = None
    # False: only the subject's own memories (versioning); True: plus the project's shared ones.
    include_shared: bool = True
    limit: int = 25
    # The access keys to match instead of the subject's (and shared) ones: records' readers.
    access: tuple[str, ...] | None = None


@dataclass(frozen=True)
class VectorHit:
    memory_id: str
    # The backend's ranking score (BM25, or fused rank when hybrid): comparable within one query only.
    rank_score: float
    fields: dict[str, Any]
    # Cosine similarity to the query's dense vector, when the query had one.
    similarity: float | None = None


def packed_payload(project_id: str, subject_id: str, memory_id: str, fields: dict[str, Any],
                   access: Sequence[str] | None = None) -> dict[str, Any]:
    """A point's payload: the two keys the engine indexes (the project, its tenant key, and
    the access keys) and everything else, the memory id included, packed in one JSON
    string. Qdrant Edge's Python binding takes about 4 µs per payload string it converts,
    more than a point's whole dense vector, so fewer values is a faster bulk insert.
    orjson packs it in a ninth of json's time and unpacks a hit in a quarter (bench/memory_search)."""
    packed = orjson.dumps({"memory_id": memory_id, **fields}).decode()
    keys = list(access) if access is not None else access_keys(project_id, subject_id, fields["status"],
                                                               fields["visibility"])
    return {"project": project_id, "access": keys, "fields": packed}


def unpacked_fields(payload: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = orjson.loads(payload["fields"])
    return fields


# Payload keys of a point's recall counts, beside the packed fields: set on their own
# (VectorIndex.touch), without rewriting the rest, and read over the packed values.
SEEN_KEY = "seen"
LAST_SEEN_KEY = "last_seen"


def counts_payload(counts: RecallCounts) -> dict[str, Any]:
    return {SEEN_KEY: counts.seen_count, LAST_SEEN_KEY: counts.last_seen}


def search_fields(payload: dict[str, Any]) -> dict[str, Any]:
    """A hit's fields: the packed ones, with the recall counts touched since they were packed."""
    fields = unpacked_fields(payload)
    if SEEN_KEY in payload:
        fields["seen_count"] = payload[SEEN_KEY]
        fields["last_seen_at"] = payload[LAST_SEEN_KEY]
    return fields


def searchable_by(project_id: str, query: IndexQuery) -> list[str]:
    """The access keys a search may match: the subject's own, plus the project's shared
    (or the query's own list)."""
    if query.access is not None:
        return list(query.access)
    keys = [own_key(project_id, query.subject_id)]
    if query.include_shared:
        keys.append(shared_key(project_id))
    return keys


def scored_hits(points: Sequence[tuple[float, dict[str, Any] | None]],
                similarities: Sequence[float | None]) -> list[VectorHit]:
    """Search results, as every backend reports them, from (score, payload) pairs and each
    hit's cosine to the query's dense vector (None without one)."""
    hits = []
    for (score, payload), similarity in zip(points, similarities):
        fields = search_fields(payload or {})
        hits.append(VectorHit(fields.pop("memory_id"), score, fields, similarity))
    return hits


def cosines(vectors: Sequence[Any], query_dense: Sequence[float]) -> list[float | None]:
    """Each hit's cosine to the query from its returned dense vector (Qdrant stores cosine
    vectors normalised, on every backend) against the normalised query, in one matrix
    product: per hit in Python it cost more than the engine."""
    similarities: list[float | None] = [None] * len(vectors)
    rows = [i for i, named in enumerate(vectors) if isinstance(named, dict) and DENSE in named]
    if rows:
        query = np.asarray(query_dense, dtype=np.float32)
        query /= float(np.linalg.norm(query)) or 1.0
        matrix = np.asarray([vectors[i][DENSE] for i in rows], dtype=np.float32)
        for i, similarity in zip(rows, (matrix @ query).tolist()):
            similarities[i] = similarity
    return similarities


# Hybrid ranking: the lexical and the dense leg each rank their own candidates, and Qdrant
# fuses the two rankings by reciprocal rank. With k = 1 a hit at position p of a leg of
# weight w scores w / (p + 1): pure weighted reciprocal rank, so the top of each leg counts
# most (bench/locomo/README.md).
FUSION_K = 1
# The lexical leg counts three times the dense one: a small general-purpose model
# (all-MiniLM-L6-v2) ranks far worse alone than BM25, yet adds what shares no word. With
# k = 1 and weight 3, BM25's best match always stays first (3, against at most 1.5 + 1 for
# any other hit), and the dense leg's first hit counts as much as BM25's third: the dense
# leg reorders the rest and brings in hits without a shared word (alone it decides only when
# no word matches). On LoCoMo k = 2 with weight 2 let the dense leg's top hit displace BM25's
# too often (any@1 0.457 -> 0.430, temporal questions' MRR below plain BM25's); k = 1 with a
# lexical weight of 2-5 keeps any@1 and beats plain BM25 on every category, 3 in that range.
LEG_WEIGHTS = {SPARSE: 3.0, DENSE: 1.0}
# Each leg contributes this many candidates (at least) before fusion.
PREFETCH_MIN = 100


def fused(rankings: Sequence[tuple[str, Sequence[str]]], limit: int) -> list[tuple[str, float]]:
    """Weighted reciprocal-rank fusion of each leg's ranking (vector name, ids best first),
    best ``limit`` first, for an engine that cannot fuse itself (the Redis query engine): the
    same fusion and weights as Qdrant's ``Fusion.Rrf(k=FUSION_K, weights=LEG_WEIGHTS)``, where
    a hit at 0-based position p of a leg of weight w scores 1 / ((p + 1) / w + k - 1), summed
    over the legs that found it."""
    scores: dict[str, float] = {}
    for using, ranking in rankings:
        weight = LEG_WEIGHTS[using]
        for position, hit in enumerate(ranking):
            scores[hit] = scores.get(hit, 0.0) + 1.0 / ((position + 1) / weight + FUSION_K - 1)
    return sorted(scores.items(), key=lambda scored: -scored[1])[:limit]


def search_legs(query: IndexQuery, has_dense: bool) -> list[tuple[str, Any]]:
    """(vector name, query vector) for each ranking a search fuses."""
    legs: list[tuple[str, Any]] = []
    if query.sparse.indices:
        legs.append((SPARSE, query.sparse))
    if query.dense is not None and has_dense:
        legs.append((DENSE, query.dense))
    return legs


class VectorIndex(Protocol):
    dense_dimensions: int | None

    async def upsert(self, project_id: str, memories: Sequence[IndexedMemory]) -> None:
        """Insert or replace memories (vectors and fields) in one batch."""

    async def update_fields(self, project_id: str, subject_id: str, memory_id: str, fields: dict[str, Any]) -> None:
        """Replace one memory's search-time fields (all of them: status, seen_count...)."""

    async def update_lexical(self, project_id: str, subject_id: str, memory_id: str, sparse: SparseVector,
                             fields: dict[str, Any]) -> None:
        """Replace one memory's lexical vector and its fields; its dense vector stays."""

    async def touch(self, project_id: str, counts: Sequence[RecallCounts]) -> None:
        """Set memories' recall counts as search reads them, leaving the rest of each point as
        it is (a memory whose point is gone is skipped)."""

    async def search(self, project_id: str, query: IndexQuery) -> list[VectorHit]:
        """Active memories matching the query, best first."""

    async def delete_subject(self, project_id: str, subject_id: str) -> None:
        """Remove every point of one subject (erasure)."""

    async def count(self, project_id: str, subject_id: str | None = None) -> int:
        """Points stored for the project (or one subject), whatever their status."""

    async def close(self) -> None:
        """Flush and release the index."""


class IndexMismatch(Exception):
    """The stored index was built for a different embedding model (or lexical vectors) than
    the one configured; ``setting`` names the configuration that disagrees."""

    def __init__(self, message: str, setting: str = "memory.embedder") -> None:
        super().__init__(message)
        self.setting = setting


def check_dimensions(stored: int | None, configured: int | None, where: str) -> None:
    if stored == configured:
        return
    if configured is None:
        raise IndexMismatch(f"{where} holds {stored}-dimensional dense vectors but no embedder is configured; "
                            "configure the same embedder (memory.embedder) or use a new index path")
    if stored is None:
        raise IndexMismatch(f"{where} was created without dense vectors but memory.embedder gives "
                            f"{configured} dimensions; use a new index path to switch models")
    raise IndexMismatch(f"{where} holds {stored}-dimensional vectors but memory.embedder gives {configured}; "
                        "use a new index path (or the old model) to switch models")
