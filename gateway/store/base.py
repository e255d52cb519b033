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

*Ordered indexes* answer ranges and orderings that a static ``Collection.indexes`` cannot
declare: records carry per-schema fields ("amount", "due_date") that only exist at run time.
A document lists its own ordered values under ``Collection.ordered`` ({index name: [values]}),
so the set of indexes grows with the data while every read stays a range lookup on one index:
``find_ordered`` / ``count_ordered`` with an ``OrderedRange``. Numbers order as numbers, strings
by their UTF-8 bytes (the one order both SQLite's BINARY collation and Redis's lex ranges share).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol
from collections.abc import Iterable, Mapping, Sequence

Document = dict[str, Any]

# A value of an ordered index. Ints are fine too; bools are refused (True == 1 would make "is it
# true" and "is it one" the same entry): callers turn them into 0/1 themselves. Redis scores are
# doubles, so integers beyond 2**53 order as their nearest double there (exactly on SQLite).
OrderedValue = float | str

# SQLite's INTEGER is 64 bits; a larger int cannot be stored as a number.
_INT64 = 2 ** 63


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
    # The name of a document field holding {index name: [values]}: each value is indexed in order under
    # that name (numbers as numbers, strings by their UTF-8 bytes), for find_ordered. None: no ordered indexes.
    ordered: str | None = None
    # Declared indexes that are written often and read rarely, whose entries land on many different
    # pages per write (a turn's recall events, indexed by each recalled memory): a backend may
    # file their entries late, in bulk, as long as every read sees them (SQLite does; Redis has
    # no pages to save and writes them at once). Nothing about them changes for a caller.
    deferred: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        for fields in self.indexes:
            if len(fields) > 1 and set(fields) & set(self.multi_valued):
                raise ValueError(f"collection {self.name!r}: a multi-valued field is indexed on its own only")
        for fields in self.deferred:
            if fields not in self.indexes:
                raise ValueError(f"collection {self.name!r}: deferred index {fields!r} is not declared")

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

    def ordered_entries(self, doc: Mapping[str, Any]) -> list[tuple[str, OrderedValue]]:
        """(index name, value) for every ordered value the document lists, each distinct value once.

        Raises ValueError for what a store cannot index faithfully: a value that is neither a finite
        number nor a string, a string or name containing NUL (Redis separates a text value from the
        document id with it), and numbers mixed with strings in one index (one index holds one kind,
        so a range over it means the same thing on every backend)."""
        if self.ordered is None:
            return []
        listed = doc.get(self.ordered)
        if listed is None:
            return []
        if not isinstance(listed, Mapping):
            raise ValueError(f"collection {self.name!r}: field {self.ordered!r} must map index names to value lists")
        entries: list[tuple[str, OrderedValue]] = []
        for name, values in listed.items():
            _check_index_name(name)
            if not isinstance(values, (list, tuple)):
                raise ValueError(f"ordered index {name!r}: values must be a list")
            # dict.fromkeys: 1 and 1.0 are one entry, as the stores' keys would make them.
            distinct = list(dict.fromkeys(_checked_value(name, value) for value in values))
            if len({isinstance(value, str) for value in distinct}) > 1:
                raise ValueError(f"ordered index {name!r}: numbers and strings cannot share one index")
            entries += [(name, value) for value in distinct]
        return entries


def _check_index_name(name: Any) -> None:
    if not isinstance(name, str) or "\x00" in name:
        raise ValueError(f"an ordered index name must be a string without NUL, not {name!r}")


def _checked_value(index: str, value: Any) -> OrderedValue:
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"ordered index {index!r}: a string value cannot contain NUL")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"ordered index {index!r}: {value!r} is neither a number nor a string")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"ordered index {index!r}: numbers must be finite, not {value!r}")
    if isinstance(value, int) and not -_INT64 <= value < _INT64:
        raise ValueError(f"ordered index {index!r}: {value} does not fit in 64 bits")
    return value


@dataclass(frozen=True)
class OrderedRange:
    """Documents with a value of ordered index ``index`` between ``low`` and ``high`` (None: unbounded).

    ``numeric`` says which kind the index holds: a range over numbers never meets strings filed under
    the same name (and vice versa), so an unbounded side stops at the end of its own kind."""

    index: str
    numeric: bool
    low: OrderedValue | None = None
    low_inclusive: bool = True
    high: OrderedValue | None = None
    high_inclusive: bool = True

    def __post_init__(self) -> None:
        _check_index_name(self.index)
        for bound in (self.low, self.high):
            if bound is None:
                continue
            if isinstance(bound, str) == self.numeric:
                kind = "a number" if self.numeric else "a string"
                raise ValueError(f"ordered index {self.index!r}: bound {bound!r} must be {kind}")
            _checked_value(self.index, bound)


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


