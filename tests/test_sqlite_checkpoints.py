"""SQLite checkpoints run on a thread of their own rather than inside a request's commit on the loop.

What a user would notice: writes land in the database file without the loop's help, the
thread goes away when the store and the queue close, erasure still leaves an empty log, and
nothing committed is lost to a close or to the process being killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import warnings
from pathlib import Path

from gateway.jobs.sqlite_queue import SqliteJobQueue
from gateway.store.base import Collection
from gateway.store.sqlite import CHECKPOINT_THREAD_NAME, LOOP_CHECKPOINT_FRAMES, SqliteDocumentStore, connect
from tests.conftest import wait_until

NOTES = Collection("notes", indexes=(("subject_id",),))
REPO = Path(__file__).resolve().parents[1]


def checkpointers(db: Path) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"{CHECKPOINT_THREAD_NAME} {db.resolve()}"]


def batch(i: int) -> list[tuple[str, dict]]:
    return [(f"d{i}-{j}", {"subject_id": f"s{i % 5}", "text": f"note {i}/{j} " + "x" * 100}) for j in range(8)]


def documents_in_the_file_alone(db: Path, scratch: Path) -> int:
    """How many documents the database file holds by itself, without its write-ahead log."""
    shutil.copyfile(db, scratch)
    try:
        with contextlib.closing(sqlite3.connect(f"file:{scratch}?immutable=1", uri=True)) as copy:
            return copy.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
    except sqlite3.DatabaseError:
        return -1  # copied in the middle of a checkpoint: look again


async def test_writes_reach_the_database_file_without_the_loop_checkpointing(tmp_path):
    db = tmp_path / "gateway.db"
    store = SqliteDocumentStore(str(db))
    # About 900 pages of log: fewer than make a connection checkpoint, even at SQLite's default of 1,000.
    for i in range(100):
        await store.put_many(NOTES, "p1", batch(i))
    assert wait_until(lambda: documents_in_the_file_alone(db, tmp_path / "copy.db") == 800)
    await store.close()


def test_the_loop_connections_leave_checkpoints_to_the_thread(tmp_path):
    db = connect(str(tmp_path / "gateway.db"))
    try:
        # SQLite's default is 1,000 pages; the loop only checkpoints as a backstop, far later.
        assert db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == LOOP_CHECKPOINT_FRAMES > 1000
    finally:
        db.close()


async def test_closing_the_store_and_the_queue_stops_the_thread(tmp_path):
    db = tmp_path / "gateway.db"
    store, queue = SqliteDocumentStore(str(db)), SqliteJobQueue(str(db))
    assert len(checkpointers(db)) == 1  # one per file, shared
    await store.put_many(NOTES, "p1", batch(0))
    await queue.enqueue("p1", "learn", {"subject_id": "s"})
    await store.close()
    assert len(checkpointers(db)) == 1  # the queue still writes
    await queue.close()
    assert checkpointers(db) == []
    # The last connection copied the log into the file and removed it.
    assert not Path(f"{db}-wal").exists()


async def test_the_store_and_the_queue_on_one_thread_share_one_connection(tmp_path):
    # SQLite drops a connection's page cache whenever another connection has committed since its
    # last transaction: on two connections every turn read its pages again (gateway/store/sqlite.py).
    db = tmp_path / "gateway.db"
    store, queue = SqliteDocumentStore(str(db)), SqliteJobQueue(str(db))
    assert store._db.execute.__self__ is queue._db.execute.__self__  # one connection
    await store.close()
    await queue.enqueue("p1", "learn", {"subject_id": "s"})  # the queue's hold keeps it open
    assert len(await queue.unfinished("p1", 10)) == 1
    await queue.close()


def test_gateways_on_two_threads_write_to_one_file_at_once_without_errors(tmp_path):
    """Each thread (a gateway's event loop) gets its own connection: statements of one thread's
    transaction never land inside another's."""
    db = str(tmp_path / "gateway.db")
    errors: list[BaseException] = []

    async def writes(name: str) -> None:
        store, queue = SqliteDocumentStore(db), SqliteJobQueue(db)
        try:
            for i in range(150):
                await store.put_many(NOTES, name, [(f"n{i}-{k}", {"subject_id": name}) for k in range(3)])
                await queue.enqueue(name, "learn", {"subject_id": name})
                for job in await queue.claim(5, 60):
                    assert await queue.complete(job.id, job.lease)
                await asyncio.sleep(0)
        finally:
            await store.close()
            await queue.close()

    def run(name: str) -> None:
        try:
            asyncio.run(writes(name))
        except BaseException as error:  # reported below, with the thread's own traceback
            errors.append(error)

    threads = [threading.Thread(target=run, args=(f"p{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []

    async def count() -> list[int]:
        store = SqliteDocumentStore(db)
        try:
            return [await store.count(NOTES, f"p{n}") for n in range(3)]
        finally:
            await store.close()

    assert asyncio.run(count()) == [450, 450, 450]


def test_a_store_dropped_unclosed_stops_the_thread_too(tmp_path):
    db = tmp_path / "gateway.db"
    store = SqliteDocumentStore(str(db))
    assert len(checkpointers(db)) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # Python 3.13+ reports the unclosed connection
        del store
        gc.collect()
    assert checkpointers(db) == []


async def test_an_in_memory_store_has_no_thread():
    before = {t.name for t in threading.enumerate()}
    store = SqliteDocumentStore(":memory:")
    await store.put_many(NOTES, "p1", batch(0))
    assert {t.name for t in threading.enumerate()} == before
    await store.close()


async def test_scrub_leaves_an_empty_log_while_the_thread_is_checkpointing(tmp_path):
    db = tmp_path / "gateway.db"
    store = SqliteDocumentStore(str(db))
    # Each round writes enough for the thread to come back every 20 ms, and scrubs at some
    # point between its rounds or during one: a scrub that met a round under way used to
    # truncate nothing.
    for i in range(80):
        for j in range(40):
            await store.put_many(NOTES, "p1", batch(100 * i + j))
        await asyncio.sleep(random.uniform(0, 0.02))
        await store.scrub()
        assert Path(f"{db}-wal").stat().st_size == 0
    await store.close()


async def test_data_survives_close_and_reopen(tmp_path):
    db = tmp_path / "gateway.db"
    store = SqliteDocumentStore(str(db))
    for i in range(50):
        await store.put_many(NOTES, "p1", batch(i))
    await store.close()
    reopened = SqliteDocumentStore(str(db))
    assert await reopened.count(NOTES, "p1") == 400
    assert (await reopened.get(NOTES, "p1", "d49-7"))["text"].startswith("note 49/7 ")
    await reopened.close()


KILLED_RIGHT_AFTER_WRITING = """
import asyncio, os, signal, sys
from gateway.store.base import Collection
from gateway.store.sqlite import SqliteDocumentStore

async def main():
    store = SqliteDocumentStore(sys.argv[1])
    for i in range(50):
        await store.put_many(Collection("notes"), "p1", [(f"d{i}-{j}", {"n": 8 * i + j}) for j in range(8)])
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_commits_survive_the_process_being_killed_before_any_checkpoint(tmp_path):
    db = tmp_path / "gateway.db"
    child = subprocess.run([sys.executable, "-c", KILLED_RIGHT_AFTER_WRITING, str(db)], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert Path(f"{db}-wal").stat().st_size > 0  # killed before closing: the log is still there
    store = SqliteDocumentStore(str(db))
    assert await store.count(NOTES, "p1") == 400
    assert await store.get(NOTES, "p1", "d49-7") == {"n": 399}
    await store.close()
