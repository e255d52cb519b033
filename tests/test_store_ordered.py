"""Ordered indexes (``Collection.ordered``, ``find_ordered``, ``count_ordered``): the same tests on SQLite
and on real Redis, plus how each backend answers (one primary-key range on SQLite, one script call on Redis)."""

from __future__ import annotations

import asyncio
import math
import secrets
import sqlite3
import time

import pytest
import redis.asyncio as redis_asyncio

from gateway.store.base import Collection, OrderedRange
from gateway.store.redis import RedisDocumentStore
from gateway.store.sqlite import SqliteDocumentStore, ordered_bounds, ordered_query
from tests.conftest import REDIS_URL, drop_redis_prefix, open_test_store, require_redis

RECORDS = Collection("records", indexes=(("kind",),), ordered="_order")
EPHEMERAL = Collection("ephemeral", indexes=(("kind",),), expiring=True, ordered="_order")


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
async def store(request, tmp_path):
    """Each backend, a Redis Cluster included (the ordered scripts must stay in one slot)."""
    async with open_test_store(request.param, request, tmp_path) as backend:
        yield backend


def doc(name: str, **ordered: list) -> dict:
    return {"name": name, "kind": "k", "_order": ordered}


def names(docs: list[dict]) -> list[str]:
    return [d["name"] for d in docs]


async def put_amounts(store, collection: Collection = RECORDS, project: str = "p1") -> None:
    """a..g with amounts in an order unlike their insertion order; two ties (5 and 5, 1 and 1.0)."""
    amounts = {"a": 5, "b": -2.5, "c": 10, "d": 5, "e": 1, "f": 1.0, "g": 7.25}
    await store.put_many(collection, project, [(n, doc(n, amount=[v])) for n, v in amounts.items()])


def amount(low=None, high=None, *, low_inclusive: bool = True, high_inclusive: bool = True) -> OrderedRange:
    return OrderedRange("amount", numeric=True, low=low, low_inclusive=low_inclusive, high=high,
                        high_inclusive=high_inclusive)


async def test_numeric_ranges_honour_inclusive_exclusive_and_unbounded_sides(store):
    await put_amounts(store)
    find = store.find_ordered
    # Ties (e and f: 1 and 1.0; a and d: 5) come in insertion order.
    assert names(await find(RECORDS, "p1", amount())) == ["b", "e", "f", "a", "d", "g", "c"]
    assert names(await find(RECORDS, "p1", amount(1, 5))) == ["e", "f", "a", "d"]
    assert names(await find(RECORDS, "p1", amount(1, 5, low_inclusive=False))) == ["a", "d"]
    assert names(await find(RECORDS, "p1", amount(1, 5, high_inclusive=False))) == ["e", "f"]
    assert names(await find(RECORDS, "p1", amount(1, 5, low_inclusive=False, high_inclusive=False))) == []
    assert names(await find(RECORDS, "p1", amount(low=5.0))) == ["a", "d", "g", "c"]
    assert names(await find(RECORDS, "p1", amount(low=5, low_inclusive=False))) == ["g", "c"]
    assert names(await find(RECORDS, "p1", amount(high=1))) == ["b", "e", "f"]
    assert names(await find(RECORDS, "p1", amount(high=1, high_inclusive=False))) == ["b"]
    assert names(await find(RECORDS, "p1", amount(-2.4, 0.99))) == []
    assert names(await find(RECORDS, "p1", amount(9, 2))) == []  # low above high: nothing
    assert await store.count_ordered(RECORDS, "p1", amount()) == 7
    assert await store.count_ordered(RECORDS, "p1", amount(1, 5, low_inclusive=False)) == 2
    assert await store.count_ordered(RECORDS, "p1", amount(high=0)) == 1
    # An index nobody wrote: empty, not an error.
    assert await find(RECORDS, "p1", OrderedRange("other", numeric=True)) == []
    assert await store.count_ordered(RECORDS, "p1", OrderedRange("other", numeric=False)) == 0


