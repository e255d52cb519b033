"""The document-store protocol every backend implements.

A document is a JSON object stored under (collection, project, id). Tenancy is
part of every call: there is no method that reads or writes across projects, and
an empty project id is refused rather than treated as "all".

Queries are equality filters over *declared* indexes only (``Collection.indexes``),
so every read is an index lookup on both backends; there is no way to ask for a
scan by accident. Results come back in insertion order (or newest first), and
replacing a document keeps its original position.

Beside its documents a collection may keep *tallies*: per document and name, a count
and the time it last changed (how often a memory was recalled, and when). Adding to one
is a single small write that never rewrites the document, and concurrent additions (from
several gateways) are never lost, which a read-modify-write of the document would do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol
from collections.abc import Iterable, Mapping

Document = dict[str, Any]


@dataclass(frozen=True)
class Collection:
    name: str
    # Each entry is a set of fields that ``find``/``count``/``delete_where`` may filter on together.
    indexes: tuple[tuple[str, ...], ...] = field(default_factory=tuple)
    # Documents may carry a TTL; backends then skip (and clean up) expired entries on read.
    expiring: bool = False
    # Fields holding a list of strings, each indexed on its own: a document is found by any
    # of them (only in an index of that one field).
    multi_valued: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for fields in self.indexes:
            if len(fields) > 1 and set(fields) & set(self.multi_valued):
                raise ValueError(f"collection {self.name!r}: a multi-valued field is indexed on its own only")

    def index_for(self, where: Mapping[str, str]) -> tuple[str, ...]:
        """The declared index that answers ``where`` exactly (fields in declared order)."""
        if not where:
            return ()
        wanted = set(where)
        for fields in self.indexes:
            if set(fields) == wanted:
                return fields
        raise ValueError(f"collection {self.name!r} has no index on {sorted(wanted)}")

    def index_entries(self, doc: Mapping[str, Any]) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        """(index fields, values) for every declared index the document has all values for."""
        entries: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        for fields in self.indexes:
            if fields[0] in self.multi_valued:
                listed = doc.get(fields[0])
                if isinstance(listed, list):
                    entries += [(fields, (value,)) for value in dict.fromkeys(listed) if isinstance(value, str)]
                continue
            values = tuple(value for value in (doc.get(name) for name in fields) if isinstance(value, str))
            if len(values) == len(fields):
                entries.append((fields, values))
        return entries


@dataclass(frozen=True)
class Increment:
    """Add ``by`` to the tally ``name`` of document ``doc_id``; its time becomes ``at`` unless later already."""

    doc_id: str
    name: str
    at: float
    by: int = 1


@dataclass(frozen=True)
class Tally:
    count: int
    # Epoch seconds of the latest increment.
    last_at: float


def require_project(project_id: str) -> None:
    if not project_id:
        raise ValueError("a project id is required for every storage operation")


class DocumentStore(Protocol):
    async def put(self, collection: Collection, project_id: str, doc_id: str, doc: Document,
                  *, ttl_seconds: float | None = None) -> None:
        """Insert or replace one document; ``ttl_seconds`` makes it disappear after that long."""

    async def put_many(self, collection: Collection, project_id: str, docs: Iterable[tuple[str, Document]]) -> None:
        """Insert or replace several documents in one round trip, in the given order."""

    async def get(self, collection: Collection, project_id: str, doc_id: str) -> Document | None:
        """One document, or None when it is missing or expired."""

    async def delete(self, collection: Collection, project_id: str, doc_id: str) -> bool:
        """Remove one document; True when something was removed."""

    async def find(self, collection: Collection, project_id: str, where: Mapping[str, str] | None = None,
                   *, limit: int | None = None, offset: int = 0, newest_first: bool = False) -> list[Document]:
        """Documents matching ``where`` (an exact declared index), in insertion order."""

    async def count(self, collection: Collection, project_id: str, where: Mapping[str, str] | None = None) -> int:
        """How many documents match ``where``."""

    async def delete_where(self, collection: Collection, project_id: str, where: Mapping[str, str]) -> int:
        """Remove every document matching ``where``; returns how many."""

    async def increment(self, collection: Collection, project_id: str, increments: Iterable[Increment]) -> None:
        """Add to tallies (created at zero), all in one atomic write."""

    async def tallies(self, collection: Collection, project_id: str,
                      doc_ids: Iterable[str]) -> dict[str, dict[str, Tally]]:
        """The tallies of these documents, by document id then name (documents with none are left out)."""

    async def delete_tallies(self, collection: Collection, project_id: str, doc_ids: Iterable[str]) -> None:
        """Remove every tally of these documents."""

    async def scrub(self) -> None:
        """Make deleted documents unrecoverable from the backend's own files (after an
        erasure): a deleted row must not linger in free pages or a write-ahead log."""

    async def ping(self) -> None:
        """Raise if the backend is unreachable."""

    async def close(self) -> None:
        """Release connections and files."""
