"""SQLite document store: the embedded default (one file, no service to run).

Why synchronous calls on the event loop: the embedded default is one gateway
process with one writer, WAL mode and ``synchronous=NORMAL`` make a commit a
memory operation plus an append, and every query is an index lookup. Each call
takes tens of microseconds, far less than a hop to a worker thread would cost,
and running statements without awaits in between also makes each multi-statement
write atomic with respect to other requests on the loop.

Why checkpoints run on a thread of their own: a commit appends to the write-ahead
log, and a checkpoint copies the log back into the database file. SQLite's automatic
checkpoint runs inside whichever COMMIT takes the log past 1000 pages and, with
``synchronous=NORMAL``, fsyncs the log and the file there, on the event loop, so every
request waits. Measured with 1,500 ``put_many`` of 8 small documents: p50 0.48 ms but
p99 8.1 ms (1.1 ms with no fsync at all); a benchmark row writing chat history had p99
41.8 ms against p50 2.8 ms. Never checkpointing is no answer: the log grows and every
statement slows (p50 0.8 ms). So one daemon thread per database file, with its own
connection, runs PASSIVE checkpoints (they never block a writer, and sqlite3 releases
the GIL while one runs): every 20 ms while writes keep coming, backing off to every
half second. The loop's connections checkpoint only as a backstop, at 4000 pages
instead of 1000 (see LOOP_CHECKPOINT_FRAMES). The same 1,500 ``put_many`` before and
after, on one machine: p99 6 ms -> 0.7-1.1 ms, calls over 3 ms 24 -> 6, p50 unchanged
(0.2-0.3 ms); with 2 ms of other work between calls, p99 6.3 ms -> 0.6-1.5 ms.

Durability does not change: a commit goes to the log with the same sync setting as
before and survives the process being killed (not a power cut, as before), and readers
find it in the log until it is copied. Only when the copy into the main file happens
moves, and the last connection to close runs one final checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import json
from json.encoder import encode_basestring
import logging
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from collections.abc import Iterable, Iterator, Mapping, Sequence

from gateway.store import codec
from gateway.store.base import (Charge, Charged, Collection, Document, Increment, OrderedRange, OrderedValue,
                                Tally, require_project)

# A row of a few dozen bytes per tally: far less to write than the document it counts for.
_ADD_TO_TALLY = ("INSERT INTO tallies (collection, project_id, doc_id, name, count, last_at) VALUES (?, ?, ?, ?, ?, ?) "
                 "ON CONFLICT (collection, project_id, doc_id, name) DO UPDATE SET count = count + excluded.count, "
                 "last_at = max(last_at, excluded.last_at)")

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
-- Entries of deferred indexes (Collection.deferred) not yet filed into doc_index. Appended in seq
-- order, a commit's rows share a page or two, where in doc_index each distinct value takes a page of
-- its own; they move there in bulk (_file_deferred), and before any read of such an index.
CREATE TABLE IF NOT EXISTS doc_index_deferred (
    seq         INTEGER NOT NULL,
    collection  TEXT NOT NULL,
    project_id  TEXT NOT NULL,
    index_key   TEXT NOT NULL,
    PRIMARY KEY (seq, index_key)
) WITHOUT ROWID;
-- Ordered indexes (Collection.ordered). `value` has no declared type on purpose: no affinity, so
-- numbers stay numbers and text stays text, and SQLite orders every number before every string
-- and strings by BINARY collation, i.e. by their UTF-8 bytes (as Redis's lex ranges do).
CREATE TABLE IF NOT EXISTS doc_order (
    collection  TEXT NOT NULL,
    project_id  TEXT NOT NULL,
    index_name  TEXT NOT NULL,
    value       NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (collection, project_id, index_name, value, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS doc_order_by_seq ON doc_order (seq);
CREATE TABLE IF NOT EXISTS tallies (
    collection  TEXT NOT NULL,
    project_id  TEXT NOT NULL,
    doc_id      TEXT NOT NULL,
    name        TEXT NOT NULL,
    count       INTEGER NOT NULL,
    last_at     REAL NOT NULL,
    PRIMARY KEY (collection, project_id, doc_id, name)
) WITHOUT ROWID;
-- Counters for DocumentStore.charge (usage limits): one row per project and window counter.
CREATE TABLE IF NOT EXISTS counters (
    project_id  TEXT NOT NULL,
    name        TEXT NOT NULL,
    count       INTEGER NOT NULL,
    expires_at  REAL NOT NULL,
    PRIMARY KEY (project_id, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS counters_by_expiry ON counters (expires_at);
"""

