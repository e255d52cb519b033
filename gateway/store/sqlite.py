"""SQLite document store: the embedded default (one file, no service to run).

Why synchronous calls on the event loop: the embedded default is one gateway
process with one writer, WAL mode and ``synchronous=NORMAL`` make a commit a
memory operation plus an append, and every query is an index lookup. Each call
takes tens of microseconds, far less than a hop to a worker thread would cost,
and running statements without awaits in between also makes each multi-statement
write atomic with respect to other requests on the loop.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from collections.abc import Iterable, Mapping

from gateway.store.base import Collection, Document, require_project

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    collection  TEXT NOT NULL,
    project_id  TEXT NOT NULL,
    doc_id      TEXT NOT NULL,
    body        TEXT NOT NULL,
    expires_at  REAL,
    UNIQUE (collection, project_id, doc_id)
);
CREATE INDEX IF NOT EXISTS documents_by_order ON documents (collection, project_id, seq);
CREATE INDEX IF NOT EXISTS documents_by_expiry ON documents (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS doc_index (
    collection  TEXT NOT NULL,
    project_id  TEXT NOT NULL,
    index_key   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (collection, project_id, index_key, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS doc_index_by_seq ON doc_index (seq);
"""

# How often (at most) writes also sweep expired rows out of the file.
_SWEEP_INTERVAL_SECONDS = 60.0


def _index_key(fields: tuple[str, ...], values: tuple[str, ...]) -> str:
    # \x1f (unit separator) cannot appear in field names and is escaped out of values by JSON.
    return "\x1f".join(fields) + "=" + json.dumps(values, ensure_ascii=False)


