"""Rebuilding the vector index from the store (``mnx-gateway reindex``).

The store is the source of truth; the index only holds what search reads. A new embedder, a
new lexical kind (``memory.vectors.lexical``) or a lost index therefore needs every memory (and
every record: they share the index) written again from its stored document. The rebuild writes
a *new* index, the one the config it is given names, while the gateway keeps serving from its
old one; the switch is starting the gateway on that config.

A run walks each configured project's memories and records in the store's insertion order, a
batch at a time: one embedder call and one index write per batch. A checkpoint (a small SQLite
file) records, per project, how far the walk went and, per document, a fingerprint of what its
index point was built from. So:

* an interrupted run resumes where its last finished batch ended (nothing embedded twice but
  the batch it was in);
* each run ends with a catch-up pass over the whole store that rebuilds only the documents
  whose fingerprint changed (or that are new) since they were indexed: what the running
  gateway wrote meanwhile. Writes made after that pass are caught by running the command once
  more at the switch. A subject erased since its memories were indexed has its points deleted
  (erasure is the only way a memory or record leaves the store), then its current ones written.

The catch-up is also safe beside gateways that already write to the new index (the shared
backends, after their switch): a rebuilt point is checked against the store once written, and
rebuilt again if the document changed meanwhile. A gateway writes the store before the index,
so when the check finds the document unchanged, any later change reaches the index after ours.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from collections.abc import Sequence

import orjson

from gateway.config import GatewayConfig
from gateway.errors import ConfigError
from gateway.memory.embedding import EMBED_BATCH, Embedder
from gateway.memory.index_upkeep import MEMORIES, IndexUpkeep
from gateway.memory.lexical import Lexicon
from gateway.memory.vector_index import VectorIndex
from gateway.records.index import RecordIndex, index_project
from gateway.records.records import RECORDS, SCHEMAS
from gateway.records.records import to_api as record_to_api
from gateway.records.schema import RecordSchema, parse_schema, searchable_text
from gateway.store import Collection, DocumentStore

# Documents per batch: one store read, one embedder call, one index write, one checkpoint commit.
DEFAULT_BATCH = EMBED_BATCH
# Documents per store read: SQLite skips an offset row by row, so pages of one batch would make
# a walk over a million documents quadratic.
READ_PAGE = 1000
# A progress line at most this often (and at the end of each pass).
PROGRESS_SECONDS = 2.0
# The checkpoint's name inside an embedded (Qdrant Edge) index directory.
EDGE_CHECKPOINT = "reindex_checkpoint.sqlite3"
# Times a catch-up batch is rebuilt when its documents keep changing under it.
_RECHECKS = 3

# What a memory's index point is built from (index_upkeep.index_fields, the lexicon's
# inputs), less the recall tallies, which change at every recall and only weigh ranking.
_MEMORY_INPUTS = ("subject_id", "text", "_previous_text", "_next_text", "kind", "listing", "visibility",
                  "importance", "confidence", "is_temporal", "_created", "_last_seen", "seen_count", "_claims")


def digest(value: Any) -> str:
    return hashlib.blake2b(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), digest_size=12).hexdigest()


class Part:
    """One kind of document the index holds: how it is walked, fingerprinted and rebuilt."""

    name: str
    collection: Collection
    # The store index that finds one owner's documents.
    owner_field: str

    def doc_id(self, doc: dict[str, Any]) -> str:
        raise NotImplementedError

    def owner(self, doc: dict[str, Any]) -> str:
        raise NotImplementedError

    async def fingerprint(self, project_id: str, doc: dict[str, Any]) -> str:
        raise NotImplementedError

    async def write(self, project_id: str, docs: list[dict[str, Any]]) -> int:
        """Write the documents' index points (one embedder call); returns the texts embedded."""
        raise NotImplementedError

    async def erase_owner(self, project_id: str, owner: str) -> None:
        raise NotImplementedError


