"""Importing an export file into a project, whole or not at all.

Two passes. The first reads and checks every line and writes nothing: a line that is not
JSON, of an unknown kind, missing what its document's id is made of, of another project, or
that the store could not index, stops the import with the line's number; so does a file
cut short (no ``end`` line) or a record whose type has no schema in the file or the target.
The second writes, kind by kind in ``IMPORT_ORDER``, each document under the id it had, so
importing a file twice leaves what importing it once did; tallies (recall and reinforcement
counts, truth changes) are set to the file's values, not added to.

The vector index is then brought in step through the services that own it, as an index
repair does: every imported memory is re-indexed from its stored document by
``Memories.reindex_many`` (with the embedder, if one is configured, a batch of texts per
model call) and every record through its ``RecordIndex``. Nothing is published as an event,
and an erasure tombstone does not stop an import: loading a file is the operator's explicit act.
"""

from __future__ import annotations

import time
from datetime import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.audit_log import AUDIT
from gateway.export.kinds import CLAIM_TRUTH_CHANGES, END, FORMAT, FORMAT_VERSION, HEADER, IMPORT_ORDER, KINDS, Kind
from gateway.integrations.definitions import INTEGRATIONS
from gateway.memory.index_upkeep import MEMORIES, index_fields
from gateway.memory.truth_graph import CHANGES as TRUTH_CHANGES
from gateway.memory.truth_graph import SNAPSHOTS
from gateway.memory.truth_graph import _subject_key as truth_changes_key
from gateway.records.records import RECORDS, SCHEMAS
from gateway.records.records import to_api as record_to_api
from gateway.records.schema import parse_schema, searchable_text
from gateway.store import DocumentStore, Increment

# Documents per store write.
_BATCH = 500


class ImportRefused(Exception):
    """The file cannot be imported; nothing was written."""


@dataclass
class _Document:
    line: int
    kind: Kind
    doc_id: str
    data: dict[str, Any]
    tallies: dict[str, tuple[int, float]] | None
    expires_at: float | None


@dataclass
class ExportFile:
    """A checked export file, ready to write."""

    project_id: str
    subject_id: str | None
    documents: dict[str, list[_Document]] = field(default_factory=dict)
    # subject id -> (count, time of the latest change)
    truth_changes: dict[str, tuple[int, float]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        counted = {name: len(docs) for name, docs in self.documents.items() if docs}
        if self.truth_changes:
            counted[CLAIM_TRUTH_CHANGES] = len(self.truth_changes)
        return counted


def read_export(lines: Iterable[bytes], project_id: str) -> ExportFile:
    """Check every line of an export file for ``project_id``; ImportRefused names the first bad one."""
    parsed: ExportFile | None = None
    ended_at = 0
    number = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        if ended_at:
            raise ImportRefused(f"line {number}: nothing may follow the end line (line {ended_at})")
        entry = _entry(number, raw)
        kind, data = entry["kind"], entry["data"]
        if parsed is None:
            parsed = _header(number, kind, data, project_id)
            continue
        if kind == HEADER:
            raise ImportRefused(f"line {number}: a second header")
        if kind == END:
            if data.get("lines") != number - 1:
                raise ImportRefused(f"line {number}: the end line counts {data.get('lines')!r} lines before it, "
                                    f"the file has {number - 1}")
            ended_at = number
        elif kind == CLAIM_TRUTH_CHANGES:
            subject, count, last_at = data.get("subject_id"), data.get("count"), data.get("last_at")
            if not isinstance(subject, str) or not _count(count) or not _number(last_at):
                raise ImportRefused(f"line {number}: {CLAIM_TRUTH_CHANGES} needs subject_id, count and last_at")
            parsed.truth_changes[subject] = (count, last_at)
        elif kind in KINDS:
            parsed.documents.setdefault(kind, []).append(_document(number, KINDS[kind], entry, project_id))
        else:
            raise ImportRefused(f"line {number}: unknown kind {kind!r}")
    if parsed is None:
        raise ImportRefused("the file is empty: an export starts with its header line")
    if not ended_at:
        raise ImportRefused(f"line {number}: the file ends without its end line (was it cut short?)")
    _check_records(parsed)
    return parsed


def _check_records(parsed: ExportFile) -> None:
    """What indexing the file's records will read, read now: a schema that does not parse or a record
    without its data must refuse the file before anything is written, not fail after."""
    schemas: dict[str, Any] = {}
    records: list[_Document] = []
    for documents in parsed.documents.values():
        for doc in documents:
            if doc.kind.collection is SCHEMAS:
                try:
                    schemas[doc.data["type_name"]] = parse_schema(doc.data)
                except Exception as error:  # the parser's own errors, or a document not shaped like one
                    raise ImportRefused(f"line {doc.line}: this record schema does not parse: {error}") from None
            elif doc.kind.collection is RECORDS:
                records.append(doc)
    for doc in records:
        data = doc.data.get("data")
        if not isinstance(data, dict):
            raise ImportRefused(f"line {doc.line}: a record needs its data (an object)")
        schema = schemas.get(str(doc.data.get("type_name")))
        try:
            record_to_api(doc.data)
            if schema is not None:
                searchable_text(schema, data)
        except Exception as error:
            raise ImportRefused(f"line {doc.line}: this record cannot be indexed: {type(error).__name__}: "
                                f"{error}") from None


def _entry(number: int, raw: bytes) -> dict[str, Any]:
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise ImportRefused(f"line {number}: not JSON ({error})") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str) or not isinstance(entry.get("data"),
                                                                                                 dict):
        raise ImportRefused(f"line {number}: a line is a JSON object with a string kind and an object data")
    return entry