async def test_descending_reverses_values_and_ties_and_pages_from_the_top(store):
    await put_amounts(store)
    find = store.find_ordered
    assert names(await find(RECORDS, "p1", amount(), descending=True)) == ["c", "g", "d", "a", "f", "e", "b"]
    assert names(await find(RECORDS, "p1", amount(1, 5, low_inclusive=False), descending=True)) == ["d", "a"]
    assert names(await find(RECORDS, "p1", amount(), descending=True, limit=2)) == ["c", "g"]
    assert names(await find(RECORDS, "p1", amount(), descending=True, limit=3, offset=2)) == ["d", "a", "f"]
    assert names(await find(RECORDS, "p1", amount(), limit=3, offset=1)) == ["e", "f", "a"]
    assert names(await find(RECORDS, "p1", amount(), offset=5)) == ["g", "c"]
    assert names(await find(RECORDS, "p1", amount(), limit=0)) == []
    assert names(await find(RECORDS, "p1", amount(), offset=7)) == []


async def test_text_ranges_order_by_value_then_insertion(store):
    cities = [("1", "Paris"), ("2", "Berlin"), ("3", "Rome"), ("4", "Berlin"), ("5", "Oslo"), ("6", "")]
    await store.put_many(RECORDS, "p1", [(n, doc(n, city=[c])) for n, c in cities])

    def city(low=None, high=None, **bounds) -> OrderedRange:
        return OrderedRange("city", numeric=False, low=low, high=high, **bounds)

    find = store.find_ordered
    assert names(await find(RECORDS, "p1", city())) == ["6", "2", "4", "5", "1", "3"]
    assert names(await find(RECORDS, "p1", city(), descending=True)) == ["3", "1", "5", "4", "2", "6"]
    assert names(await find(RECORDS, "p1", city("Berlin", "Paris"))) == ["2", "4", "5", "1"]
    assert names(await find(RECORDS, "p1", city("Berlin", "Paris", low_inclusive=False))) == ["5", "1"]
    assert names(await find(RECORDS, "p1", city("Berlin", "Paris", high_inclusive=False))) == ["2", "4", "5"]
    assert names(await find(RECORDS, "p1", city(low="Oslo"))) == ["5", "1", "3"]
    assert names(await find(RECORDS, "p1", city(high="Berlin", high_inclusive=False))) == ["6"]
    assert names(await find(RECORDS, "p1", city("Berlin", "Berlin"))) == ["2", "4"]
    assert names(await find(RECORDS, "p1", city("Berlin", "Berlin"), descending=True, limit=1)) == ["4"]
    assert names(await find(RECORDS, "p1", city(low="Bern"))) == ["5", "1", "3"]
    assert await store.count_ordered(RECORDS, "p1", city("Berlin", "Oslo")) == 3
    assert await store.count_ordered(RECORDS, "p1", city(low="", low_inclusive=False)) == 5


async def test_strings_order_by_their_utf8_bytes_on_every_backend(store):
    """Prefixes come before their extensions, and code points beyond the BMP after U+FFxx (UTF-8
    order; UTF-16 would put them first)."""
    values = ["abc", "ab\u00e9", "ab", "ab ", "aB", "b", "a", "ab\U0001f600", "ab\uff5e", "abc\u00e9", "abd",
              "\U0001f600", "\uffff"]
    await store.put_many(RECORDS, "p1", [(v, doc(v, label=[v])) for v in values])
    by_bytes = sorted(values, key=lambda v: v.encode())
    assert names(await store.find_ordered(RECORDS, "p1", OrderedRange("label", numeric=False))) == by_bytes

    def between(low=None, high=None, **bounds) -> list[str]:
        return [v for v in by_bytes
                if (low is None or (v > low if bounds.get("low_inclusive") is False else v >= low))
                and (high is None or (v < high if bounds.get("high_inclusive") is False else v <= high))]

    cases = [dict(low="ab", low_inclusive=False), dict(low="ab"), dict(high="abc", high_inclusive=False),
             dict(high="ab"), dict(high="ab", high_inclusive=False), dict(low="ab", high="abc"),
             dict(low="ab", high="abc", low_inclusive=False, high_inclusive=False), dict(low="abc", high="abc")]
    for bounds in cases:
        where = OrderedRange("label", numeric=False, **bounds)
        assert names(await store.find_ordered(RECORDS, "p1", where)) == between(**bounds), bounds
        assert await store.count_ordered(RECORDS, "p1", where) == len(between(**bounds)), bounds
    assert between(low="ab", low_inclusive=False)[:3] == ["ab ", "abc", "abc\u00e9"]  # the cases mean something