class MemoryPart(Part):
    name, collection, owner_field = "memories", MEMORIES, "subject_id"

    def __init__(self, index: VectorIndex, upkeep: IndexUpkeep) -> None:
        self._index, self._upkeep = index, upkeep

    def doc_id(self, doc: dict[str, Any]) -> str:
        return str(doc["id"])

    def owner(self, doc: dict[str, Any]) -> str:
        return str(doc["subject_id"])

    async def fingerprint(self, project_id: str, doc: dict[str, Any]) -> str:
        return digest([doc.get(name) for name in _MEMORY_INPUTS])

    async def write(self, project_id: str, docs: list[dict[str, Any]]) -> int:
        return await self._upkeep.write_points(project_id, docs)

    async def erase_owner(self, project_id: str, owner: str) -> None:
        await self._index.delete_subject(project_id, owner)


class RecordPart(Part):
    name, collection, owner_field = "records", RECORDS, "owner_id"

    def __init__(self, store: DocumentStore, records: RecordIndex) -> None:
        self._store, self._records = store, records
        # Each type's schema, read once per run (a schema changed during a run is caught by the next).
        self._schemas: dict[tuple[str, str], RecordSchema | None] = {}

    def doc_id(self, doc: dict[str, Any]) -> str:
        return str(doc["record_id"])

    def owner(self, doc: dict[str, Any]) -> str:
        return str(doc.get("owner_id") or "")

    async def _text(self, project_id: str, doc: dict[str, Any]) -> str:
        """The words the record is indexed by (its schema's text fields; none if it has no schema)."""
        key = (project_id, doc["type_name"])
        if key not in self._schemas:
            stored = await self._store.get(SCHEMAS, project_id, doc["type_name"])
            self._schemas[key] = parse_schema(stored) if stored is not None else None
        schema = self._schemas[key]
        return searchable_text(schema, doc.get("data") or {}) if schema is not None else ""

    async def fingerprint(self, project_id: str, doc: dict[str, Any]) -> str:
        return digest([record_to_api(doc), await self._text(project_id, doc)])

    async def write(self, project_id: str, docs: list[dict[str, Any]]) -> int:
        return await self._records.rewrite(project_id, [(record_to_api(doc), await self._text(project_id, doc))
                                                        for doc in docs])

    async def erase_owner(self, project_id: str, owner: str) -> None:
        await self._records.erase_owner(project_id, owner)


