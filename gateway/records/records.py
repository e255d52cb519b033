"""The records service: schemas, validated records, indexed queries, search, erasure.

A record is one document of the ``records`` collection, its data checked against its
type's schema on every write (gateway/records/schema.py). Beside the API record the
document keeps what the store indexes:

* ``_live``: the type name while the record is not deleted: listing a type, or a type's
  records of one owner, is an equality index lookup that never meets deleted records;
* ``_order``: each indexed field's values ({"<type>\\x1f<field>": [values]}), the store's
  ordered indexes (gateway/store/base.py ``Collection.ordered``), which answer equality,
  ranges and ordering on any schema field; a deleted record has none.

A query (gateway/records/query.py) is planned onto those indexes: the most selective
indexable part of ``where`` fetches the candidates, and every candidate is checked against
the whole ``where`` before it is returned, so an index only ever narrows. Candidates that
come in the answer's order are read until the page is full; others are all read, then
sorted. Either way a query stops at ``records.max_examined`` candidates (query_too_broad);
a page with nothing to check (no where, no owner) is read at its offset by the store.

Deletes are soft (``is_deleted``, kept for the audit trail, 404 to reads); every write
appends to the record's audit trail (``_trail``: who, when, what changed), kept in the record's
own document: one write per change, and nothing else to erase. A subject's erasure removes
the records it owns (with their trails) and index points, and the subject from the
collaborators of others' records.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.clock import from_timestamp
from gateway.config import RecordsConfig
from gateway.erasure_fence import SubjectErased
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.records.index import RecordHit, RecordIndex, owned_key, recall_access, type_key
from gateway.records.query import Order, Plan, Predicate, index_name, matches, parse_order, parse_where, plan, sort_key
from gateway.records.schema import (RecordSchema, compatibility_risks, ordered_values, parse_schema, reindex_needed,
                                    searchable_text, validate_data)
from gateway.store import Collection, DocumentStore
from gateway.store.base import OrderedRange
from gateway.subject_locks import SubjectLocks

log = logging.getLogger("gateway.records")

RECORDS = Collection("records", indexes=(("_live",), ("_live", "owner_id"), ("owner_id",), ("collaborators",)),
                     multi_valued=("collaborators",), ordered="_order")
SCHEMAS = Collection("record_schemas")
# A record's audit trail keeps its latest entries (created, updated..., deleted); older ones
# are dropped and counted, so that a record changed every minute stays a small document.
MAX_TRAIL = 100

VISIBILITIES = ("public", "private")
MAX_COLLABORATORS = 100
# Candidates are read from the store in pages of this many.
_PAGE = 256
# The deepest page a query may ask for (an offset, or a cursor's).
MAX_OFFSET = 10**9
# A query whose where makes more ranges than this ($in of thousands) reads the type instead.
MAX_RANGES = 200
# Built-in ordered indexes every live record has (epoch seconds).
_CREATED = "@created_at"
_UPDATED = "@updated_at"


class SchemaNotFound(NotFound):
    code = "schema_not_found"


class RecordNotFound(NotFound):
    code = "record_not_found"


def to_api(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The API record: the stored document without what only the store reads."""
    return {key: value for key, value in doc.items() if not key.startswith("_")}


@dataclass(frozen=True)
class Provenance:
    """Where a write came from: the API (and which key) or a chat's learning job."""

    source: str  # "api" | "chat"
    key_name: str | None = None
    chat_id: str | None = None
    job_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: value for name, value in (("source", self.source), ("key_name", self.key_name),
                                                ("chat_id", self.chat_id), ("job_id", self.job_id)) if value}


@dataclass(frozen=True)
class NewRecord:
    data: Any
    owner_id: str | None = None
    visibility: str | None = None
    collaborators: Sequence[str] = ()


@dataclass
class QueryPage:
    records: list[dict[str, Any]]
    # Where the next page starts, for ``cursor``; None when this page is the last.
    next_offset: int | None


@dataclass
class _Scan:
    """Candidates read so far by one query, against ``records.max_examined``."""

    limit: int
    examined: int = 0
    seen: set[str] = field(default_factory=set)

    def count(self, docs: Sequence[dict[str, Any]]) -> None:
        self.examined += len(docs)
        if self.examined > self.limit:
            raise BadRequest(f"this query read {self.limit} records (records.max_examined) without filling its "
                             "page: filter on an indexed field (any but text fields), or page a narrower query",
                             code="query_too_broad", param="where",
                             max_examined=self.limit)