async def test_a_document_with_several_values_is_found_by_each_once_per_value_in_range(store):
    await store.put(RECORDS, "p1", "multi", doc("multi", tags=["red", "blue", "red"], score=[3, 9, 3.0]))
    await store.put(RECORDS, "p1", "single", doc("single", tags=["green"], score=[4]))
    tags = OrderedRange("tags", numeric=False)
    assert names(await store.find_ordered(RECORDS, "p1", tags)) == ["multi", "single", "multi"]  # blue green red
    assert names(await store.find_ordered(RECORDS, "p1", OrderedRange("tags", False, "red", high="red"))) == ["multi"]
    assert names(await store.find_ordered(RECORDS, "p1", OrderedRange("tags", False, "c", high="h"))) == ["single"]
    assert names(await store.find_ordered(RECORDS, "p1", amount_of("score", 9, 9))) == ["multi"]
    assert names(await store.find_ordered(RECORDS, "p1", amount_of("score", 3, 4))) == ["multi", "single"]
    assert await store.count_ordered(RECORDS, "p1", amount_of("score")) == 3  # 3 (once), 4, 9
    assert await store.count_ordered(RECORDS, "p1", tags) == 3


def amount_of(index: str, low=None, high=None) -> OrderedRange:
    return OrderedRange(index, numeric=True, low=low, high=high)


async def test_replacing_a_document_moves_its_entries_and_keeps_its_place_among_ties(store):
    await store.put_many(RECORDS, "p1", [("x", doc("x", n=[1], s=["one"])), ("y", doc("y", n=[2], s=["two"]))])
    await store.put(RECORDS, "p1", "x", doc("x2", n=[2], s=["deux"]))
    assert await store.find_ordered(RECORDS, "p1", amount_of("n", 1, 1)) == []
    assert await store.find_ordered(RECORDS, "p1", OrderedRange("s", False, "one", high="one")) == []
    assert await store.count_ordered(RECORDS, "p1", amount_of("n")) == 2
    # x was written first, so it still comes first among the 2s, with its new body.
    assert names(await store.find_ordered(RECORDS, "p1", amount_of("n", 2, 2))) == ["x2", "y"]
    assert names(await store.find_ordered(RECORDS, "p1", OrderedRange("s", False))) == ["x2", "y"]  # deux < two
    # Written without ordered values at all: gone from every ordered index.
    await store.put(RECORDS, "p1", "x", {"name": "x3", "kind": "k"})
    assert names(await store.find_ordered(RECORDS, "p1", amount_of("n"))) == ["y"]
    assert names(await store.find_ordered(RECORDS, "p1", OrderedRange("s", False))) == ["y"]


async def test_a_rewritten_document_keeps_the_ordered_values_it_still_has_once(store):
    await store.put(RECORDS, "p1", "x", doc("x", n=[1, 2], s=["a"]))
    await store.put(RECORDS, "p1", "x", doc("x2", n=[2.0, 3], s=["a"]))  # 2.0 is the 2 it had
    assert await store.find_ordered(RECORDS, "p1", amount_of("n", 1, 1)) == []
    assert names(await store.find_ordered(RECORDS, "p1", amount_of("n", 2, 3))) == ["x2", "x2"]
    assert await store.count_ordered(RECORDS, "p1", amount_of("n")) == 2
    assert names(await store.find_ordered(RECORDS, "p1", OrderedRange("s", False))) == ["x2"]


async def test_delete_and_delete_where_remove_the_entries(store):
    await store.put_many(RECORDS, "p1", [
        ("a", {"name": "a", "kind": "keep", "_order": {"n": [1, 2], "s": ["a"]}}),
        ("b", {"name": "b", "kind": "drop", "_order": {"n": [1], "s": ["b"]}}),
        ("c", {"name": "c", "kind": "drop", "_order": {"n": [3], "s": ["c"]}}),
    ])
    assert await store.delete(RECORDS, "p1", "a") is True
    assert names(await store.find_ordered(RECORDS, "p1", amount_of("n"))) == ["b", "c"]
    assert await store.count_ordered(RECORDS, "p1", amount_of("n")) == 2
    assert await store.count_ordered(RECORDS, "p1", OrderedRange("s", numeric=False)) == 2
    assert await store.delete_where(RECORDS, "p1", {"kind": "drop"}) == 2
    assert await store.find_ordered(RECORDS, "p1", amount_of("n")) == []
    assert await store.find_ordered(RECORDS, "p1", OrderedRange("s", numeric=False)) == []
    assert await store.count_ordered(RECORDS, "p1", amount_of("n")) == 0
    # Written again under the same id: found by its new values only.
    await store.put(RECORDS, "p1", "b", doc("b", n=[5]))
    assert names(await store.find_ordered(RECORDS, "p1", amount_of("n"))) == ["b"]