def connect(path: str) -> sqlite3.Connection:
    """A connection to the gateway's SQLite file as every embedded component uses it:
    autocommit, WAL (a commit survives the process being killed), NORMAL sync, and
    secure_delete: deleted content is overwritten with zeros, not left in free pages
    (erasure must mean gone from the file too; see SqliteDocumentStore.scrub)."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=OFF")
    db.execute("PRAGMA secure_delete=ON")
    return db


class SqliteDocumentStore:
    def __init__(self, path: str) -> None:
        self._db = connect(path)
        self._db.executescript(_SCHEMA)
        self._next_sweep = 0.0

    # -- writes ---------------------------------------------------------------------------

    def _put_one(self, collection: Collection, project_id: str, doc_id: str, doc: Document,
                 expires_at: float | None) -> None:
        (seq,) = self._db.execute(
            "INSERT INTO documents (collection, project_id, doc_id, body, expires_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (collection, project_id, doc_id) DO UPDATE SET body = excluded.body, "
            "expires_at = excluded.expires_at RETURNING seq",
            (collection.name, project_id, doc_id, json.dumps(doc, ensure_ascii=False), expires_at),
        ).fetchone()
        self._db.execute("DELETE FROM doc_index WHERE seq = ?", (seq,))
        self._db.executemany(
            "INSERT INTO doc_index (collection, project_id, index_key, seq) VALUES (?, ?, ?, ?)",
            [(collection.name, project_id, _index_key(f, v), seq) for f, v in collection.index_entries(doc)],
        )

    async def put(self, collection: Collection, project_id: str, doc_id: str, doc: Document,
                  *, ttl_seconds: float | None = None) -> None:
        require_project(project_id)
        expires_at = time.time() + ttl_seconds if ttl_seconds is not None else None
        self._db.execute("BEGIN")
        try:
            self._put_one(collection, project_id, doc_id, doc, expires_at)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._maybe_sweep()

    async def put_many(self, collection: Collection, project_id: str, docs: Iterable[tuple[str, Document]]) -> None:
        require_project(project_id)
        self._db.execute("BEGIN")
        try:
            for doc_id, doc in docs:
                self._put_one(collection, project_id, doc_id, doc, None)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    async def delete(self, collection: Collection, project_id: str, doc_id: str) -> bool:
        require_project(project_id)
        row = self._db.execute(
            "DELETE FROM documents WHERE collection = ? AND project_id = ? AND doc_id = ? "
            "RETURNING seq, expires_at",
            (collection.name, project_id, doc_id),
        ).fetchone()
        if row is None:
            return False
        self._db.execute("DELETE FROM doc_index WHERE seq = ?", (row[0],))
        return row[1] is None or row[1] > time.time()

    async def delete_where(self, collection: Collection, project_id: str, where: Mapping[str, str]) -> int:
        require_project(project_id)
        if not where:
            raise ValueError("delete_where needs a filter")
        fields = collection.index_for(where)
        key = _index_key(fields, tuple(where[f] for f in fields))
        self._db.execute("BEGIN")
        try:
            seqs = [row[0] for row in self._db.execute(
                "SELECT seq FROM doc_index WHERE collection = ? AND project_id = ? AND index_key = ?",
                (collection.name, project_id, key))]
            self._db.executemany("DELETE FROM documents WHERE seq = ?", [(s,) for s in seqs])
            self._db.executemany("DELETE FROM doc_index WHERE seq = ?", [(s,) for s in seqs])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return len(seqs)

    def _maybe_sweep(self) -> None:
        now = time.time()
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_INTERVAL_SECONDS
        self._db.execute("BEGIN")
        self._db.execute("DELETE FROM doc_index WHERE seq IN "
                         "(SELECT seq FROM documents WHERE expires_at IS NOT NULL AND expires_at <= ?)", (now,))
        self._db.execute("DELETE FROM documents WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
        self._db.execute("COMMIT")

    # -- reads ----------------------------------------------------------------------------

    async def get(self, collection: Collection, project_id: str, doc_id: str) -> Document | None:
        require_project(project_id)
        row = self._db.execute(
            "SELECT body FROM documents WHERE collection = ? AND project_id = ? AND doc_id = ? "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (collection.name, project_id, doc_id, time.time()),
        ).fetchone()
        return json.loads(row[0]) if row else None

    def _select(self, what: str, collection: Collection, project_id: str, where: Mapping[str, str] | None,
                tail: str = "", tail_args: tuple = ()) -> list[tuple]:
        now = time.time()
        if where:
            fields = collection.index_for(where)
            key = _index_key(fields, tuple(where[f] for f in fields))
            sql = (f"SELECT {what} FROM doc_index i JOIN documents d ON d.seq = i.seq "
                   "WHERE i.collection = ? AND i.project_id = ? AND i.index_key = ? "
                   "AND (d.expires_at IS NULL OR d.expires_at > ?)" + tail)
            args: tuple = (collection.name, project_id, key, now)
        else:
            sql = (f"SELECT {what} FROM documents d WHERE d.collection = ? AND d.project_id = ? "
                   "AND (d.expires_at IS NULL OR d.expires_at > ?)" + tail)
            args = (collection.name, project_id, now)
        return self._db.execute(sql, args + tail_args).fetchall()

    async def find(self, collection: Collection, project_id: str, where: Mapping[str, str] | None = None,
                   *, limit: int | None = None, offset: int = 0, newest_first: bool = False) -> list[Document]:
        require_project(project_id)
        # Filtered, order by the index row's seq (the same number): SQLite then reads the
        # index in order and stops at the limit. Ordered by d.seq it sorted every match first,
        # reading all their bodies, so "the newest one" cost as much as the whole list.
        column = "i.seq" if where else "d.seq"
        order = "DESC" if newest_first else "ASC"
        rows = self._select("d.body", collection, project_id, where,
                            f" ORDER BY {column} {order} LIMIT ? OFFSET ?", (-1 if limit is None else limit, offset))
        return [json.loads(body) for (body,) in rows]

    async def count(self, collection: Collection, project_id: str, where: Mapping[str, str] | None = None) -> int:
        require_project(project_id)
        return self._select("COUNT(*)", collection, project_id, where)[0][0]

    async def scrub(self) -> None:
        # secure_delete (set by connect) zeroes what a delete frees in the database file, but
        # the write-ahead log still holds the pages as they were before: copy it back into
        # the database and truncate it to nothing.
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def ping(self) -> None:
        self._db.execute("SELECT 1")

    async def close(self) -> None:
        self._db.close()