class Checkpoint:
    """How far a rebuild went: per (project, part) the documents walked in store order, and per
    document the fingerprint its point was built from. Committed after each batch's index write."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.executescript("""
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS walked (project TEXT, part TEXT, position INTEGER NOT NULL,
                                               PRIMARY KEY (project, part));
            CREATE TABLE IF NOT EXISTS points (project TEXT, part TEXT, doc_id TEXT, owner TEXT NOT NULL,
                                               fingerprint TEXT NOT NULL, PRIMARY KEY (project, part, doc_id));
            CREATE INDEX IF NOT EXISTS points_by_owner ON points (project, part, owner);
        """)
        # The documents the current catch-up pass met (not kept between runs).
        self._db.execute("CREATE TEMP TABLE seen (project TEXT, part TEXT, doc_id TEXT, "
                         "PRIMARY KEY (project, part, doc_id))")

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def position(self, project: str, part: str) -> int:
        row = self._db.execute("SELECT position FROM walked WHERE project = ? AND part = ?", (project, part)).fetchone()
        return int(row[0]) if row else 0

    def fingerprints(self, project: str, part: str, doc_ids: Sequence[str]) -> dict[str, str]:
        marks = ",".join("?" * len(doc_ids))
        rows = self._db.execute(f"SELECT doc_id, fingerprint FROM points WHERE project = ? AND part = ? "
                                f"AND doc_id IN ({marks})", (project, part, *doc_ids))
        return dict(rows.fetchall())

    def record(self, project: str, part: str, built: Sequence[tuple[str, str, str]], *,
               position: int | None = None, seen: Sequence[str] = ()) -> None:
        """Note ``built`` (doc id, owner, fingerprint) and, if given, the walk's new position."""
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO points (project, part, doc_id, owner, fingerprint) "
                                 "VALUES (?, ?, ?, ?, ?)", [(project, part, *row) for row in built])
            if position is not None:
                self._db.execute("INSERT OR REPLACE INTO walked (project, part, position) VALUES (?, ?, ?)",
                                 (project, part, position))
            self._db.executemany("INSERT OR IGNORE INTO seen (project, part, doc_id) VALUES (?, ?, ?)",
                                 [(project, part, doc_id) for doc_id in seen])

    def forget_seen(self) -> None:
        self._db.execute("DELETE FROM seen")

    def vanished_owners(self, project: str, part: str) -> list[str]:
        """Owners with a built document the catch-up pass did not meet in the store: erased."""
        rows = self._db.execute("SELECT DISTINCT owner FROM points p WHERE project = ? AND part = ? AND NOT EXISTS "
                                "(SELECT 1 FROM seen s WHERE s.project = p.project AND s.part = p.part "
                                "AND s.doc_id = p.doc_id)", (project, part))
        return [owner for (owner,) in rows.fetchall()]

    def forget_owner(self, project: str, part: str, owner: str) -> None:
        self._db.execute("DELETE FROM points WHERE project = ? AND part = ? AND owner = ?", (project, part, owner))

    def built(self, project: str, part: str) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM points WHERE project = ? AND part = ?",
                                    (project, part)).fetchone()[0])

    def _transaction(self) -> Any:
        return _Transaction(self._db)

    def close(self) -> None:
        self._db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN")

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")


def target_of(config: GatewayConfig) -> dict[str, Any]:
    """What the config's index is: where it lives and what its points are built with. A
    checkpoint belongs to one target; resuming into another would skip what it never held."""
    vectors, embedder = config.memory.vectors, config.memory.embedder
    where: dict[str, Any]
    if vectors.backend == "edge":
        where = {"path": str(Path(vectors.edge.path).resolve())}
    elif vectors.backend == "qdrant" and vectors.qdrant is not None:
        where = {"url": vectors.qdrant.url, "location": vectors.qdrant.location,
                 "collection": vectors.qdrant.collection}
    elif vectors.backend == "redis":
        where = {"url": vectors.redis.url, "key_prefix": vectors.redis.key_prefix, "index": vectors.redis.index}
    else:
        where = {"options": vectors.options}
    return {"backend": vectors.backend, **where, "lexical": vectors.lexical,
            "embedder": [embedder.provider, embedder.model, embedder.dimensions]}


def default_checkpoint(config: GatewayConfig) -> Path:
    """Inside the embedded index's directory (removing the index removes it too); else under
    ./data, named after the collection or index."""
    vectors = config.memory.vectors
    if vectors.backend == "edge":
        return Path(vectors.edge.path) / EDGE_CHECKPOINT
    name = (vectors.qdrant.collection if vectors.backend == "qdrant" and vectors.qdrant is not None
            else vectors.redis.index if vectors.backend == "redis" else vectors.backend)
    return Path("data") / f"reindex-{vectors.backend}-{name}.sqlite3"


@dataclass
class Progress:
    """Progress lines on stderr: what is done of the whole, and the rate of this pass."""

    total: int
    out: TextIO
    pass_name: str = "build"
    done: int = 0
    embedded: int = 0
    _started: float = 0.0
    _printed: float = 0.0

    def start(self, pass_name: str) -> None:
        self.pass_name, self.done = pass_name, 0
        self._started = self._printed = time.monotonic()

    def advance(self, walked: int, embedded: int) -> None:
        self.done += walked
        self.embedded += embedded
        if time.monotonic() - self._printed >= PROGRESS_SECONDS:
            self.show()

    def show(self) -> None:
        elapsed = time.monotonic() - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        share = 100.0 * self.done / self.total if self.total else 100.0
        print(f"reindex {self.pass_name}: {self.done}/{self.total} documents ({share:.0f}%), {rate:.0f}/s, "
              f"{self.embedded} texts embedded", file=self.out, flush=True)
        self._printed = time.monotonic()


