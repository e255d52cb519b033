"""Index keys in the gateway's SQLite file keep the exact form earlier gateways wrote them in:
documents a gateway indexed before an upgrade are found by it after the upgrade."""

from __future__ import annotations

import json

import pytest

from gateway.store.base import Collection
from gateway.store.sqlite import SqliteDocumentStore

NOTES = Collection("notes", indexes=(("subject_id",), ("subject_id", "chat_id")))

VALUES = ["plain", "", "Zoë", "北京", "emoji \U0001F600", 'quote " and \\ backslash', "tab\tnew\nline\x00nul\x1f",
          "\u2028 line separator", "surrogate-free \U00010348"]


@pytest.mark.parametrize("value", VALUES)
async def test_documents_indexed_by_an_earlier_gateway_are_found(tmp_path, value):
    path = str(tmp_path / "gateway.db")
    store = SqliteDocumentStore(path)
    try:
        # A document as an earlier gateway wrote it: its index rows keyed by json.dumps of the values.
        db = store._db
        (seq,) = db.execute("INSERT INTO documents (collection, project_id, doc_id, body, expires_at) "
                            "VALUES ('notes', 'p', 'old', ?, NULL) RETURNING seq",
                            (json.dumps({"subject_id": value, "chat_id": "c", "n": 1}),)).fetchone()
        for fields, values in ((("subject_id",), (value,)), (("subject_id", "chat_id"), (value, "c"))):
            key = "\x1f".join(fields) + "=" + json.dumps(values, ensure_ascii=False)
            db.execute("INSERT INTO doc_index (collection, project_id, index_key, seq) VALUES ('notes', 'p', ?, ?)",
                       (key, seq))
        await store.put(NOTES, "p", "new", {"subject_id": value, "chat_id": "c", "n": 2})
        found = await store.find(NOTES, "p", {"subject_id": value})
        assert [doc["n"] for doc in found] == [1, 2]
        both = await store.find_each("p", [(NOTES, {"subject_id": value, "chat_id": "c"}),
                                           (NOTES, {"subject_id": value + "x"})])
        assert [[doc["n"] for doc in docs] for docs in both] == [[1, 2], []]
        # Deleting the new one removes its own index rows only (they were the same keys).
        await store.delete(NOTES, "p", "new")
        assert [doc["n"] for doc in await store.find(NOTES, "p", {"subject_id": value})] == [1]
    finally:
        await store.close()