async def stored_text(store, tmp_path) -> str:
    """Everything the backend holds for the test, as text: the SQLite file and its log after a
    scrub, or every Redis key of the test's prefix with its members and fields."""
    await store.scrub()
    if isinstance(store, SqliteDocumentStore):
        return b"".join(path.read_bytes() for path in tmp_path.glob("store.db*")).decode("latin-1")
    client = store._redis
    parts: list[str] = []
    async for key in client.scan_iter(match=store._prefix + "*"):
        kind = await client.type(key)
        parts.append(key)
        if kind == "zset":
            parts += await client.zrange(key, 0, -1)
        elif kind == "hash":
            parts += [f"{k}={v}" for k, v in (await client.hgetall(key)).items()]
    return "\n".join(parts)


async def test_deleted_and_expired_documents_leave_no_ordered_value_behind(store, tmp_path):
    """Erasure means gone from the backend, index entries included (a value may be a customer's name)."""
    secrets_by_way = {way: f"secret-{way}-{secrets.token_hex(4)}" for way in ("delete", "where", "expiry")}
    await store.put(RECORDS, "p1", "d", {"name": "d", "kind": "k", "_order": {"s": [secrets_by_way["delete"]]}})
    await store.put(RECORDS, "p1", "w", {"name": "w", "kind": "gone", "_order": {"s": [secrets_by_way["where"]]}})
    await store.put(EPHEMERAL, "p1", "e", {"name": "e", "kind": "k", "_order": {"s": [secrets_by_way["expiry"]]}},
                    ttl_seconds=0.2)
    await store.put(RECORDS, "p1", "kept", doc("kept", s=["kept-value"]))
    before = await stored_text(store, tmp_path)
    assert all(value in before for value in secrets_by_way.values())
    await store.delete(RECORDS, "p1", "d")
    await store.delete_where(RECORDS, "p1", {"kind": "gone"})
    await asyncio.sleep(0.3)
    if isinstance(store, SqliteDocumentStore):
        # Expired rows are swept by a write once a minute; a store opened afresh sweeps at its first write.
        swept = SqliteDocumentStore(str(tmp_path / "store.db"))
        await swept.put(EPHEMERAL, "p1", "other", doc("other"), ttl_seconds=60)
        await swept.close()
    else:
        # Redis drops the expired document itself; its entries go when a read meets them.
        assert await store.find_ordered(EPHEMERAL, "p1", OrderedRange("s", numeric=False)) == []
    left = await stored_text(store, tmp_path)
    assert "kept-value" in left
    assert not [value for value in secrets_by_way.values() if value in left]


async def test_expired_documents_leave_the_ordered_indexes(store):
    await store.put(EPHEMERAL, "p1", "short", doc("short", n=[1], s=["x"]), ttl_seconds=0.3)
    await store.put(EPHEMERAL, "p1", "reborn", doc("reborn", n=[2], s=["y"]), ttl_seconds=0.3)
    await store.put(EPHEMERAL, "p1", "long", doc("long", n=[3], s=["z"]), ttl_seconds=60)
    await store.put(EPHEMERAL, "p1", "forever", doc("forever", n=[4], s=["w"]))
    assert await store.count_ordered(EPHEMERAL, "p1", amount_of("n")) == 4
    await asyncio.sleep(0.5)
    # Expired, then written anew with other values: the old values must not find the new document.
    await store.put(EPHEMERAL, "p1", "reborn", doc("reborn", n=[9], s=["a"]))
    assert names(await store.find_ordered(EPHEMERAL, "p1", amount_of("n"))) == ["long", "forever", "reborn"]
    assert names(await store.find_ordered(EPHEMERAL, "p1", amount_of("n"), limit=1, offset=1)) == ["forever"]
    assert await store.find_ordered(EPHEMERAL, "p1", amount_of("n"), limit=0) == []
    assert names(await store.find_ordered(EPHEMERAL, "p1", OrderedRange("s", False), descending=True)) == [
        "long", "forever", "reborn"]
    assert await store.find_ordered(EPHEMERAL, "p1", amount_of("n", 1, 2)) == []
    assert await store.count_ordered(EPHEMERAL, "p1", amount_of("n")) == 3
    assert await store.count_ordered(EPHEMERAL, "p1", OrderedRange("s", False, "x")) == 1