# The tables of a document's index entries (each row names its document's seq): a deleted
# document's rows go from each.
_ENTRY_TABLES = ("doc_index", "doc_index_deferred", "doc_order")

# Index keys one statement looks up at most (SQLite caps a statement's parameters; tallies and
# find_each go in chunks or one by one past it).
_MAX_KEYS_PER_STATEMENT = 500

# How often (at most) writes also sweep expired rows out of the file.
_SWEEP_INTERVAL_SECONDS = 60.0
# Deferred index entries are filed into doc_index once this many wait (a few milliseconds of
# work, once per ~128 turns that recalled eight memories each).
FILE_DEFERRED_ROWS = 1024


@functools.lru_cache(maxsize=4096)  # the same subjects and chats come back on every turn
def _index_key(fields: tuple[str, ...], values: tuple[str, ...]) -> str:
    # \x1f (unit separator) cannot appear in field names and is escaped out of values by JSON.
    if all(type(value) is str for value in values):
        # What json.dumps(values, ensure_ascii=False) writes, from its own string encoder: the
        # keys in the file stay the same, made ~6x faster (json.dumps builds an encoder per call
        # when given an option) for the keys the cache has not seen (a new memory's text key).
        return "\x1f".join(fields) + "=[" + ", ".join(map(encode_basestring, values)) + "]"
    return "\x1f".join(fields) + "=" + json.dumps(values, ensure_ascii=False)


def _where_key(collection: Collection, where: Mapping[str, str]) -> tuple[tuple[str, ...], str]:
    """(the declared index that answers ``where``, the index key of its values)."""
    fields = collection.index_for(where)
    return fields, _index_key(fields, tuple(where[f] for f in fields))


# An unbounded side of an ordered range still gets a bound: the end of its own kind. SQLite
# orders numbers < text < blobs, so a numeric range runs from -inf to +inf and a text range from
# '' up to (not including) the empty blob: it never meets values of the other kind, and the
# query is always one range on the primary key.
_NUMBERS_FROM, _NUMBERS_TO = float("-inf"), float("inf")
_TEXT_FROM, _TEXT_TO = "", b""


@functools.cache  # a handful of shapes, each a fixed statement
def ordered_query(low_inclusive: bool, high_inclusive: bool, descending: bool = False, *, count: bool = False) -> str:
    """The statement find_ordered runs (``count``: the one count_ordered runs).

    Parameters: collection, project, index name, low, high, now, then (find only) limit, offset.
    A range on doc_order's primary key, read in key order (value then seq: ties in insertion
    order) or backwards, joined to documents by rowid for the body: SQLite stops at the limit
    and never sorts, and expired documents are skipped on the way."""
    order = "DESC" if descending else "ASC"
    return (f"SELECT {'COUNT(*)' if count else 'd.body'} FROM doc_order o JOIN documents d ON d.seq = o.seq "
            "WHERE o.collection = ? AND o.project_id = ? AND o.index_name = ? "
            f"AND o.value {'>=' if low_inclusive else '>'} ? AND o.value {'<=' if high_inclusive else '<'} ? "
            "AND (d.expires_at IS NULL OR d.expires_at > ?)"
            + ("" if count else f" ORDER BY o.value {order}, o.seq {order} LIMIT ? OFFSET ?"))


_Bound = float | str | bytes


