"""SQLite sweeps expired documents out of its file (reads skip them anyway): what the store
contract cannot see from outside. Retention means gone from the file, whichever write comes next."""

from __future__ import annotations

import asyncio
import sqlite3

from gateway.store.base import Collection
from gateway.store.sqlite import SqliteDocumentStore

RECORDS = Collection("records", indexes=(("subject_id",),), expiring=True)


def rows(path: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM documents WHERE collection = 'records'").fetchone()[0]


async def test_a_batch_write_sweeps_expired_documents_out_of_the_file(tmp_path):
    path = str(tmp_path / "g.db")
    store = SqliteDocumentStore(path)
    # Written in a batch with a time to live, as the audit log writes its records.
    await store.put_many(RECORDS, "p", [(f"r{n}", {"subject_id": "s"}) for n in range(3)], ttl_seconds=0.2)
    await store.close()
    await asyncio.sleep(0.3)
    assert rows(path) == 3  # expired, still in the file
    # A store opened afresh sweeps at its first write, which here is a batch too.
    reopened = SqliteDocumentStore(path)
    await reopened.put_many(RECORDS, "p", [("kept", {"subject_id": "s"})], ttl_seconds=60)
    assert rows(path) == 1
    await reopened.close()