async def test_projects_and_collections_never_share_ordered_entries(store):
    await store.put(RECORDS, "p1", "same", doc("p1", n=[1]))
    await store.put(RECORDS, "p2", "same", doc("p2", n=[1]))
    await store.put(EPHEMERAL, "p1", "same", doc("other collection", n=[1]))
    assert names(await store.find_ordered(RECORDS, "p1", amount_of("n"))) == ["p1"]
    assert names(await store.find_ordered(RECORDS, "p2", amount_of("n"))) == ["p2"]
    await store.delete(RECORDS, "p1", "same")
    assert names(await store.find_ordered(RECORDS, "p2", amount_of("n"))) == ["p2"]
    assert names(await store.find_ordered(EPHEMERAL, "p1", amount_of("n"))) == ["other collection"]
    with pytest.raises(ValueError):
        await store.find_ordered(RECORDS, "", amount_of("n"))
    with pytest.raises(ValueError):
        await store.count_ordered(RECORDS, "", amount_of("n"))


async def test_numbers_and_strings_filed_under_one_name_stay_apart(store):
    await store.put(RECORDS, "p1", "num", doc("num", v=[2]))
    await store.put(RECORDS, "p1", "text", doc("text", v=["2"]))
    assert names(await store.find_ordered(RECORDS, "p1", OrderedRange("v", numeric=True))) == ["num"]
    assert names(await store.find_ordered(RECORDS, "p1", OrderedRange("v", numeric=True, low=0))) == ["num"]
    assert names(await store.find_ordered(RECORDS, "p1", OrderedRange("v", numeric=False))) == ["text"]
    assert names(await store.find_ordered(RECORDS, "p1", OrderedRange("v", numeric=False, high="9"))) == ["text"]


@pytest.mark.parametrize("bad", [
    {"s": ["a\x00b"]}, {"bad\x00name": [1]}, {"n": [math.nan]}, {"n": [math.inf]}, {"n": [True]},
    {"n": [None]}, {"n": [[1]]}, {"n": [1, "1"]}, {"n": 1}, {"n": [2 ** 63]},
])
async def test_values_a_store_cannot_index_faithfully_are_refused_and_nothing_is_written(store, bad):
    with pytest.raises(ValueError):
        await store.put(RECORDS, "p1", "x", {"name": "x", "kind": "k", "_order": bad})
    with pytest.raises(ValueError):
        await store.put_many(RECORDS, "p1", [("y", doc("y", n=[1])), ("x", {"name": "x", "_order": bad})])
    assert await store.get(RECORDS, "p1", "x") is None
    assert await store.get(RECORDS, "p1", "y") is None
    assert await store.count(RECORDS, "p1") == 0


def test_ranges_refuse_nul_and_bounds_of_the_wrong_kind():
    for make in (lambda: OrderedRange("s", numeric=False, low="a\x00"), lambda: OrderedRange("a\x00", numeric=True),
                 lambda: OrderedRange("n", numeric=True, high="1"), lambda: OrderedRange("s", numeric=False, low=1),
                 lambda: OrderedRange("n", numeric=True, low=math.nan), lambda: OrderedRange("n", True, True)):
        with pytest.raises(ValueError):
            make()


async def test_an_existing_sqlite_file_gains_the_ordered_table(tmp_path):
    path = str(tmp_path / "old.db")
    store = SqliteDocumentStore(path)
    await store.put(RECORDS, "p1", "old", {"name": "old", "kind": "k"})
    await store.close()
    with sqlite3.connect(path) as db:  # as a file from before ordered indexes
        db.execute("DROP TABLE doc_order")
    db.close()
    store = SqliteDocumentStore(path)
    await store.put(RECORDS, "p1", "new", doc("new", n=[1]))
    assert names(await store.find_ordered(RECORDS, "p1", amount_of("n"))) == ["new"]
    assert await store.get(RECORDS, "p1", "old") == {"name": "old", "kind": "k"}
    await store.close()