class Records:
    def __init__(self, store: DocumentStore, index: RecordIndex, events: Any, config: RecordsConfig,
                 locks: SubjectLocks | None = None) -> None:
        self._store = store
        self.index = index
        self._events = events
        self._config = config
        # Writers of one record (PUT merges: read, then write) take turns, across gateways on Redis.
        self._locks = locks or SubjectLocks("records")
        # Erasure's write section (SubjectErasure.writing, set by Services.build): an insert enters
        # it for the record's owner and collaborators, a change or delete for its owner, so that a
        # write under way when one of them is erased is either waited for by the erasure or
        # refused after it (_record_section says how collaborators of a changed record are kept out).
        self.fence: Callable[[str, str, float], AbstractAsyncContextManager[None]] | None = None
        # Parsed schemas by (project, type), with the stored document's version they were parsed from.
        self._parsed: dict[tuple[str, str], tuple[tuple[Any, str], RecordSchema]] = {}

    # --- schemas -------------------------------------------------------------------------

    async def define_schema(self, project_id: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Define a type, or redefine it (contract: upsert). A redefinition that some stored
        record would break is refused (409 ``schema_conflict`` with their count), never half
        applied: records are only ever valid under their type's current schema.

        Record writes do not wait for a redefinition: each one checks, just before it stores,
        that the schema it validated against is still the type's (else 409 ``schema_changed``),
        and the records written while a redefinition checked the others are checked again once
        the new schema is in place (the redefinition is undone if one of them breaks it)."""
        schema = parse_schema(body)
        async with self._locks.hold(project_id, "schema\x1f" + schema.type_name):
            stored = await self._store.get(SCHEMAS, project_id, schema.type_name)
            if stored is not None and _same_definition(stored, schema_to_api(project_id, schema)):
                # Apps define their types at every start: the same definition changes nothing
                # (and does not make writes under way check their schema again).
                return stored, False
            now = _now()
            old = parse_schema(stored) if stored is not None else None
            risks = compatibility_risks(old, schema) if old is not None else []
            # References are checked only where the redefinition changes them (a record may point at
            # a record deleted since: no concern of a change elsewhere in the type).
            new_refs = {name for name, field in schema.fields.items() if field.type == "ref" and (
                old is None or name not in old.fields or old.fields[name].type != "ref"
                or old.fields[name].ref != field.ref)}
            if risks:
                await self._refuse_if_violated(project_id, schema, risks, new_refs,
                                               self._typed(project_id, schema.type_name, None))
            version = int(stored.get("version", 0)) + 1 if stored is not None else 1
            doc = {**schema_to_api(project_id, schema), "version": version,
                   "created_at": stored["created_at"] if stored else from_timestamp(now),
                   "updated_at": from_timestamp(now)}
            await self._store.put(SCHEMAS, project_id, schema.type_name, doc)
            if risks and stored is not None:
                since = OrderedRange(index_name(schema.type_name, _UPDATED), True, now)
                try:
                    await self._refuse_if_violated(project_id, schema, risks, new_refs,
                                                   self._ranged(project_id, since, False, None))
                except Conflict:
                    await self._store.put(SCHEMAS, project_id, schema.type_name, {**stored, "version": version + 1})
                    raise
            if old is not None and reindex_needed(old, schema):
                # A field's index kind changed (text became string...): its entries are rewritten.
                await self._rewrite_type(project_id, await self.schema(project_id, schema.type_name))
        return doc, stored is None

    async def _rewrite_type(self, project_id: str, schema: RecordSchema) -> None:
        """Rewrite the type's records' index entries, each under its write section (a record
        deleted, changed or erased meanwhile is read again, or left alone)."""
        async for docs in self._typed(project_id, schema.type_name, None):
            for listed in docs:
                try:
                    async with self._record_section(project_id, schema.type_name, listed["record_id"], time.time()):
                        doc = await self._live(project_id, schema.type_name, listed["record_id"])
                        await self._write_many(project_id, schema, [doc], stamp=False)
                except RecordNotFound:
                    continue

    async def _refuse_if_violated(self, project_id: str, schema: RecordSchema, risks: Sequence[str],
                                  refs: set[str], pages: AsyncIterator[list[dict[str, Any]]]) -> None:
        """409 naming how many of these live records the new schema would not accept."""
        violating = 0
        example: str | None = None
        async for docs in pages:
            for doc in docs:
                if doc.get("_live") != schema.type_name:
                    continue
                try:
                    validate_data(schema, doc["data"])
                    await self._check_refs(project_id, schema,
                                           {name: value for name, value in doc["data"].items() if name in refs})
                except BadRequest as error:
                    violating += 1
                    example = example or f"{doc['record_id']}: {error.message}"
        if violating:
            raise Conflict(f"{violating} record(s) of type '{schema.type_name}' would not be valid under the new "
                           f"schema ({'; '.join(risks)}); e.g. {example}. Update or delete them first",
                           code="schema_conflict", count=violating, changes=list(risks))

    async def schema(self, project_id: str, type_name: str) -> RecordSchema:
        """The type's current schema (parsed once per version: the same object until it changes)."""
        doc = await self._store.get(SCHEMAS, project_id, type_name)
        if doc is None:
            raise SchemaNotFound(f"no record schema named '{type_name}'", param="type_name")
        version = (doc.get("version"), doc["updated_at"])
        cached = self._parsed.get((project_id, type_name))
        if cached is not None and cached[0] == version:
            return cached[1]
        schema = parse_schema(doc)
        self._parsed[(project_id, type_name)] = (version, schema)
        return schema

    async def schema_doc(self, project_id: str, type_name: str) -> dict[str, Any]:
        doc = await self._store.get(SCHEMAS, project_id, type_name)
        if doc is None:
            raise SchemaNotFound(f"no record schema named '{type_name}'", param="type_name")
        return doc

    async def schema_docs(self, project_id: str) -> list[dict[str, Any]]:
        return await self._store.find(SCHEMAS, project_id)

    # --- records -------------------------------------------------------------------------

    async def insert(self, project_id: str, type_name: str, new: NewRecord, *, provenance: Provenance,
                     api_key: str | None = None, record_id: str | None = None) -> dict[str, Any]:
        [record] = await self.insert_many(project_id, type_name, [new], provenance=provenance, api_key=api_key,
                                          record_ids=[record_id] if record_id else None)
        return record

    async def insert_many(self, project_id: str, type_name: str, news: Sequence[NewRecord], *,
                          provenance: Provenance, api_key: str | None = None,
                          record_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Insert records, all or none: every one is validated first (a bad one is the 400,
        ``param`` prefixed with ``records[i].`` when there are several), then all are stored in
        one store write and one index write."""
        started = time.time()
        schema = await self.schema(project_id, type_name)
        docs = []
        now = _now()
        for position, new in enumerate(news):
            try:
                data = validate_data(schema, new.data)
                await self._check_refs(project_id, schema, data)
            except BadRequest as error:
                if len(news) > 1:
                    error.extra["param"] = f"records[{position}].{error.extra.get('param', 'data')}"
                    error.message = f"records[{position}]: {error.message}"
                raise
            visibility = new.visibility or ("private" if new.owner_id else "public")
            doc: dict[str, Any] = {
                "record_id": record_ids[position] if record_ids else _new_record_id(), "project_id": project_id,
                "type_name": type_name, "owner_id": new.owner_id, "visibility": visibility,
                "collaborators": list(dict.fromkeys(new.collaborators)), "data": data, "summary_text": None,
                "is_deleted": False, "created_at": from_timestamp(now), "updated_at": from_timestamp(now),
                "provenance": provenance.as_dict(), "_created": now, "_updated": now,
            }
            _note(doc, "created", provenance, changed=sorted(data))
            docs.append(doc)
        subjects = [subject for doc in docs for subject in (doc["owner_id"], *doc["collaborators"])]
        try:
            async with self._fenced(project_id, subjects, started):
                await self._write_many(project_id, schema, docs, api_key=api_key, created=True)
        except SubjectErased as erased:
            raise Conflict(f"subject '{erased}' was erased while this request ran; nothing was stored",
                           code="subject_erased") from None
        for doc in docs:
            self._publish(project_id, doc, "record.created")
        return [to_api(doc) for doc in docs]

    async def get(self, project_id: str, type_name: str, record_id: str) -> dict[str, Any]:
        return to_api(await self._live(project_id, type_name, record_id))

    async def update(self, project_id: str, type_name: str, record_id: str, patch: Any, *, provenance: Provenance,
                     api_key: str | None = None) -> dict[str, Any]:
        """Merge ``patch`` into the record's data (a null removes a field) and validate the result."""
        started = time.time()
        schema = await self.schema(project_id, type_name)
        changes = validate_data(schema, patch, partial=True)
        async with self._record_section(project_id, type_name, record_id, started):
            doc = await self._live(project_id, type_name, record_id)
            merged = {**doc["data"], **changes}
            merged = {name: value for name, value in merged.items() if value is not None}
            data = validate_data(schema, merged)
            await self._check_refs(project_id, schema, {name: data[name] for name in changes if name in data})
            now = _now()
            doc = {**doc, "data": data, "updated_at": from_timestamp(now), "_updated": now}
            _note(doc, "updated", provenance, changed=sorted(changes))
            await self._write(project_id, schema, doc, api_key=api_key)
        self._publish(project_id, doc, "record.updated")
        return to_api(doc)

    async def delete(self, project_id: str, type_name: str, record_id: str, *, provenance: Provenance) -> None:
        """Soft delete: the record leaves every index and read, its document and trail stay."""
        started = time.time()
        schema = await self.schema(project_id, type_name)
        async with self._record_section(project_id, type_name, record_id, started):
            doc = await self._live(project_id, type_name, record_id)
            now = _now()
            doc = {**doc, "is_deleted": True, "deleted_at": from_timestamp(now), "updated_at": from_timestamp(now),
                   "_updated": now}
            _note(doc, "deleted", provenance)
            await self._write(project_id, schema, doc)
        self._publish(project_id, doc, "record.deleted")

    async def history(self, project_id: str, type_name: str, record_id: str) -> tuple[list[dict[str, Any]], int]:
        """The record's audit trail, oldest first (also for a deleted record), and how many older
        entries were dropped (past MAX_TRAIL)."""
        doc = await self._store.get(RECORDS, project_id, record_id)
        if doc is None or doc["type_name"] != type_name:
            raise RecordNotFound(f"no {type_name} record '{record_id}'", param="record_id")
        return list(doc.get("_trail", ())), int(doc.get("_trail_dropped", 0))

    async def page(self, project_id: str, type_name: str, *, owner_id: str | None, limit: int,
                   offset: int) -> tuple[list[dict[str, Any]], int]:
        """A page of the type's live records in creation order, and how many there are."""
        await self.schema(project_id, type_name)
        where = {"_live": type_name, **({"owner_id": owner_id} if owner_id else {})}
        docs = await self._store.find(RECORDS, project_id, where, limit=limit, offset=offset)
        return [to_api(doc) for doc in docs], await self._store.count(RECORDS, project_id, where)

    # --- query ---------------------------------------------------------------------------

    async def query(self, project_id: str, type_name: str, *, where: Any, order_by: Any, limit: int, offset: int,
                    owner_id: str | None = None) -> QueryPage:
        schema = await self.schema(project_id, type_name)
        predicate = parse_where(schema, where)
        order = parse_order(schema, order_by)
        chosen = plan(type_name, schema, predicate, order)
        if chosen.ranges is not None and len(chosen.ranges) > MAX_RANGES:
            chosen = Plan(None)  # thousands of $in values: reading the type is cheaper than a range each
        if predicate is None and owner_id is None:
            # Nothing to check on the candidates: the store pages, and skipped records cost nothing.
            return await self._unfiltered_page(project_id, type_name, schema, order, limit, offset)
        if predicate is None and order is not None:
            # One owner's records, ordered: read them by owner and sort, rather than walk the
            # whole type's order index for the few that are theirs.
            chosen = Plan(None)
        elif owner_id is not None and chosen.ranges is not None and len(chosen.ranges) <= 10:
            # The owner narrows too: read by owner when they have fewer records than the where's ranges hold.
            owned = await self._store.count(RECORDS, project_id, {"_live": type_name, "owner_id": owner_id})
            in_ranges = 0
            for ranged in chosen.ranges:
                in_ranges += await self._store.count_ordered(RECORDS, project_id, ranged)
                if in_ranges > owned:
                    chosen = Plan(None)
                    break
        wanted = offset + limit
        scan = _Scan(self._config.max_examined)

        def keep(doc: dict[str, Any]) -> bool:
            if doc.get("_live") != type_name or doc["record_id"] in scan.seen:
                return False
            scan.seen.add(doc["record_id"])
            if owner_id is not None and doc.get("owner_id") != owner_id:
                return False
            return predicate is None or matches(schema, predicate, doc)

        ordered = self._in_answer_order(project_id, type_name, schema, chosen, order, owner_id, scan, wanted + 1)
        if ordered is not None:
            # Candidates arrive in the answer's order: stop as soon as the page is full.
            candidates, then_lacking = ordered
            found: list[dict[str, Any]] = []
            async for docs in candidates:
                found += [doc for doc in docs if keep(doc)]
                if len(found) > wanted:
                    break
            if then_lacking and order is not None and len(found) <= wanted:
                # Then the records without a value for the order field, which no range holds (last).
                async for docs in self._typed(project_id, type_name, owner_id, scan):
                    found += [doc for doc in docs if _lacks(doc, order) and keep(doc)]
                    if len(found) > wanted:
                        break
        else:
            # Candidates in another order (an index on another field, record ids, several
            # ranges): all of them, then sorted.
            found = []
            async for docs in self._candidates(project_id, type_name, chosen, owner_id, scan):
                found += [doc for doc in docs if keep(doc)]
            found.sort(key=sort_key(schema, order) if order is not None else _creation_order)
        page = found[offset:wanted]
        return QueryPage([to_api(doc) for doc in page], wanted if len(found) > wanted else None)

    def _in_answer_order(self, project_id: str, type_name: str, schema: RecordSchema, chosen: Plan,
                         order: Order | None, owner_id: str | None, scan: _Scan,
                         first: int) -> tuple[AsyncIterator[list[dict[str, Any]]], bool] | None:
        """Candidates that come in the answer's own order, and whether the records lacking the
        order field must follow them; None when the plan's candidates come in another order."""
        if chosen.ids is not None:
            return None
        if order is None:
            if chosen.ranges is None:  # the type's listing: creation order
                return self._typed(project_id, type_name, owner_id, scan, first), False
            if len(chosen.ranges) == 1:  # one range: that field's order (docs/records.md)
                return self._ranged(project_id, chosen.ranges[0], False, scan, first), False
            return None
        if chosen.ordered:
            # A range of the where, on the order field: a record without a value cannot match.
            assert chosen.ranges is not None
            return self._ranged(project_id, chosen.ranges[0], order.descending, scan, first), False
        if chosen.ranges is None and owner_id is None:
            # No index narrows the where: walk the order field's index, the filter on each.
            [whole] = plan(type_name, schema, None, order).ranges or ()
            return (self._ranged(project_id, whole, order.descending, scan, first),
                    not _always_present(schema, order))
        return None

    async def _unfiltered_page(self, project_id: str, type_name: str, schema: RecordSchema, order: Order | None,
                               limit: int, offset: int) -> QueryPage:
        """A page of the type's records with no filter: offset and limit go to the store."""
        if order is None:
            docs = await self._store.find(RECORDS, project_id, {"_live": type_name}, limit=limit + 1, offset=offset)
            return _page_of(docs, limit, offset)
        [whole] = plan(type_name, schema, None, order).ranges or ()
        definition = schema.fields.get(order.field)
        if definition is not None and definition.array:
            # An array's index lists a record once per element: walk it (query's general path).
            scan = _Scan(self._config.max_examined)
            found: list[dict[str, Any]] = []
            seen: set[str] = set()
            async for docs in self._ranged(project_id, whole, order.descending, scan, offset + limit + 1):
                for doc in docs:
                    if doc["record_id"] not in seen:
                        seen.add(doc["record_id"])
                        found.append(doc)
                if len(found) > offset + limit:
                    break
            if len(found) <= offset + limit:
                async for docs in self._typed(project_id, type_name, None, scan):
                    found += [doc for doc in docs if _lacks(doc, order)]
            return _page_of(found[offset:], limit, offset)
        docs = await self._store.find_ordered(RECORDS, project_id, whole, descending=order.descending,
                                              limit=limit + 1, offset=offset)
        if len(docs) > limit or _always_present(schema, order):
            return _page_of(docs, limit, offset)
        # The page reaches the end of the records that have a value: those without one come last.
        with_value = await self._store.count_ordered(RECORDS, project_id, whole)
        if len(docs) == limit:  # full: is there a next page, of records without a value?
            total = await self._store.count(RECORDS, project_id, {"_live": type_name})
            return QueryPage([to_api(doc) for doc in docs], offset + limit if total > offset + limit else None)
        skip = max(0, offset - with_value)
        scan = _Scan(self._config.max_examined)
        async for batch in self._typed(project_id, type_name, None, scan):
            lacking = [doc for doc in batch if _lacks(doc, order)]
            taken = lacking[skip:]
            skip = max(0, skip - len(lacking))
            docs += taken
            if len(docs) > limit:
                break
        return _page_of(docs, limit, offset)

    async def _candidates(self, project_id: str, type_name: str, chosen: Plan, owner_id: str | None,
                          scan: _Scan) -> AsyncIterator[list[dict[str, Any]]]:
        if chosen.ids is not None:
            docs = [doc for doc in [await self._store.get(RECORDS, project_id, record_id)
                                    for record_id in chosen.ids] if doc is not None]
            scan.count(docs)
            yield docs
        elif chosen.ranges is not None:
            for ranged in chosen.ranges:
                async for docs in self._ranged(project_id, ranged, False, scan):
                    yield docs
        else:
            async for docs in self._typed(project_id, type_name, owner_id, scan):
                yield docs

    def _ranged(self, project_id: str, ranged: OrderedRange, descending: bool, scan: _Scan | None,
                first: int = _PAGE) -> AsyncIterator[list[dict[str, Any]]]:
        """The range's records in its order, in pages (see ``_pages``)."""
        async def fetch(limit: int, offset: int) -> list[dict[str, Any]]:
            return await self._store.find_ordered(RECORDS, project_id, ranged, descending=descending, limit=limit,
                                                  offset=offset)
        return _pages(fetch, scan, first)

    def _typed(self, project_id: str, type_name: str, owner_id: str | None, scan: _Scan | None = None,
               first: int = _PAGE) -> AsyncIterator[list[dict[str, Any]]]:
        """The type's live records (of one owner) in creation order, in pages (see ``_pages``)."""
        where = {"_live": type_name, **({"owner_id": owner_id} if owner_id else {})}

        async def fetch(limit: int, offset: int) -> list[dict[str, Any]]:
            return await self._store.find(RECORDS, project_id, where, limit=limit, offset=offset)
        return _pages(fetch, scan, first)

    # --- search and recall ---------------------------------------------------------------

    async def search(self, project_id: str, type_name: str, text: str, *, limit: int, where: Any = None,
                     owner_id: str | None = None, api_key: str | None = None) -> list[RecordHit]:
        """Hybrid search over the type's records' text fields, filtered by owner and ``where``."""
        schema = await self.schema(project_id, type_name)
        predicate = parse_where(schema, where)
        access = (owned_key(project_id, type_name, owner_id) if owner_id else type_key(project_id, type_name),)
        # A where filter is checked on the hits: ask for more so that enough are left.
        depth = limit if predicate is None else min(limit * 5, 500)
        hits = await self.index.search(project_id, text, access=access, limit=depth, api_key=api_key)
        if predicate is not None:
            hits = [hit for hit in hits if matches(schema, predicate, hit.record)]
        return hits[:limit]

    async def recall(self, project_id: str, subject_id: str, text: str, *, tables: Sequence[str] | None,
                     api_key: str | None = None) -> list[RecordHit]:
        """The records of ``tables`` (every type when None) a subject's chat may see that best
        match ``text``: public ones, and those the subject owns or collaborates on."""
        settings = self._config.recall
        hits = await self.index.search(project_id, text, access=recall_access(project_id, subject_id, tables or None),
                                       limit=settings.limit, api_key=api_key)
        return [hit for hit in hits if hit.similarity >= settings.min_score]

    # --- erasure -------------------------------------------------------------------------

    async def erase_subject(self, project_id: str, subject_id: str) -> int:
        """Remove the records ``subject_id`` owns (with their trail and index points), and the
        subject from the collaborators of the others; returns how many records were removed."""
        await self.index.erase_owner(project_id, subject_id)
        owned = await self._store.delete_where(RECORDS, project_id, {"owner_id": subject_id})
        for listed in await self._store.find(RECORDS, project_id, {"collaborators": subject_id}):
            # Under the record's lock, read again: a PUT under way wrote what it read before.
            async with self._locks.hold(project_id, listed["record_id"]):
                doc = await self._store.get(RECORDS, project_id, listed["record_id"])
                if doc is None or subject_id not in doc["collaborators"]:
                    continue
                doc = {**doc, "collaborators": [c for c in doc["collaborators"] if c != subject_id]}
                await self._write(project_id, await self.schema(project_id, doc["type_name"]), doc)
        return owned

    # --- internals -----------------------------------------------------------------------

    @asynccontextmanager
    async def _fenced(self, project_id: str, subjects: Iterable[str | None], since: float) -> AsyncIterator[None]:
        """Inside erasure's write section of each subject (SubjectErased if one was erased since)."""
        async with AsyncExitStack() as stack:
            if self.fence is not None:
                for subject in dict.fromkeys(subject for subject in subjects if subject):
                    await stack.enter_async_context(self.fence(project_id, subject, since))
            yield

    @asynccontextmanager
    async def _record_section(self, project_id: str, type_name: str, record_id: str,
                              since: float) -> AsyncIterator[None]:
        """Where a change of a stored record reads and writes it: erasure's section of its owner,
        then the record's lock (which an erasure that removes a collaborator takes too, reading the
        record again: a change under way never writes an erased collaborator back). A record whose
        owner was erased meanwhile is gone: 404, as it will be."""
        doc = await self._live(project_id, type_name, record_id)
        try:
            async with self._fenced(project_id, [doc.get("owner_id")], since):
                async with self._locks.hold(project_id, record_id):
                    yield
        except SubjectErased:
            raise RecordNotFound(f"no {type_name} record '{record_id}'", param="record_id") from None

    async def _live(self, project_id: str, type_name: str, record_id: str) -> dict[str, Any]:
        doc = await self._store.get(RECORDS, project_id, record_id)
        if doc is None or doc["type_name"] != type_name or doc.get("is_deleted"):
            raise RecordNotFound(f"no {type_name} record '{record_id}'", param="record_id")
        return doc

    async def check_record(self, project_id: str, type_name: str, data: Any, *,
                           partial: bool = False) -> dict[str, Any]:
        """What a write of ``data`` would store, checked as a write checks it (schema and
        references; ``partial``: the fields of an update), without writing: 400 if it would fail."""
        schema = await self.schema(project_id, type_name)
        checked = validate_data(schema, data, partial=partial)
        present = {name: value for name, value in checked.items() if value is not None}
        await self._check_refs(project_id, schema, present)
        return checked

    async def _check_refs(self, project_id: str, schema: RecordSchema, data: Mapping[str, Any]) -> None:
        """Every ref field must name a live record of its target type."""
        for name, value in data.items():
            definition = schema.fields.get(name)
            if definition is None or definition.type != "ref" or value is None:
                continue
            for record_id in value if isinstance(value, list) else [value]:
                target = await self._store.get(RECORDS, project_id, record_id)
                if target is None or target.get("_live") != definition.ref:
                    raise BadRequest(f"data.{name}: no {definition.ref} record '{record_id}'",
                                     code="invalid_reference", param=f"data.{name}")

    async def _write(self, project_id: str, schema: RecordSchema, doc: dict[str, Any], *,
                     api_key: str | None = None) -> None:
        await self._write_many(project_id, schema, [doc], api_key=api_key)

    async def _write_many(self, project_id: str, schema: RecordSchema, docs: Sequence[dict[str, Any]], *,
                          api_key: str | None = None, created: bool = False, stamp: bool = True) -> None:
        """Store records with their index entries (one store write), then their search points.

        Just before storing, the type's schema is read again: a write validated against one a
        redefinition has since replaced is checked against the new one (409 ``schema_changed``
        if it no longer fits), and the records are stamped with the time they are stored (what
        a redefinition's second look at late writes goes by)."""
        # Embedding (a provider call that may fail) before anything is stored: a failed write stores nothing.
        vectors = await self.index.embed([(doc, searchable_text(schema, doc["data"])) for doc in docs],
                                         api_key=api_key)
        current = await self.schema(project_id, schema.type_name)
        if current is not schema:
            for doc in docs:
                if doc.get("is_deleted"):
                    continue
                try:
                    validate_data(current, doc["data"])
                except BadRequest as error:
                    raise Conflict(f"the schema of '{schema.type_name}' changed while this write ran and "
                                   f"{doc['record_id']} no longer fits it ({error.message}); nothing was stored",
                                   code="schema_changed") from None
        now = _now()
        for doc in docs:
            if stamp:  # (not for a rewrite of the indexes alone)
                doc["_updated"], doc["updated_at"] = now, from_timestamp(now)
                if created:
                    doc["_created"], doc["created_at"] = now, doc["updated_at"]
                if doc.get("_trail"):
                    doc["_trail"][-1]["at"] = doc["updated_at"]
            _index_entries(current, doc)
        await self._store.put_many(RECORDS, project_id, [(doc["record_id"], doc) for doc in docs])
        entries = [(to_api(doc), searchable_text(current, doc["data"])) for doc in docs]
        await self.index.upsert(project_id, self.index.points(project_id, entries, vectors))

    def _publish(self, project_id: str, doc: Mapping[str, Any], event: str) -> None:
        data: dict[str, Any] = {"record_id": doc["record_id"], "type_name": doc["type_name"],
                                "subject_id": doc.get("owner_id")}
        if event != "record.deleted":
            data["data"] = doc["data"]
            data["updated_at"] = doc["updated_at"]
        self._events.publish(project_id, doc.get("owner_id"), event, data)


def _index_entries(schema: RecordSchema, doc: dict[str, Any]) -> None:
    """Set what the store indexes: ``_live`` and the ordered entries while the record is live."""
    if doc.get("is_deleted"):
        doc.pop("_live", None)
        doc["_order"] = {}
        return
    type_name = doc["_live"] = doc["type_name"]
    values = ordered_values(schema, doc["data"])
    order = {index_name(type_name, name): field_values for name, field_values in values.items()}
    order[index_name(type_name, _CREATED)] = [doc["_created"]]
    order[index_name(type_name, _UPDATED)] = [doc["_updated"]]
    if doc.get("owner_id"):
        order[index_name(type_name, "@owner_id")] = [doc["owner_id"]]
    doc["_order"] = order


def _note(doc: dict[str, Any], action: str, provenance: Provenance, *, changed: Iterable[str] = ()) -> None:
    """Append this write to the record's trail (a new list: ``doc`` may share the old one)."""
    trail = [*doc.get("_trail", ()), {"action": action, "changed_fields": list(changed), "at": doc["updated_at"],
                                      "by": provenance.as_dict()}]
    if len(trail) > MAX_TRAIL:
        doc["_trail_dropped"] = doc.get("_trail_dropped", 0) + len(trail) - MAX_TRAIL
        trail = trail[-MAX_TRAIL:]
    doc["_trail"] = trail


async def _pages(fetch: Callable[[int, int], Awaitable[list[dict[str, Any]]]], scan: _Scan | None,
                 first: int = _PAGE) -> AsyncIterator[list[dict[str, Any]]]:
    """Pages of ``fetch(limit, offset)``: ``first`` documents (what a page needs when every one
    matches), then twice as many each time up to _PAGE, until a short page; each counted against
    ``scan`` (a filter that keeps most candidates reads little more than it returns)."""
    offset, size = 0, max(1, min(first, _PAGE))
    while True:
        docs = await fetch(size, offset)
        if scan is not None:
            scan.count(docs)
        yield docs
        if len(docs) < size:
            return
        offset += size
        size = min(size * 2, _PAGE)


def _page_of(docs: Sequence[dict[str, Any]], limit: int, offset: int) -> QueryPage:
    """``docs`` read from ``offset`` with one more than ``limit`` (if there is one): the page."""
    return QueryPage([to_api(doc) for doc in docs[:limit]], offset + limit if len(docs) > limit else None)


def _creation_order(doc: Mapping[str, Any]) -> tuple[float, str]:
    # Record ids rise within a millisecond (_new_record_id): ties come in creation order too.
    return doc["_created"], doc["record_id"]


def _always_present(schema: RecordSchema, order: Order) -> bool:
    """Whether every record has a value for the order field (no pass for those without one)."""
    definition = schema.fields.get(order.field)
    if definition is None:
        return True  # created_at, updated_at
    return definition.required and not definition.array  # (a required array may be [])


_sequence = itertools.count()


def _new_record_id() -> str:
    """``rec_`` + the time in milliseconds + a counter of this process + randomness: the ids one
    process makes rise, so records of one millisecond (a batch) still sort in creation order."""
    return f"rec_{time.time_ns() // 1_000_000:012x}{next(_sequence) % 0x1000000:06x}{secrets.token_hex(3)}"


def _now() -> float:
    """Epoch seconds to the millisecond: exactly the instant the ISO timestamps the API shows
    (from_timestamp) stand for, so the created/updated indexes and a query's check agree."""
    return time.time_ns() // 1_000_000 / 1000


def _lacks(doc: Mapping[str, Any], order: Order) -> bool:
    """Whether the record has no value for the order field (such records come last)."""
    if order.field in ("created_at", "updated_at"):
        return False
    value = doc["data"].get(order.field)
    return value is None or value == []


def _same_definition(stored: Mapping[str, Any], defined: Mapping[str, Any]) -> bool:
    return all(stored.get(key) == defined[key] for key in ("fields", "display_name", "description"))


def schema_to_api(project_id: str, schema: RecordSchema) -> dict[str, Any]:
    return {"project_id": project_id, "type_name": schema.type_name,
            "fields": {name: definition.to_api() for name, definition in schema.fields.items()},
            "display_name": schema.display_name, "description": schema.description}


def encode_cursor(offset: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"o": offset, "q": fingerprint})).decode().rstrip("=")


def decode_cursor(cursor: str, fingerprint: str) -> int:
    """The offset a cursor from ``encode_cursor`` holds; 400 if it is not one, or another query's."""
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset, owner = raw["o"], raw["q"]
    except (ValueError, TypeError, KeyError):
        raise BadRequest("cursor is not one this API returned", code="invalid_cursor", param="cursor") from None
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= MAX_OFFSET \
            or owner != fingerprint:
        raise BadRequest("cursor belongs to another query (where and order_by must stay the same)",
                         code="invalid_cursor", param="cursor")
    return offset


def query_fingerprint(type_name: str, where: Any, order_by: Any, owner_id: str | None) -> str:
    """What a cursor is bound to: the query it continues."""
    # json, not orjson: the where is not checked yet, and may hold an integer orjson refuses.
    text = json.dumps([type_name, where, order_by, owner_id], sort_keys=True, default=str).encode()
    return hashlib.blake2b(text, digest_size=8).hexdigest()


__all__ = ["NewRecord", "Predicate", "Provenance", "QueryPage", "RECORDS", "Records", "SCHEMAS",
           "decode_cursor", "encode_cursor", "query_fingerprint", "to_api"]