def ordered_bounds(where: OrderedRange) -> tuple[_Bound, bool, _Bound, bool]:
    """(low, low inclusive, high, high inclusive) for ``ordered_query``: unbounded sides at the ends of the kind."""
    low: _Bound
    high: _Bound
    if where.numeric:
        low, low_inclusive, high, high_inclusive = _NUMBERS_FROM, True, _NUMBERS_TO, True
    else:
        low, low_inclusive, high, high_inclusive = _TEXT_FROM, True, _TEXT_TO, False
    if where.low is not None:
        low, low_inclusive = where.low, where.low_inclusive
    if where.high is not None:
        high, high_inclusive = where.high, where.high_inclusive
    return low, low_inclusive, high, high_inclusive


log = logging.getLogger("gateway.store")

CHECKPOINT_THREAD_NAME = "sqlite-checkpointer"
# The log starts over only at a write that finds every frame in it copied, so it stays
# short only if a round often finishes before the next write. While a round finds this
# many frames (1 MB) the next one comes soon: there is then little to copy and a round
# fits between two writes. With fewer the interval doubles, up to the idle one.
_BUSY_LOG_FRAMES = 250
_BUSY_INTERVAL_SECONDS = 0.02
_IDLE_INTERVAL_SECONDS = 0.5
# If writes never pause for as long as a round takes, the loop's own connection
# checkpoints once the log reaches this many frames (SQLite's automatic checkpoint,
# PASSIVE): the thread has copied most of the log by then, and the log starts over.
# Without it the log grew to 96 MiB in the measurement above, and would go on growing
# for as long as the writes did. (The thread cannot start the log over itself: that
# takes a checkpoint holding the write lock, and a loop transaction that read before
# writing would then fail at once with "database is locked", as SQLite does not wait
# to turn a read into a write.)
LOOP_CHECKPOINT_FRAMES = 4000
# Closing waits this long for the final checkpoint; a thread still busy after it is a
# daemon and closes its own connection when done.
_CHECKPOINT_STOP_SECONDS = 10.0


class _Checkpointer:
    """Copies one database file's write-ahead log into it, on a daemon thread with its own
    connection, for as long as any connection from ``connect`` to the file is open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.holders = 0
        # Held for each checkpoint: another checkpoint started meanwhile (scrub's) would
        # find this one under way, copy nothing and report only "busy".
        self.running = threading.Lock()
        self._stopping = threading.Event()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # What a checkpoint fsyncs (the log before copying it, the file after) follows this.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._thread = threading.Thread(target=self._run, name=f"{CHECKPOINT_THREAD_NAME} {path}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            # Busy at first: a process often starts with a burst of writes (and doubles back if not).
            interval = _BUSY_INTERVAL_SECONDS
            while not self._stopping.wait(interval):
                busy = self._checkpoint() >= _BUSY_LOG_FRAMES
                interval = _BUSY_INTERVAL_SECONDS if busy else min(2 * interval, _IDLE_INTERVAL_SECONDS)
            self._checkpoint()
        finally:
            self._db.close()

    def _checkpoint(self) -> int:
        """The number of frames in the log (-1 when the checkpoint could not run)."""
        # With no new frames in the log a PASSIVE checkpoint reads the log's index and stops:
        # no I/O on the files, so there is nothing to gain from checking first.
        with self.running:
            try:
                [(_busy, frames, _copied)] = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:
                # The log keeps the commits and the next round tries again.
                log.warning("checkpoint of %s failed", self.path, exc_info=True)
                return -1
        return int(frames)

    def stop(self) -> None:
        self._stopping.set()
        # The last holder may be a connection collected by a garbage-collection pass that
        # happened to run on this very thread; it then finishes on its own.
        if threading.current_thread() is not self._thread:
            self._thread.join(_CHECKPOINT_STOP_SECONDS)


_checkpointers: dict[Path, _Checkpointer] = {}
_checkpointers_lock = threading.Lock()


def _hold_checkpointer(key: Path) -> _Checkpointer:
    with _checkpointers_lock:
        checkpointer = _checkpointers.get(key)
        if checkpointer is None:
            checkpointer = _checkpointers[key] = _Checkpointer(key)
        checkpointer.holders += 1
        return checkpointer


def _release_checkpointer(checkpointer: _Checkpointer) -> None:
    with _checkpointers_lock:
        checkpointer.holders -= 1
        if checkpointer.holders:
            return
        del _checkpointers[checkpointer.path]
    checkpointer.stop()


# A connection is shared by the components that open its file on one thread: (file, thread id).
_OpenKey = tuple[Path, int]


class _OpenFile:
    """One database file as one thread of this process uses it: one connection, shared by every
    component that opens the file there (the document store, the job queue), and a hold on the
    file's checkpointer (one per file, whatever the threads)."""

    def __init__(self, path: str, key: _OpenKey | None) -> None:
        self.key = key
        self.holders = 0
        if key is not None:
            key[0].parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=OFF")
        self.db.execute("PRAGMA secure_delete=ON")
        self.db.execute(f"PRAGMA wal_autocheckpoint={LOOP_CHECKPOINT_FRAMES}")
        self.checkpointer = _hold_checkpointer(key[0]) if key is not None else None

    def close(self) -> None:
        self.db.close()  # the file's last connection copies the log into it
        if self.checkpointer is not None:
            _release_checkpointer(self.checkpointer)