def _header(number: int, kind: str, data: dict[str, Any], project_id: str) -> ExportFile:
    if kind != HEADER:
        raise ImportRefused(f"line {number}: the first line must be the export's header, not {kind!r}")
    if data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
        raise ImportRefused(f"line {number}: not a {FORMAT} file of version {FORMAT_VERSION} "
                            f"(format {data.get('format')!r}, version {data.get('version')!r})")
    if data.get("project_id") != project_id:
        raise ImportRefused(f"line {number}: the file is project {data.get('project_id')!r}'s, not {project_id!r}'s")
    subject = data.get("subject_id")
    return ExportFile(project_id, subject if isinstance(subject, str) else None)


def _document(number: int, kind: Kind, entry: dict[str, Any], project_id: str) -> _Document:
    data = entry["data"]
    try:
        doc_id = kind.doc_id(data)
    except (KeyError, TypeError) as error:
        raise ImportRefused(f"line {number}: this {kind.name} document lacks {error}") from None
    if "id" in entry and entry["id"] != doc_id:
        raise ImportRefused(f"line {number}: id {entry['id']!r} is not this {kind.name} document's ({doc_id!r})")
    owner = data.get("project_id")
    if owner is not None and owner != project_id:
        raise ImportRefused(f"line {number}: a document of project {owner!r}, not {project_id!r}")
    try:
        kind.collection.ordered_entries(data)
        if kind.collection is MEMORIES:
            index_fields(data)  # what re-indexing it will read
        elif kind.collection is AUDIT:
            _answered_at(data)  # when its retention started
    except (KeyError, TypeError, ValueError) as error:
        raise ImportRefused(f"line {number}: this {kind.name} document cannot be stored: {error}") from None
    return _Document(number, kind, doc_id, data, _tallies(number, entry.get("tallies")), _expiry(number, entry))


def _tallies(number: int, raw: Any) -> dict[str, tuple[int, float]] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ImportRefused(f"line {number}: tallies must be an object")
    tallies = {}
    for name, tally in raw.items():
        if not isinstance(tally, dict) or not _count(tally.get("count")) or not _number(tally.get("last_at")):
            raise ImportRefused(f"line {number}: tally {name!r} needs a count and a last_at")
        tallies[name] = (tally["count"], float(tally["last_at"]))
    return tallies


def _expiry(number: int, entry: Mapping[str, Any]) -> float | None:
    expires_at = entry.get("expires_at")
    if expires_at is not None and not _number(expires_at):
        raise ImportRefused(f"line {number}: expires_at must be epoch seconds")
    return expires_at


