"""The vector-index protocol every memory backend implements, and what goes in it.

The document store holds each memory (the source of truth for the REST API); the
vector index holds, per memory, its vectors plus the few fields that search needs
to filter and to score, so a search never has to touch the document store.

Tenancy lives here: every call takes the project id, every query is filtered on
it inside the adapter, and an empty project is refused, never read as "all".
"""

from __future__ import annotations

import json
import math
import operator
import uuid
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from qdrant_edge import SparseVector

# One BM25 vector per memory: its own text's, plus that of its text joined with the
# memory stored just before it for the same subject (see Lexicon.memory_vector).
SPARSE = "bm25"
DENSE = "dense"

# Point ids must be UUIDs; deriving them from (project, memory id) keeps two projects'
# memories apart even if a client chose the same id in both.
_POINT_NAMESPACE = uuid.UUID("0b6f4a52-2f0e-4a43-9a51-6c1f5e0f6d11")


def point_id(project_id: str, memory_id: str) -> str:
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{project_id}\x00{memory_id}"))


def own_key(project_id: str, subject_id: str) -> str:
    return f"s\x1f{project_id}\x1f{subject_id}"


def shared_key(project_id: str) -> str:
    return f"p\x1f{project_id}"


def access_keys(project_id: str, subject_id: str, status: str, visibility: str) -> list[str]:
    """Which searches may find a memory, as keywords: its own subject's, plus the whole
    project's if shared; none once it is superseded or deleted.

    Search filters on this one field (any of the asker's keys). One condition instead of
    project + status + visibility makes every filtered search leg markedly cheaper at a
    million memories, and the project in every key keeps tenants apart.
    """
    if status != "active":
        return []
    keys = [own_key(project_id, subject_id)]
    if visibility in ("shared", "public"):
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


@dataclass(frozen=True)
class IndexQuery:
    subject_id: str
    sparse: SparseVector
    dense: list[float] | None = None
    # False: only the subject's own memories (versioning); True: plus the project's shared ones.
    include_shared: bool = True
    limit: int = 25


@dataclass(frozen=True)
class VectorHit:
    memory_id: str
    # The backend's ranking score (BM25, or fused rank when hybrid): comparable within one query only.
    rank_score: float
    fields: dict[str, Any]
    # Cosine similarity to the query's dense vector, when the query had one.
    similarity: float | None = None


def packed_payload(project_id: str, subject_id: str, memory_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A point's payload: the keys search filters on, and every other field packed in one
    JSON string (turning a many-key payload into the engine's own form costs more than
    the engine's insert itself)."""
    return {"project": project_id, "subject": subject_id, "memory_id": memory_id,
            "access": access_keys(project_id, subject_id, fields["status"], fields["visibility"]),
            "fields": json.dumps(fields, ensure_ascii=False, separators=(",", ":"))}


def unpacked_fields(payload: dict[str, Any]) -> dict[str, Any]:
    return json.loads(payload["fields"])  # type: ignore[no-any-return]


def searchable_by(project_id: str, query: IndexQuery) -> list[str]:
    """The access keys a search may match: the subject's own, plus the project's shared."""
    keys = [own_key(project_id, query.subject_id)]
    if query.include_shared:
        keys.append(shared_key(project_id))
    return keys


def hit(score: float, payload: dict[str, Any] | None, vector: Any, *, dense_only: bool,
        query_unit: list[float] | None) -> VectorHit:
    """One search result, as every backend reports it. A dense-only search's own score is
    the cosine; a fused one gets it from the returned dense vector (Qdrant stores cosine
    vectors normalised, on every backend) against the unit query."""
    similarity = None
    if dense_only:
        similarity = score
    elif query_unit is not None and isinstance(vector, dict) and DENSE in vector:
        similarity = dot(query_unit, vector[DENSE])
    payload = payload or {}
    return VectorHit(payload["memory_id"], score, unpacked_fields(payload), similarity)


def unit(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def dot(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two unit vectors (Qdrant stores cosine vectors normalised)."""
    return sum(map(operator.mul, a, b))


# Hybrid ranking: the lexical and the dense leg each rank their own candidates, and Qdrant
# fuses the two rankings by reciprocal rank. A small k lets the top of each leg count
# (tuned on LoCoMo: see bench/locomo/README.md).
FUSION_K = 2
# The lexical leg counts twice as much as the dense one: on LoCoMo a small general-purpose
# model (all-MiniLM-L6-v2) ranks far worse alone than BM25, yet adds what shares no word.
LEG_WEIGHTS = {SPARSE: 2.0, DENSE: 1.0}
# Each leg contributes this many candidates (at least) before fusion.
PREFETCH_MIN = 100


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

    async def search(self, project_id: str, query: IndexQuery) -> list[VectorHit]:
        """Active memories matching the query, best first."""

    async def delete_subject(self, project_id: str, subject_id: str) -> None:
        """Remove every point of one subject (erasure)."""

    async def count(self, project_id: str, subject_id: str | None = None) -> int:
        """Points stored for the project (or one subject), whatever their status."""

    async def close(self) -> None:
        """Flush and release the index."""


class IndexMismatch(Exception):
    """The stored index was built for a different embedding model than the one configured."""


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