@dataclass(frozen=True)
class RebuildReport:
    memories: int
    records: int
    embedded: int
    erased_owners: int


class IndexRebuild:
    def __init__(self, store: DocumentStore, index: VectorIndex, lexicon: Lexicon, embedder: Embedder | None,
                 checkpoint: Checkpoint, projects: Sequence[str], *, batch: int = DEFAULT_BATCH,
                 progress_out: TextIO | None = None) -> None:
        self._store = store
        self._index = index
        self._checkpoint = checkpoint
        self._projects = list(projects)
        self._batch = batch
        self._progress_out = progress_out or sys.stderr
        upkeep = IndexUpkeep(store, index, lexicon, embedder=embedder)
        self._parts: list[Part] = [MemoryPart(index, upkeep),
                                   RecordPart(store, RecordIndex(index, lexicon, embedder))]

    async def check_target(self, target: dict[str, Any]) -> None:
        """A checkpoint is for one target; a target that holds points but has no checkpoint is
        some other index (perhaps the one a gateway serves from): neither is written to."""
        recorded = self._checkpoint.meta("target")
        if recorded is not None:
            if json.loads(recorded) != target:
                raise ConfigError(f"the checkpoint {self._checkpoint.path} is for another index ({recorded}); "
                                  "remove it, or give --checkpoint another file")
            for project in self._projects:
                for name, where in (("memories", project), ("records", index_project(project))):
                    noted = self._checkpoint.built(project, name)
                    if noted and not await self._index.count(where):
                        # Resuming would skip every document the checkpoint says is there.
                        raise ConfigError(f"the checkpoint {self._checkpoint.path} records {noted} {name} of "
                                          f"project {project} but the index holds none (was it removed?): "
                                          "remove the checkpoint to build the index again")
            return
        held = 0
        for project in self._projects:
            held += await self._index.count(project) + await self._index.count(index_project(project))
        if held:
            raise ConfigError(f"the memory index this config names already holds {held} points and was not "
                              "built by reindex: give memory.vectors a new index path (edge.path), qdrant "
                              "collection or redis index and key_prefix, or remove that index")
        self._checkpoint.set_meta("target", json.dumps(target))

    async def run(self) -> RebuildReport:
        """Build (or resume building) the index, then catch up with what changed meanwhile."""
        total = 0
        for project in self._projects:
            for part in self._parts:
                total += await self._store.count(part.collection, project)
        progress = Progress(total, self._progress_out)
        if self._checkpoint.meta("built") is None:
            progress.start("build")
            progress.done = sum(min(self._checkpoint.position(project, part.name), total)
                                for project in self._projects for part in self._parts)
            for project in self._projects:
                for part in self._parts:
                    await self._walk(project, part, progress, catching_up=False)
            progress.show()
            self._checkpoint.set_meta("built", str(time.time()))
        progress.start("catch-up")
        self._checkpoint.forget_seen()  # a document met by the build may be erased since
        erased = 0
        for project in self._projects:
            for part in self._parts:
                await self._walk(project, part, progress, catching_up=True)
                erased += await self._erased_owners(project, part, progress)
        progress.show()
        return RebuildReport(
            memories=sum(self._checkpoint.built(project, "memories") for project in self._projects),
            records=sum(self._checkpoint.built(project, "records") for project in self._projects),
            embedded=progress.embedded, erased_owners=erased)

    async def _walk(self, project: str, part: Part, progress: Progress, *, catching_up: bool) -> None:
        """Every document of the part from the checkpoint's position (the start, catching up),
        a batch at a time, rebuilding those whose fingerprint is not the one built."""
        position = 0 if catching_up else self._checkpoint.position(project, part.name)
        page_size = max(self._batch, READ_PAGE)
        while True:
            page = await self._store.find(part.collection, project, None, limit=page_size, offset=position)
            for start in range(0, len(page), self._batch):
                docs = page[start:start + self._batch]
                position += len(docs)
                embedded = await self._build(project, part, docs, recheck=catching_up,
                                             position=None if catching_up else position)
                progress.advance(len(docs), embedded)
            if len(page) < page_size:
                break

    async def _build(self, project: str, part: Part, docs: list[dict[str, Any]], *, recheck: bool,
                     position: int | None) -> int:
        """Rebuild the points of ``docs`` that changed; returns the texts embedded."""
        ids = [part.doc_id(doc) for doc in docs]
        built = self._checkpoint.fingerprints(project, part.name, ids)
        prints = [await part.fingerprint(project, doc) for doc in docs]
        stale = [(doc, mark) for doc, doc_id, mark in zip(docs, ids, prints) if built.get(doc_id) != mark]
        embedded = 0
        for _ in range(_RECHECKS):
            if not stale:
                break
            embedded += await part.write(project, [doc for doc, _ in stale])
            self._checkpoint.record(project, part.name, [(part.doc_id(doc), part.owner(doc), mark)
                                                         for doc, mark in stale])
            if not recheck:
                break
            stale = await self._changed_since(project, part, stale)
        self._checkpoint.record(project, part.name, [], position=position, seen=ids)
        return embedded

    async def _changed_since(self, project: str, part: Part,
                             written: list[tuple[dict[str, Any], str]]) -> list[tuple[dict[str, Any], str]]:
        """Of the documents just written, those the store holds otherwise now (a gateway wrote
        them meanwhile), as they are now; one gone since is left to the erasure check."""
        changed = []
        for doc, mark in written:
            now = await self._store.get(part.collection, project, part.doc_id(doc))
            if now is not None and (current := await part.fingerprint(project, now)) != mark:
                changed.append((now, current))
        return changed

    async def _erased_owners(self, project: str, part: Part, progress: Progress) -> int:
        """Delete the points of every owner erased since its documents were built (their ids
        are gone from the store), then build that owner's documents as they are now."""
        owners = self._checkpoint.vanished_owners(project, part.name)
        for owner in owners:
            await part.erase_owner(project, owner)
            self._checkpoint.forget_owner(project, part.name, owner)
            docs = await self._store.find(part.collection, project, {part.owner_field: owner})
            for start in range(0, len(docs), self._batch):
                embedded = await self._build(project, part, docs[start:start + self._batch], recheck=True,
                                             position=None)
                progress.advance(0, embedded)
        return len(owners)


