"""SQLite's deferred index entries (Collection.deferred, gateway/store/sqlite.py): written with
their document, filed into the index later; what the store contract cannot see from outside."""

from __future__ import annotations

import sqlite3

from gateway.store.base import Collection
from gateway.store.sqlite import FILE_DEFERRED_ROWS, SqliteDocumentStore

TURNS = Collection("turns", indexes=(("chat_id",), ("memory_ids",)), multi_valued=("memory_ids",),
                   deferred=(("memory_ids",),))


def entry_rows(path: str) -> dict[str, int]:
    """Index rows of TURNS in each table, read by a connection of its own."""
    with sqlite3.connect(path) as db:
        return {table: db.execute(f"SELECT COUNT(*) FROM {table} WHERE collection = 'turns'").fetchone()[0]
                for table in ("doc_index", "doc_index_deferred")}


async def test_entries_not_yet_filed_outlive_the_process_and_are_found_after_a_restart(tmp_path):
    path = str(tmp_path / "g.db")
    store = SqliteDocumentStore(path)
    await store.put_many(TURNS, "p", [(f"t{n}", {"chat_id": "c", "memory_ids": ["m1", f"x{n}"]}) for n in range(5)])
    # Committed with their documents, waiting: only the chat index is filed yet.
    assert entry_rows(path) == {"doc_index": 5, "doc_index_deferred": 10}
    await store.close()
    reopened = SqliteDocumentStore(path)
    assert await reopened.count(TURNS, "p", {"memory_ids": "m1"}) == 5
    assert entry_rows(path) == {"doc_index": 15, "doc_index_deferred": 0}
    await reopened.close()


async def test_writes_file_the_waiting_entries_in_bulk_and_deletes_leave_no_entry_behind(tmp_path):
    path = str(tmp_path / "g.db")
    store = SqliteDocumentStore(path)
    per_turn = 8
    turns = FILE_DEFERRED_ROWS // per_turn
    for n in range(turns):
        await store.put(TURNS, "p", f"t{n}", {"chat_id": f"c{n % 2}",
                                              "memory_ids": [f"m{n + k}" for k in range(per_turn)]})
    # The write that took the waiting entries to FILE_DEFERRED_ROWS filed them all.
    assert entry_rows(path) == {"doc_index": turns * (per_turn + 1), "doc_index_deferred": 0}
    await store.put(TURNS, "p", "late", {"chat_id": "c0", "memory_ids": ["m1"]})
    assert entry_rows(path)["doc_index_deferred"] == 1
    # Deleted through the chat index, with entries filed and waiting: none is left in either table.
    assert await store.delete_where(TURNS, "p", {"chat_id": "c0"}) == len(range(0, turns, 2)) + 1
    assert await store.delete_where(TURNS, "p", {"chat_id": "c1"}) == len(range(1, turns, 2))
    assert entry_rows(path) == {"doc_index": 0, "doc_index_deferred": 0}
    await store.close()


async def test_a_rewritten_document_moves_its_waiting_entries_with_it(tmp_path):
    path = str(tmp_path / "g.db")
    store = SqliteDocumentStore(path)
    await store.put(TURNS, "p", "t", {"chat_id": "c", "memory_ids": ["m1", "m2"]})
    await store.put(TURNS, "p", "t", {"chat_id": "c", "memory_ids": ["m2", "m3"]})
    assert entry_rows(path) == {"doc_index": 3, "doc_index_deferred": 0}
    assert [await store.count(TURNS, "p", {"memory_ids": m}) for m in ("m1", "m2", "m3")] == [0, 1, 1]
    assert await store.delete(TURNS, "p", "t")
    assert entry_rows(path) == {"doc_index": 0, "doc_index_deferred": 0}
    await store.close()