@pytest.mark.parametrize("where", [amount(), amount(1, 5), amount(1, 5, low_inclusive=False, high_inclusive=False),
                                   amount(high=3), OrderedRange("city", numeric=False),
                                   OrderedRange("city", numeric=False, low="a", high="b", high_inclusive=False)])
@pytest.mark.parametrize("descending", [False, True])
async def test_on_sqlite_a_range_is_one_primary_key_search_never_a_scan_or_sort(tmp_path, where, descending):
    path = str(tmp_path / "plan.db")
    store = SqliteDocumentStore(path)
    await put_amounts(store)
    low, low_inclusive, high, high_inclusive = ordered_bounds(where)
    args = ("records", "p1", where.index, low, high, time.time())
    db = sqlite3.connect(path)
    try:
        for sql, more in ((ordered_query(low_inclusive, high_inclusive, descending), (10, 0)),
                          (ordered_query(low_inclusive, high_inclusive, count=True), ())):
            plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, args + more)]
            assert any(step.startswith("SEARCH o USING PRIMARY KEY (collection=? AND project_id=? AND index_name=? "
                                       "AND value>") and "AND value<" in step for step in plan), plan
            assert not any("SCAN" in step or "TEMP B-TREE" in step for step in plan), plan
            # And the statement is the one the store runs: it answers as find_ordered/count_ordered do.
            rows = db.execute(sql, args + more).fetchall()
            if more:
                assert len(rows) == len(await store.find_ordered(RECORDS, "p1", where, descending=descending,
                                                                 limit=10))
            else:
                assert rows[0][0] == await store.count_ordered(RECORDS, "p1", where)
    finally:
        db.close()
        await store.close()


async def test_on_redis_find_ordered_is_one_script_call_and_never_scans():
    """Watched with MONITOR: the store's connection sends one EVALSHA (bodies come back in it), and
    neither it nor the script sends SCAN or KEYS."""
    require_redis()
    prefix = f"mnxtest:{secrets.token_hex(6)}:"
    # One connection, so every command of the store comes from one address we can pick out.
    client = redis_asyncio.Redis(connection_pool=redis_asyncio.BlockingConnectionPool.from_url(
        REDIS_URL, max_connections=1, decode_responses=True))
    watcher = redis_asyncio.Redis.from_url(REDIS_URL, decode_responses=True)
    store = RedisDocumentStore(client, prefix)
    try:
        await put_amounts(store)
        await put_amounts(store, EPHEMERAL)
        await store.find_ordered(RECORDS, "p1", amount())  # the script is loaded now, not while watched
        address = (await client.client_info())["addr"]
        marker = secrets.token_hex(6)
        async with watcher.monitor() as monitor:
            await client.echo("start " + marker)
            exact = await store.find_ordered(RECORDS, "p1", amount(1, 5), descending=True, limit=3)
            walked = await store.find_ordered(EPHEMERAL, "p1", amount(1, 5), limit=3)
            await client.echo("end " + marker)
            ours: list[str] = []  # the store's commands, and those its scripts ran
            started, last_was_ours = False, False
            while True:
                command = await asyncio.wait_for(monitor.next_command(), timeout=10)
                line = command["command"]
                if command["client_type"] == "lua":
                    if started and last_was_ours:
                        ours.append("lua " + line)
                    continue
                last_was_ours = f"{command['client_address']}:{command['client_port']}" == address
                if not last_was_ours:
                    continue
                if line == "ECHO start " + marker:
                    started = True
                elif line == "ECHO end " + marker:
                    break
                elif started:
                    ours.append(line)
    finally:
        await store.close()
        await client.aclose()
        await watcher.aclose()
        drop_redis_prefix(prefix)
    assert names(exact) == ["d", "a", "f"] and names(walked) == ["e", "f", "a"]
    sent = [line.split()[0].upper() for line in ours if not line.startswith("lua ")]
    assert sent == ["EVALSHA", "EVALSHA"], ours
    ran = [line.split()[1].upper() for line in ours if line.startswith("lua ")]
    assert "ZREVRANGEBYSCORE" in ran and "ZRANGEBYSCORE" in ran and "HMGET" in ran, ran
    assert not {"SCAN", "KEYS", "ZSCAN", "HSCAN", "SSCAN"} & set(ran), ran