@dataclass(frozen=True)
class Charge:
    """Add ``by`` to the counter ``counter`` unless that would take it past ``limit`` (None: no
    limit, always added). ``by=0`` adds nothing and asks whether there is room for one more
    (the counter is below ``limit``). The counter starts at zero and is forgotten at
    ``expires_at`` (epoch seconds): a fixed window's counter names its window and ends with it."""

    counter: str
    by: int
    limit: int | None
    expires_at: float


@dataclass(frozen=True)
class Charged:
    """What ``DocumentStore.charge`` did: ``refused`` is the position of the first charge that had
    no room (then nothing was added), or None (all were added). ``counts``: each counter's value
    after the call, in the order of the charges."""

    refused: int | None
    counts: tuple[int, ...]


def require_project(project_id: str) -> None:
    if not project_id:
        raise ValueError("a project id is required for every storage operation")


class DocumentStore(Protocol):
    async def put(self, collection: Collection, project_id: str, doc_id: str, doc: Document,
                  *, ttl_seconds: float | None = None) -> None:
        """Insert or replace one document; ``ttl_seconds`` makes it disappear after that long.
        Its index and ordered entries are replaced with it, atomically; ValueError (nothing written)
        when its ordered values cannot be indexed (see ``Collection.ordered_entries``)."""

    async def put_many(self, collection: Collection, project_id: str, docs: Iterable[tuple[str, Document]],
                       *, ttl_seconds: float | None = None) -> None:
        """Insert or replace several documents in one round trip, in the given order (each
        disappearing ``ttl_seconds`` later, as with ``put``), atomically."""

    async def get(self, collection: Collection, project_id: str, doc_id: str) -> Document | None:
        """One document, or None when it is missing or expired."""

    async def delete(self, collection: Collection, project_id: str, doc_id: str) -> bool:
        """Remove one document; True when something was removed."""

    async def find(self, collection: Collection, project_id: str, where: Mapping[str, str] | None = None,
                   *, limit: int | None = None, offset: int = 0, newest_first: bool = False) -> list[Document]:
        """Documents matching ``where`` (an exact declared index), in insertion order."""

    async def find_each(self, project_id: str,
                        queries: Sequence[tuple[Collection, Mapping[str, str]]]) -> list[list[Document]]:
        """``find`` of each (collection, filter) in ``queries`` (all matches, insertion order), a
        list per query in the same order, read together: at once where reads wait on the network
        (Redis), in one statement on SQLite."""

    async def count(self, collection: Collection, project_id: str, where: Mapping[str, str] | None = None) -> int:
        """How many documents match ``where``."""

    async def delete_where(self, collection: Collection, project_id: str, where: Mapping[str, str]) -> int:
        """Remove every document matching ``where``; returns how many."""

    async def find_ordered(self, collection: Collection, project_id: str, where: OrderedRange, *,
                           descending: bool = False, limit: int | None = None, offset: int = 0) -> list[Document]:
        """Documents with a value in the range, in value order (ties in insertion order; descending
        reverses both). A document with several values in the range comes once per value: the caller
        dedupes if it wants documents, and paging stays a plain offset into the index."""

    async def count_ordered(self, collection: Collection, project_id: str, where: OrderedRange) -> int:
        """How many (document, value) entries are in the range (what find_ordered would page through)."""

    async def increment(self, collection: Collection, project_id: str, increments: Iterable[Increment]) -> None:
        """Add to tallies (created at zero), all in one atomic write."""

    async def put_many_and_increment(self, collection: Collection, project_id: str,
                                     docs: Iterable[tuple[str, Document]], tallied: Collection,
                                     increments: Iterable[Increment]) -> None:
        """``put_many(collection, ...)`` and ``increment(tallied, ...)`` as one atomic write: a
        batch of events and the counts they add go in together or not at all."""

    async def tallies(self, collection: Collection, project_id: str,
                      doc_ids: Iterable[str]) -> dict[str, dict[str, Tally]]:
        """The tallies of these documents, by document id then name (documents with none are left out)."""

    async def delete_tallies(self, collection: Collection, project_id: str, doc_ids: Iterable[str]) -> None:
        """Remove every tally of these documents."""

    async def charge(self, project_id: str, charges: Sequence[Charge]) -> Charged:
        """Check every charge against its limit and, when all have room, add them all; else add none.
        One atomic step, also between gateways sharing the store: of N concurrent charges of 1
        against a counter with room for k, exactly k are added. The counters are the project's
        own (no collection); at most a few per call, all in one round trip on Redis."""

    async def scrub(self) -> None:
        """Make deleted documents unrecoverable from the backend's own files (after an
        erasure): a deleted row must not linger in free pages or a write-ahead log."""

    async def ping(self) -> None:
        """Raise if the backend is unreachable."""

    async def close(self) -> None:
        """Release connections and files."""