async def rebuild(config: GatewayConfig, *, checkpoint_path: Path | None = None, batch: int = DEFAULT_BATCH,
                  progress_out: TextIO | None = None) -> RebuildReport:
    """Open the config's store, embedder and (new) index and rebuild it (see the module docstring)."""
    from gateway import registry
    from gateway.memory.backends import open_vector_index, prepare

    registry.check_names(config)
    memory = config.memory
    embedder: Embedder | None = registry.create("embedder", memory.embedder.provider, memory.embedder,
                                                config.providers)
    # No shared Redis client: the store opens its own from storage.redis.url.
    store: DocumentStore = registry.create("store", config.storage.backend, config.storage, None)
    try:
        await store.ping()
        index = open_vector_index(memory.vectors, embedder.dimensions if embedder else None)
        try:
            await prepare(index)
            checkpoint = Checkpoint(checkpoint_path or default_checkpoint(config))
            try:
                work = IndexRebuild(store, index, Lexicon(contextual=memory.vectors.lexical == "contextual"),
                                    embedder, checkpoint, [project.id for project in config.projects], batch=batch,
                                    progress_out=progress_out)
                await work.check_target(target_of(config))
                return await work.run()
            finally:
                checkpoint.close()
        finally:
            await index.close()
    finally:
        await store.close()