def _answered_at(doc: Mapping[str, Any]) -> float:
    return datetime.fromisoformat(doc["answered_at"]).timestamp()


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


async def check_schemas(store: DocumentStore, export: ExportFile) -> None:
    """Every record's type has its schema in the file or already in the target (else ImportRefused)."""
    in_file = {doc.doc_id for doc in export.documents.get(SCHEMAS.name, [])}
    for doc in export.documents.get(RECORDS.name, []):
        type_name = doc.data.get("type_name")
        if type_name in in_file:
            continue
        if not isinstance(type_name, str) or await store.get(SCHEMAS, export.project_id, type_name) is None:
            raise ImportRefused(f"line {doc.line}: record {doc.doc_id} has no schema for its type {type_name!r}, "
                                f"in the file or the project")
        in_file.add(type_name)


async def write_export(store: DocumentStore, export: ExportFile, *, memories: Any, records: Any,
                       audit_retention_seconds: float) -> dict[str, int]:
    """Write a checked file (see the module docstring); returns how many of each kind."""
    project = export.project_id
    for name in IMPORT_ORDER:
        docs = export.documents.get(name, [])
        if not docs:
            continue
        kind = docs[0].kind
        if kind.collection is INTEGRATIONS:
            docs = [await _with_target_secrets(store, project, doc) for doc in docs]
        if kind.collection is AUDIT:
            # This gateway's retention decides how long it keeps them, as for the records it writes.
            docs = [_Document(doc.line, doc.kind, doc.doc_id, doc.data, doc.tallies,
                              _answered_at(doc.data) + audit_retention_seconds) for doc in docs]
        lasting = [doc for doc in docs if doc.expires_at is None]
        for start in range(0, len(lasting), _BATCH):
            await store.put_many(kind.collection, project,
                                 [(doc.doc_id, doc.data) for doc in lasting[start:start + _BATCH]])
        for doc in docs:
            if doc.expires_at is not None and (left := doc.expires_at - time.time()) > 0:
                await store.put(kind.collection, project, doc.doc_id, doc.data, ttl_seconds=left)
        if kind.tallied:
            # The file's counts, not the file's added to the target's: importing twice = once.
            await store.delete_tallies(kind.collection, project, [doc.doc_id for doc in docs])
            await store.increment(kind.collection, project, [
                Increment(doc.doc_id, tally, last_at, by=count)
                for doc in docs for tally, (count, last_at) in (doc.tallies or {}).items() if count])
    for subject, (count, last_at) in export.truth_changes.items():
        key = truth_changes_key(subject)
        await store.delete_tallies(SNAPSHOTS, project, [key])
        if count:
            await store.increment(SNAPSHOTS, project, [Increment(key, TRUTH_CHANGES, last_at, by=count)])
        # A snapshot of the target's old truths would stand for the new count: rebuilt at the next read.
        await store.delete(SNAPSHOTS, project, key)
    # Many texts per embedder call: one call per memory made a local model the import's bottleneck.
    await memories.reindex_many(project, [doc.doc_id for doc in export.documents.get(MEMORIES.name, [])])
    await _reindex_records(project, export.documents.get(RECORDS.name, []), records)
    return export.counts()


async def _with_target_secrets(store: DocumentStore, project_id: str, doc: _Document) -> _Document:
    """An exported integration has no secrets: it keeps those the target has for it."""
    existing = await store.get(INTEGRATIONS, project_id, doc.doc_id)
    secrets = (existing or {}).get("secrets") or {}
    return _Document(doc.line, doc.kind, doc.doc_id, {**doc.data, "secrets": dict(secrets)}, doc.tallies,
                     doc.expires_at)


async def _reindex_records(project_id: str, docs: list[_Document], records: Any) -> None:
    by_type: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_type.setdefault(doc.data["type_name"], []).append(doc.data)
    for type_name, typed in by_type.items():
        schema = await records.schema(project_id, type_name)
        for start in range(0, len(typed), _BATCH):
            await records.index.rewrite(project_id, [(record_to_api(data), searchable_text(schema, data["data"]))
                                                     for data in typed[start:start + _BATCH]])