_open_files: dict[_OpenKey, _OpenFile] = {}
_open_files_lock = threading.Lock()


def _open(path: str) -> _OpenFile:
    with _open_files_lock:
        if path in (":memory:", ""):
            # Each such connection is a database of its own: nothing to share, nothing on disk to copy.
            opened = _OpenFile(path, None)
        else:
            key = (Path(path).resolve(), threading.get_ident())
            if key not in _open_files:
                _open_files[key] = _OpenFile(path, key)
            opened = _open_files[key]
        opened.holders += 1
    return opened


def _let_go(opened: _OpenFile) -> None:
    with _open_files_lock:
        opened.holders -= 1
        if opened.holders:
            return
        if opened.key is not None and _open_files.get(opened.key) is opened:
            del _open_files[opened.key]
    opened.close()


class GatewayConnection:
    """A component's hold on its database file's loop connection (``connect``).

    Why one connection per file, shared: SQLite drops a connection's whole page cache when it
    begins a transaction after *another* connection has committed to the file. With the store
    and the job queue on connections of their own, every turn's writes alternated between the
    two (history, the learn job, its claim, what it learned, its completion) and each switch
    read the pages again. In 5 s of strace on the overhead benchmark's (g) there were 1.08
    ``pread`` calls per ``pwrite`` with two connections and 0.28 with one (the checkpointer's
    reads); in process, a loop of history reads and writes and learn jobs took ~10% less CPU.
    Sharing is safe because every transaction runs without an await inside it (module
    docstring), so the statements of two components on one event loop never interleave within
    one. Components opened on different threads (several gateways in one process, as the tests
    run them, each on its own loop) get connections of their own.

    ``execute``, ``executemany`` and ``executescript`` are the connection's own. ``close``
    (or the hold being collected unclosed) lets go; the last holder closes the connection and
    stops the checkpointer."""

    def __init__(self, opened: _OpenFile) -> None:
        self._opened = opened
        self.execute = opened.db.execute
        self.executemany = opened.db.executemany
        self.executescript = opened.db.executescript
        # A finalizer runs at most once, whichever comes first: close or collection.
        self._let_go = weakref.finalize(self, _let_go, opened)

    def close(self) -> None:
        self._let_go()

    @contextlib.contextmanager
    def checkpoints_held(self) -> Iterator[None]:
        """No background checkpoint of this file runs meanwhile (waits for one under way)."""
        if self._opened.checkpointer is None:
            yield
            return
        with self._opened.checkpointer.running:
            yield


def connect(path: str) -> GatewayConnection:
    """A hold on the gateway's SQLite file as every embedded component uses it: one connection
    per file and thread (``GatewayConnection``), autocommit, WAL (a commit survives the process
    being killed), NORMAL sync, and secure_delete: deleted content is overwritten with zeros,
    not left in free pages (erasure must mean gone from the file too; see
    SqliteDocumentStore.scrub). It leaves checkpoints to the file's checkpointer thread but for
    a backstop (see the module docstring)."""
    return GatewayConnection(_open(path))


