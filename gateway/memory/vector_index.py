"""The vector-index protocol every memory backend implements, and what goes in it.

The document store holds each memory (the source of truth for the REST API); the
vector index holds, per memory, its vectors plus the few fields that search needs
to filter and to score, so a search never has to touch the document store.

Tenancy lives here: every call takes the project id, every query is filtered on
it inside the adapter, and an empty project is refused, never read as "all".
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from qdrant_edge import SparseVector

SPARSE = "bm25"
# BM25 over the memory together with the one stored just before it for the same subject:
# a memory's neighbour often carries the words a later question uses ("it", "there", "that
# trip" in one turn, the names and places in the turn before).
CONTEXT_SPARSE = "bm25_context"
DENSE = "dense"
SHARED_AUDIENCE = "shared"

# Point ids must be UUIDs; deriving them from (project, memory id) keeps two projects'
# memories apart even if a client chose the same id in both.
_POINT_NAMESPACE = uuid.UUID("0b6f4a52-2f0e-4a43-9a51-6c1f5e0f6d11")


def point_id(project_id: str, memory_id: str) -> str:
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{project_id}\x00{memory_id}"))


def audience(subject_id: str, visibility: str) -> list[str]:
    """Who may recall a memory: its own subject, plus everyone in the project if shared."""
    keys = [f"s:{subject_id}"]
    if visibility in ("shared", "public"):
        keys.append(SHARED_AUDIENCE)
    return keys


def require_project(project_id: str) -> None:
    if not project_id:
        raise ValueError("a project id is required for every vector-index operation")


@dataclass(frozen=True)
class IndexedMemory:
    memory_id: str
    subject_id: str
    # Search-time fields: text, kind, status, visibility, importance, confidence,
    # is_temporal, created_at / last_seen_at (epoch seconds), seen_count.
    fields: dict[str, Any]
    sparse: SparseVector
    context_sparse: SparseVector
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
    dense: list[float] | None = field(default=None, repr=False)


# Hybrid ranking: each leg (lexical, lexical-with-context, dense) ranks its own candidates,
# and Qdrant fuses the rankings by reciprocal rank. A small k lets the top of each leg
# count (tuned on LoCoMo: see bench/locomo/README.md).
FUSION_K = 2
LEG_WEIGHTS = {SPARSE: 1.0, CONTEXT_SPARSE: 1.0, DENSE: 1.0}
# Each leg contributes this many candidates (at least) before fusion.
PREFETCH_MIN = 100


def search_legs(query: IndexQuery, has_dense: bool) -> list[tuple[str, Any]]:
    """(vector name, query vector) for each ranking a search fuses."""
    legs: list[tuple[str, Any]] = []
    if query.sparse.indices:
        legs += [(SPARSE, query.sparse), (CONTEXT_SPARSE, query.sparse)]
    if query.dense is not None and has_dense:
        legs.append((DENSE, query.dense))
    return legs


class VectorIndex(Protocol):
    dense_dimensions: int | None

    async def upsert(self, project_id: str, memories: Sequence[IndexedMemory]) -> None:
        """Insert or replace memories (vectors and fields) in one batch."""

    async def update_fields(self, project_id: str, memory_id: str, fields: dict[str, Any]) -> None:
        """Change some search-time fields of one memory (status, seen_count...)."""

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
