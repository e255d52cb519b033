"""One contract for every document store: the same tests on SQLite and on real Redis."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from gateway.store.base import Collection
from gateway.store.redis import RedisDocumentStore
from gateway.store.sqlite import SqliteDocumentStore
from tests.conftest import REDIS_URL, drop_redis_prefix, require_redis

NOTES = Collection("notes", indexes=(("subject_id",), ("subject_id", "chat_id")))
EPHEMERAL = Collection("ephemeral", indexes=(("subject_id",),), expiring=True)


@pytest.fixture(params=["sqlite", "redis"])
async def store(request, tmp_path):
    if request.param == "sqlite":
        backend = SqliteDocumentStore(str(tmp_path / "store.db"))
        yield backend
        await backend.close()
    else:
        require_redis()
        prefix = f"mnxtest:{secrets.token_hex(6)}:"
        backend = RedisDocumentStore(REDIS_URL, prefix)
        yield backend
        await backend.close()
        drop_redis_prefix(prefix)


async def test_put_then_get_round_trips_nested_json(store):
    doc = {"subject_id": "u1", "value": {"deep": [1, {"x": None, "y": "é"}], "flag": True}}
    await store.put(NOTES, "p1", "n1", doc)
    assert await store.get(NOTES, "p1", "n1") == doc
    assert await store.get(NOTES, "p1", "missing") is None


async def test_replacing_a_document_keeps_its_position_and_moves_its_index_entries(store):
    await store.put(NOTES, "p1", "a", {"subject_id": "u1", "n": 1})
    await store.put(NOTES, "p1", "b", {"subject_id": "u1", "n": 2})
    await store.put(NOTES, "p1", "a", {"subject_id": "u2", "n": 3})
    assert [d["n"] for d in await store.find(NOTES, "p1")] == [3, 2]
    assert [d["n"] for d in await store.find(NOTES, "p1", {"subject_id": "u1"})] == [2]
    assert [d["n"] for d in await store.find(NOTES, "p1", {"subject_id": "u2"})] == [3]


async def test_find_orders_pages_and_filters_on_composite_indexes(store):
    await store.put_many(NOTES, "p1", [(f"m{i}", {"subject_id": "u1", "chat_id": "c1" if i % 2 else "c2", "i": i})
                                        for i in range(10)])
    in_c1 = await store.find(NOTES, "p1", {"subject_id": "u1", "chat_id": "c1"})
    assert [d["i"] for d in in_c1] == [1, 3, 5, 7, 9]
    newest = await store.find(NOTES, "p1", {"subject_id": "u1"}, limit=3, newest_first=True)
    assert [d["i"] for d in newest] == [9, 8, 7]
    page = await store.find(NOTES, "p1", {"subject_id": "u1"}, limit=3, offset=4)
    assert [d["i"] for d in page] == [4, 5, 6]
    assert await store.count(NOTES, "p1", {"subject_id": "u1", "chat_id": "c2"}) == 5
    assert await store.count(NOTES, "p1") == 10


async def test_documents_missing_an_indexed_field_are_not_in_that_index(store):
    await store.put(NOTES, "p1", "x", {"subject_id": "u1"})  # no chat_id
    assert await store.find(NOTES, "p1", {"subject_id": "u1", "chat_id": "c1"}) == []
    assert len(await store.find(NOTES, "p1", {"subject_id": "u1"})) == 1


async def test_values_with_separator_characters_do_not_collide(store):
    await store.put(NOTES, "p1", "1", {"subject_id": "a:b", "chat_id": "c"})
    await store.put(NOTES, "p1", "2", {"subject_id": "a", "chat_id": "b:c"})
    assert len(await store.find(NOTES, "p1", {"subject_id": "a:b", "chat_id": "c"})) == 1
    assert len(await store.find(NOTES, "p1", {"subject_id": "a", "chat_id": "b:c"})) == 1


async def test_delete_and_delete_where(store):
    await store.put_many(NOTES, "p1", [(f"d{i}", {"subject_id": "u1" if i < 3 else "u2"}) for i in range(5)])
    assert await store.delete(NOTES, "p1", "d0") is True
    assert await store.delete(NOTES, "p1", "d0") is False
    assert await store.delete_where(NOTES, "p1", {"subject_id": "u1"}) == 2
    assert await store.find(NOTES, "p1", {"subject_id": "u1"}) == []
    assert await store.count(NOTES, "p1") == 2
    with pytest.raises(ValueError):
        await store.delete_where(NOTES, "p1", {})


async def test_projects_never_see_each_others_documents(store):
    await store.put(NOTES, "p1", "same-id", {"subject_id": "u1", "owner": "p1"})
    await store.put(NOTES, "p2", "same-id", {"subject_id": "u1", "owner": "p2"})
    assert (await store.get(NOTES, "p1", "same-id"))["owner"] == "p1"
    assert [d["owner"] for d in await store.find(NOTES, "p2", {"subject_id": "u1"})] == ["p2"]
    await store.delete_where(NOTES, "p1", {"subject_id": "u1"})
    assert await store.get(NOTES, "p2", "same-id") is not None


async def test_an_empty_project_is_refused_not_treated_as_all(store):
    with pytest.raises(ValueError):
        await store.find(NOTES, "", {"subject_id": "u1"})
    with pytest.raises(ValueError):
        await store.put(NOTES, "", "x", {"subject_id": "u1"})


async def test_queries_must_use_a_declared_index(store):
    with pytest.raises(ValueError):
        await store.find(NOTES, "p1", {"chat_id": "c1"})


async def test_expired_documents_disappear_from_every_read(store):
    await store.put(EPHEMERAL, "p1", "short", {"subject_id": "u1", "v": 1}, ttl_seconds=0.3)
    await store.put(EPHEMERAL, "p1", "long", {"subject_id": "u1", "v": 2}, ttl_seconds=60)
    await store.put(EPHEMERAL, "p1", "forever", {"subject_id": "u1", "v": 3})
    assert await store.count(EPHEMERAL, "p1", {"subject_id": "u1"}) == 3
    await asyncio.sleep(0.5)
    assert await store.get(EPHEMERAL, "p1", "short") is None
    assert [d["v"] for d in await store.find(EPHEMERAL, "p1", {"subject_id": "u1"})] == [2, 3]
    assert await store.count(EPHEMERAL, "p1", {"subject_id": "u1"}) == 2


async def test_rewriting_without_ttl_makes_a_document_permanent(store):
    await store.put(EPHEMERAL, "p1", "k", {"subject_id": "u1"}, ttl_seconds=0.3)
    await store.put(EPHEMERAL, "p1", "k", {"subject_id": "u1", "kept": True})
    await asyncio.sleep(0.5)
    assert await store.get(EPHEMERAL, "p1", "k") == {"subject_id": "u1", "kept": True}