class SqliteDocumentStore:
    def __init__(self, path: str) -> None:
        self._db = connect(path)
        self._db.executescript(_SCHEMA)
        self._next_sweep = 0.0
        # Deferred index entries written through this store and not filed yet (as far as it knows:
        # only a trigger for filing them; reads check the table itself).
        (self._deferred_rows,) = self._db.execute("SELECT COUNT(*) FROM doc_index_deferred").fetchone()

    # -- writes ---------------------------------------------------------------------------

    def _put_one(self, collection: Collection, project_id: str, doc_id: str, doc: Document,
                 expires_at: float | None) -> None:
        ordered = collection.ordered_entries(doc)  # raises before anything is written
        row = (collection.name, project_id, doc_id, codec.encode(doc), expires_at)
        index_keys: list[str] = []
        deferred_keys: list[str] = []
        for fields, values in collection.index_entries(doc):
            (deferred_keys if fields in collection.deferred else index_keys).append(_index_key(fields, values))
        # Most writes store a new document (a message, a recall, a memory under a fresh id): it is
        # inserted, and has no index rows to clear (its seq is AUTOINCREMENT: never one an earlier,
        # deleted document had).
        inserted = self._db.execute(
            "INSERT INTO documents (collection, project_id, doc_id, body, expires_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (collection, project_id, doc_id) DO NOTHING RETURNING seq", row).fetchone()
        if inserted is None:
            (seq,) = self._db.execute(
                "UPDATE documents SET body = ?, expires_at = ? WHERE collection = ? AND project_id = ? AND doc_id = ? "
                "RETURNING seq", row[3:] + row[:3]).fetchone()
            if collection.deferred:  # (rare) its entries not filed yet are filed first, then compared as any
                self._file_deferred(seq)
            self._replace_index_rows(collection, project_id, seq, index_keys + deferred_keys, ordered)
            return
        (seq,) = inserted
        self._db.executemany("INSERT INTO doc_index (collection, project_id, index_key, seq) VALUES (?, ?, ?, ?)",
                             [(collection.name, project_id, key, seq) for key in index_keys])
        if deferred_keys:
            self._db.executemany(
                "INSERT INTO doc_index_deferred (seq, collection, project_id, index_key) VALUES (?, ?, ?, ?)",
                [(seq, collection.name, project_id, key) for key in deferred_keys])
            self._deferred_rows += len(deferred_keys)
        if ordered:
            self._db.executemany(
                "INSERT INTO doc_order (collection, project_id, index_name, value, seq) VALUES (?, ?, ?, ?, ?)",
                [(collection.name, project_id, name, value, seq) for name, value in ordered])

    def _replace_index_rows(self, collection: Collection, project_id: str, seq: int, index_keys: list[str],
                            ordered: list[tuple[str, OrderedValue]]) -> None:
        """An updated document's index rows: only those that changed are deleted or inserted.

        Why not delete them all and insert the new ones: most updates change no indexed value (a
        chat's last time, a memory's text or counts), and a row deleted and inserted again still
        dirties its B-tree pages, each written to the log at commit (a chat's update was ten
        pages per turn that way, two now)."""
        names = (collection.name, project_id)
        old_keys = {key for (key,) in self._db.execute("SELECT index_key FROM doc_index WHERE seq = ?", (seq,))}
        new_keys = set(index_keys)
        self._db.executemany("DELETE FROM doc_index WHERE collection = ? AND project_id = ? AND index_key = ? "
                             "AND seq = ?", [(*names, key, seq) for key in old_keys - new_keys])
        self._db.executemany("INSERT INTO doc_index (collection, project_id, index_key, seq) VALUES (?, ?, ?, ?)",
                             [(*names, key, seq) for key in new_keys - old_keys])
        old_order = set(self._db.execute("SELECT index_name, value FROM doc_order WHERE seq = ?", (seq,)))
        new_order = set(ordered)
        if old_order or new_order:
            self._db.executemany("DELETE FROM doc_order WHERE collection = ? AND project_id = ? "
                                 "AND index_name = ? AND value = ? AND seq = ?",
                                 [(*names, *entry, seq) for entry in old_order - new_order])
            self._db.executemany("INSERT INTO doc_order (collection, project_id, index_name, value, seq) "
                                 "VALUES (?, ?, ?, ?, ?)", [(*names, *entry, seq) for entry in new_order - old_order])

    def _file_deferred(self, seq: int | None = None) -> None:
        """Move deferred index entries into doc_index (only document ``seq``'s, given one), in key
        order: the entries of one value go onto its page together. Inside the caller's transaction."""
        which, args = ("WHERE seq = ?", (seq,)) if seq is not None else ("", ())
        # OR IGNORE: filing must never fail a write over an entry already in doc_index (none should
        # be: an entry leaves the deferred table in the transaction that files it).
        self._db.execute("INSERT OR IGNORE INTO doc_index (collection, project_id, index_key, seq) SELECT "
                         f"collection, project_id, index_key, seq FROM doc_index_deferred {which} "
                         "ORDER BY collection, project_id, index_key, seq", args)
        self._db.execute(f"DELETE FROM doc_index_deferred {which}", args)

    def _file_all_deferred(self) -> None:
        """File every deferred entry, in a transaction of its own."""
        self._db.execute("BEGIN")
        try:
            self._file_deferred()
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._deferred_rows = 0

    def _before_reading(self, collection: Collection, fields: tuple[str, ...]) -> None:
        """A read through a deferred index sees every entry: those waiting are filed first."""
        if fields in collection.deferred and self._db.execute(
                "SELECT EXISTS (SELECT 1 FROM doc_index_deferred)").fetchone()[0]:
            self._file_all_deferred()

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
        self._after_writing()

    def _after_writing(self) -> None:
        """What every document write does once committed: now and then, sweep expired rows out of
        the file, and file deferred index entries."""
        self._maybe_sweep()
        self._maybe_file_deferred()

    def _maybe_file_deferred(self) -> None:
        if self._deferred_rows >= FILE_DEFERRED_ROWS:
            self._file_all_deferred()

    async def put_many(self, collection: Collection, project_id: str, docs: Iterable[tuple[str, Document]],
                       *, ttl_seconds: float | None = None) -> None:
        expires_at = time.time() + ttl_seconds if ttl_seconds is not None else None
        self._put_and_increment(collection, project_id, docs, expires_at, collection, ())

    async def delete(self, collection: Collection, project_id: str, doc_id: str) -> bool:
        require_project(project_id)
        self._db.execute("BEGIN")
        try:
            row = self._db.execute(
                "DELETE FROM documents WHERE collection = ? AND project_id = ? AND doc_id = ? "
                "RETURNING seq, expires_at",
                (collection.name, project_id, doc_id),
            ).fetchone()
            if row is not None:
                for table in _ENTRY_TABLES:
                    self._db.execute(f"DELETE FROM {table} WHERE seq = ?", (row[0],))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return row is not None and (row[1] is None or row[1] > time.time())

    async def delete_where(self, collection: Collection, project_id: str, where: Mapping[str, str]) -> int:
        require_project(project_id)
        if not where:
            raise ValueError("delete_where needs a filter")
        fields, key = _where_key(collection, where)
        self._before_reading(collection, fields)
        self._db.execute("BEGIN")
        try:
            seqs = [row[0] for row in self._db.execute(
                "SELECT seq FROM doc_index WHERE collection = ? AND project_id = ? AND index_key = ?",
                (collection.name, project_id, key))]
            self._db.executemany("DELETE FROM documents WHERE seq = ?", [(s,) for s in seqs])
            for table in _ENTRY_TABLES:
                self._db.executemany(f"DELETE FROM {table} WHERE seq = ?", [(s,) for s in seqs])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return len(seqs)

    async def increment(self, collection: Collection, project_id: str, increments: Iterable[Increment]) -> None:
        await self.put_many_and_increment(collection, project_id, (), collection, increments)

    async def put_many_and_increment(self, collection: Collection, project_id: str,
                                     docs: Iterable[tuple[str, Document]], tallied: Collection,
                                     increments: Iterable[Increment]) -> None:
        self._put_and_increment(collection, project_id, docs, None, tallied, increments)

    def _put_and_increment(self, collection: Collection, project_id: str, docs: Iterable[tuple[str, Document]],
                           expires_at: float | None, tallied: Collection, increments: Iterable[Increment]) -> None:
        require_project(project_id)
        docs = list(docs)
        rows = [(tallied.name, project_id, i.doc_id, i.name, i.by, i.at) for i in increments]
        if not docs and not rows:
            return
        if not docs and len(rows) == 1:
            # One statement is atomic on its own (autocommit): no BEGIN and COMMIT to send (a
            # reinforcement, a change count).
            self._db.execute(_ADD_TO_TALLY, rows[0])
            self._after_writing()
            return
        # One transaction, one commit: each commit writes every page it touched into the WAL.
        self._db.execute("BEGIN")
        try:
            for doc_id, doc in docs:
                self._put_one(collection, project_id, doc_id, doc, expires_at)
            self._db.executemany(_ADD_TO_TALLY, rows)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._after_writing()

    async def tallies(self, collection: Collection, project_id: str,
                      doc_ids: Iterable[str]) -> dict[str, dict[str, Tally]]:
        require_project(project_id)
        ids = list(dict.fromkeys(doc_ids))
        found: dict[str, dict[str, Tally]] = {}
        # In chunks: SQLite caps the number of parameters of one statement.
        for start in range(0, len(ids), _MAX_KEYS_PER_STATEMENT):
            chunk = ids[start:start + _MAX_KEYS_PER_STATEMENT]
            rows = self._db.execute(
                "SELECT doc_id, name, count, last_at FROM tallies WHERE collection = ? AND project_id = ? "
                f"AND doc_id IN ({', '.join('?' * len(chunk))})", (collection.name, project_id, *chunk))
            for doc_id, name, count, last_at in rows:
                found.setdefault(doc_id, {})[name] = Tally(count, last_at)
        return found

    async def delete_tallies(self, collection: Collection, project_id: str, doc_ids: Iterable[str]) -> None:
        require_project(project_id)
        self._db.execute("BEGIN")
        try:
            self._db.executemany("DELETE FROM tallies WHERE collection = ? AND project_id = ? AND doc_id = ?",
                                 [(collection.name, project_id, doc_id) for doc_id in doc_ids])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    async def charge(self, project_id: str, charges: Sequence[Charge]) -> Charged:
        require_project(project_id)
        if not charges:
            return Charged(None, ())
        now = time.time()
        # IMMEDIATE: the write lock is taken before the counters are read, so the read and the
        # write are one step for every connection to the file, other processes' included (a
        # deferred transaction could read, then find another writer got in first).
        self._db.execute("BEGIN IMMEDIATE")
        try:
            counts = []
            for charge in charges:
                row = self._db.execute("SELECT count, expires_at FROM counters WHERE project_id = ? AND name = ?",
                                       (project_id, charge.counter)).fetchone()
                counts.append(row[0] if row is not None and row[1] > now else 0)
            refused = next((i for i, (charge, count) in enumerate(zip(charges, counts))
                            if charge.limit is not None and count + max(charge.by, 1) > charge.limit), None)
            if refused is None:
                self._db.executemany(
                    "INSERT INTO counters (project_id, name, count, expires_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (project_id, name) DO UPDATE SET "
                    "count = CASE WHEN expires_at > ? THEN count ELSE 0 END + excluded.count, "
                    "expires_at = excluded.expires_at",
                    [(project_id, c.counter, c.by, c.expires_at, now) for c in charges])
                counts = [count + charge.by for count, charge in zip(counts, charges)]
            self._db.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return Charged(refused, tuple(counts))

    def _maybe_sweep(self) -> None:
        now = time.time()
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_INTERVAL_SECONDS
        self._db.execute("BEGIN")
        for table in _ENTRY_TABLES:
            self._db.execute(f"DELETE FROM {table} WHERE seq IN "
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
        return codec.decode(row[0]) if row else None

    def _select(self, what: str, collection: Collection, project_id: str, where: Mapping[str, str] | None,
                tail: str = "", tail_args: tuple = ()) -> list[tuple]:
        now = time.time()
        if where:
            fields, key = _where_key(collection, where)
            self._before_reading(collection, fields)
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
        return [codec.decode(body) for (body,) in rows]

    async def find_each(self, project_id: str,
                        queries: Sequence[tuple[Collection, Mapping[str, str]]]) -> list[list[Document]]:
        # One statement for them all (a turn reads the scoped prompts' and memory policies' three
        # levels each: six finds; one statement costs ~10 us in process, matches or not, and
        # several times that on a busy loop), and no tasks to gather on the loop.
        require_project(project_id)
        if not queries:
            return []
        if not all(where for _, where in queries) or len(queries) > _MAX_KEYS_PER_STATEMENT:
            # (rare: an unfiltered read, a very long list) each on its own
            return [await self.find(collection, project_id, where) for collection, where in queries]
        asked = [(collection, *_where_key(collection, where)) for collection, where in queries]
        wanted = [(collection.name, key) for collection, _, key in asked]
        if len(set(wanted)) < len(wanted):  # (rare: a query twice) each on its own
            return [await self.find(collection, project_id, where) for collection, where in queries]
        for collection, fields in {(collection, fields) for collection, fields, _ in asked}:
            self._before_reading(collection, fields)
        names = list(dict.fromkeys(name for name, _ in wanted))
        keys = list(dict.fromkeys(key for _, key in wanted))
        found: dict[tuple[str, str], list[Document]] = {pair: [] for pair in wanted}
        # Every collection with every key: a pair nobody asked for (the same key in another of
        # the collections) is read and left out.
        rows = self._db.execute(
            "SELECT i.collection, i.index_key, d.body FROM doc_index i JOIN documents d ON d.seq = i.seq "
            f"WHERE i.collection IN ({', '.join('?' * len(names))}) AND i.project_id = ? "
            f"AND i.index_key IN ({', '.join('?' * len(keys))}) "
            "AND (d.expires_at IS NULL OR d.expires_at > ?) ORDER BY i.seq",
            (*names, project_id, *keys, time.time()))
        for name, key, body in rows:
            matches = found.get((name, key))
            if matches is not None:
                matches.append(codec.decode(body))
        return [found[pair] for pair in wanted]

    async def count(self, collection: Collection, project_id: str, where: Mapping[str, str] | None = None) -> int:
        require_project(project_id)
        return self._select("COUNT(*)", collection, project_id, where)[0][0]

    async def find_ordered(self, collection: Collection, project_id: str, where: OrderedRange, *,
                           descending: bool = False, limit: int | None = None, offset: int = 0) -> list[Document]:
        require_project(project_id)
        low, low_inclusive, high, high_inclusive = ordered_bounds(where)
        sql = ordered_query(low_inclusive, high_inclusive, descending)
        rows = self._db.execute(sql, (collection.name, project_id, where.index, low, high, time.time(),
                                      -1 if limit is None else limit, offset))
        return [codec.decode(body) for (body,) in rows]

    async def count_ordered(self, collection: Collection, project_id: str, where: OrderedRange) -> int:
        require_project(project_id)
        low, low_inclusive, high, high_inclusive = ordered_bounds(where)
        sql = ordered_query(low_inclusive, high_inclusive, count=True)
        return self._db.execute(sql, (collection.name, project_id, where.index, low, high, time.time())).fetchone()[0]

    async def scrub(self) -> None:
        # secure_delete (set by connect) zeroes what a delete frees in the database file, but
        # the write-ahead log still holds the pages as they were before: copy it back into
        # the database and truncate it to nothing. Not while the checkpointer thread copies:
        # this checkpoint would then copy nothing, truncate nothing and only report "busy".
        with self._db.checkpoints_held():
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def ping(self) -> None:
        self._db.execute("SELECT 1")

    async def close(self) -> None:
        self._db.close()
