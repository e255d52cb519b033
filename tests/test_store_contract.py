"""One contract for every document store: the same tests on SQLite, on real Redis and on a real
three-master Redis Cluster."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from gateway.store import codec
from gateway.store.base import Charge, Collection, Increment, Tally
from gateway.store.redis import RedisDocumentStore
from gateway.store.redis_client import is_cluster
from tests.conftest import REDIS_URL, open_test_store

NOTES = Collection("notes", indexes=(("subject_id",), ("subject_id", "chat_id")))
EPHEMERAL = Collection("ephemeral", indexes=(("subject_id",),), expiring=True)
# Another collection with an index of the same name as NOTES' (find_each across collections).
OTHER_NOTES = Collection("other_notes", indexes=(("subject_id",),))


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
async def store(request, tmp_path):
    async with open_test_store(request.param, request, tmp_path) as backend:
        yield backend


def another_gateways_store(store: RedisDocumentStore) -> RedisDocumentStore:
    """A second client on the same Redis (or cluster), as another gateway would have."""
    if is_cluster(store._redis):
        seed = next(iter(store._redis.nodes_manager.startup_nodes.values()))
        return RedisDocumentStore(f"redis://{seed.host}:{seed.port}/0", store._prefix, cluster=True)
    return RedisDocumentStore(REDIS_URL, store._prefix)


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


async def test_find_each_answers_every_filter_in_order_as_find_would(store):
    await store.put_many(NOTES, "p1", [(f"m{i}", {"subject_id": f"u{i % 3}", "chat_id": f"c{i % 2}", "i": i})
                                        for i in range(9)])
    await store.put(NOTES, "p2", "other", {"subject_id": "u0", "i": 99})  # another project: never found
    wheres = [{"subject_id": "u2"}, {"subject_id": "nobody"}, {"subject_id": "u0", "chat_id": "c1"},
              {"subject_id": "u0"}]
    found = await store.find_each("p1", [(NOTES, where) for where in wheres])
    assert [[d["i"] for d in docs] for docs in found] == [[2, 5, 8], [], [3], [0, 3, 6]]
    assert found == [await store.find(NOTES, "p1", where) for where in wheres]
    assert await store.find_each("p1", []) == []
    # A filter twice, and no filter at all (every document), answer as find does too.
    odd = [{"subject_id": "u1"}, {}, {"subject_id": "u1"}]
    assert await store.find_each("p1", [(NOTES, where) for where in odd]) == [
        await store.find(NOTES, "p1", where) for where in odd]
    assert [len(docs) for docs in await store.find_each("p1", [(NOTES, where) for where in odd])] == [3, 9, 3]


async def test_find_each_reads_several_collections_each_query_only_its_own(store):
    """The same filter in two collections (a turn reads its prompts' and memory policies' levels
    together): each query gets its own collection's documents, none of the other's."""
    await store.put_many(NOTES, "p1", [("n1", {"subject_id": "u1", "i": 1}), ("n2", {"subject_id": "u2", "i": 2})])
    await store.put_many(OTHER_NOTES, "p1", [("t1", {"subject_id": "u1", "i": 10}),
                                             ("t3", {"subject_id": "u3", "i": 30})])
    found = await store.find_each("p1", [(NOTES, {"subject_id": "u1"}), (OTHER_NOTES, {"subject_id": "u1"}),
                                         (NOTES, {"subject_id": "u3"}), (OTHER_NOTES, {"subject_id": "u3"}),
                                         (OTHER_NOTES, {"subject_id": "u2"})])
    assert [[d["i"] for d in docs] for docs in found] == [[1], [10], [], [30], []]


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


async def test_documents_put_together_expire_together_and_keep_their_order(store):
    await store.put_many(EPHEMERAL, "p1", [("b", {"subject_id": "u1", "v": 1}), ("a", {"subject_id": "u1", "v": 2})],
                         ttl_seconds=0.3)
    await store.put_many(EPHEMERAL, "p1", [("c", {"subject_id": "u1", "v": 3})], ttl_seconds=60)
    assert [d["v"] for d in await store.find(EPHEMERAL, "p1", {"subject_id": "u1"}, newest_first=True)] == [3, 2, 1]
    await asyncio.sleep(0.5)
    assert await store.get(EPHEMERAL, "p1", "a") is None and await store.get(EPHEMERAL, "p1", "b") is None
    assert [d["v"] for d in await store.find(EPHEMERAL, "p1", {"subject_id": "u1"})] == [3]


async def test_rewriting_without_ttl_makes_a_document_permanent(store):
    await store.put(EPHEMERAL, "p1", "k", {"subject_id": "u1"}, ttl_seconds=0.3)
    await store.put(EPHEMERAL, "p1", "k", {"subject_id": "u1", "kept": True})
    await asyncio.sleep(0.5)
    assert await store.get(EPHEMERAL, "p1", "k") == {"subject_id": "u1", "kept": True}


TURNS = Collection("turns", indexes=(("chat_id",), ("memory_ids",)), multi_valued=("memory_ids",))
# The same with its memory index deferred (SQLite files those entries late): nothing a caller sees differs.
DEFERRED_TURNS = Collection("deferred_turns", indexes=(("chat_id",), ("memory_ids",)), multi_valued=("memory_ids",),
                            deferred=(("memory_ids",),))
EACH_TURNS = pytest.mark.parametrize("TURNS", [TURNS, DEFERRED_TURNS], ids=["indexed", "deferred"])


@EACH_TURNS
async def test_a_multi_valued_field_finds_a_document_by_each_of_its_values(store, TURNS):
    await store.put(TURNS, "p1", "t1", {"chat_id": "c1", "memory_ids": ["m1", "m2", "m2"]})
    await store.put(TURNS, "p1", "t2", {"chat_id": "c1", "memory_ids": ["m2"]})
    assert [d["memory_ids"] for d in await store.find(TURNS, "p1", {"memory_ids": "m1"})] == [["m1", "m2", "m2"]]
    assert await store.count(TURNS, "p1", {"memory_ids": "m2"}) == 2
    newest = await store.find(TURNS, "p1", {"memory_ids": "m2"}, limit=1, newest_first=True)
    assert newest == [{"chat_id": "c1", "memory_ids": ["m2"]}]
    # Rewritten without m1: no longer found by it.
    await store.put(TURNS, "p1", "t1", {"chat_id": "c1", "memory_ids": ["m3"]})
    assert await store.find(TURNS, "p1", {"memory_ids": "m1"}) == []
    assert await store.delete_where(TURNS, "p1", {"memory_ids": "m3"}) == 1
    assert await store.count(TURNS, "p1", {"chat_id": "c1"}) == 1


async def test_a_deferred_index_sees_every_write_delete_and_expiry_in_bulk(store):
    from gateway.store.sqlite import FILE_DEFERRED_ROWS

    def memories(n: int) -> list[str]:
        return [f"m{(n + k) % 10}" for k in range(4)]

    def numbers(docs: list[dict]) -> list[int]:
        return [doc["n"] for doc in docs]

    # More entries than SQLite keeps waiting: some are filed in bulk on the way, the rest on a read.
    turns = FILE_DEFERRED_ROWS // 4 + 7
    for start in range(0, turns, 50):
        await store.put_many(DEFERRED_TURNS, "p1", [
            (f"t{n}", {"chat_id": f"c{n % 3}", "n": n, "memory_ids": memories(n)})
            for n in range(start, min(turns, start + 50))])
    with_m5 = [n for n in range(turns) if "m5" in memories(n)]
    assert await store.count(DEFERRED_TURNS, "p1", {"memory_ids": "m5"}) == len(with_m5)
    assert numbers(await store.find(DEFERRED_TURNS, "p1", {"memory_ids": "m5"}, limit=2, newest_first=True)) == [
        with_m5[-1], with_m5[-2]]
    # Deleted through another index, or one by one: gone from the deferred index too.
    assert await store.delete_where(DEFERRED_TURNS, "p1", {"chat_id": "c0"}) == len(range(0, turns, 3))
    assert await store.delete(DEFERRED_TURNS, "p1", "t1")
    left = [n for n in with_m5 if n % 3 and n != 1]
    assert numbers(await store.find(DEFERRED_TURNS, "p1", {"memory_ids": "m5"})) == left
    # And expired.
    expiring = Collection("deferred_expiring", indexes=(("memory_ids",),), multi_valued=("memory_ids",),
                          deferred=(("memory_ids",),), expiring=True)
    await store.put(expiring, "p1", "short", {"n": 1, "memory_ids": ["m0"]}, ttl_seconds=0.3)
    await store.put(expiring, "p1", "kept", {"n": 2, "memory_ids": ["m0"]})
    await asyncio.sleep(0.5)
    assert numbers(await store.find(expiring, "p1", {"memory_ids": "m0"})) == [2]


@EACH_TURNS
async def test_a_rewritten_document_is_found_by_the_values_it_kept_and_gained_and_not_by_those_it_lost(
        store, TURNS):
    await store.put(TURNS, "p1", "t1", {"chat_id": "c1", "memory_ids": ["m1", "m2"]})
    await store.put(TURNS, "p1", "t1", {"chat_id": "c2", "memory_ids": ["m2", "m3"]})
    rewritten = {"chat_id": "c2", "memory_ids": ["m2", "m3"]}
    for value, found in (("m1", []), ("m2", [rewritten]), ("m3", [rewritten])):
        assert await store.find(TURNS, "p1", {"memory_ids": value}) == found
    assert await store.find(TURNS, "p1", {"chat_id": "c1"}) == []
    assert await store.count(TURNS, "p1", {"chat_id": "c2"}) == 1
    # Rewritten with every indexed value unchanged: still found once by each.
    await store.put(TURNS, "p1", "t1", {**rewritten, "note": "counts changed"})
    assert await store.count(TURNS, "p1", {"memory_ids": "m2"}) == 1
    assert await store.find(TURNS, "p1", {"chat_id": "c2"}) == [{**rewritten, "note": "counts changed"}]


def test_a_multi_valued_field_cannot_be_part_of_a_composite_index():
    with pytest.raises(ValueError, match="on its own"):
        Collection("bad", indexes=(("memory_ids", "chat_id"),), multi_valued=("memory_ids",))


async def test_tallies_add_up_and_keep_the_latest_time(store):
    await store.increment(NOTES, "p1", [Increment("a", "seen", 100.0), Increment("a", "seen", 90.0),
                                        Increment("a", "kept", 5.0, by=3), Increment("b", "seen", 7.0)])
    await store.increment(NOTES, "p1", [Increment("a", "seen", 95.0)])
    assert await store.tallies(NOTES, "p1", ["a", "b", "never"]) == {
        "a": {"seen": Tally(3, 100.0), "kept": Tally(3, 5.0)}, "b": {"seen": Tally(1, 7.0)}}
    # Another project and another collection count on their own.
    assert await store.tallies(NOTES, "p2", ["a"]) == {}
    assert await store.tallies(EPHEMERAL, "p1", ["a"]) == {}
    await store.delete_tallies(NOTES, "p1", ["a"])
    assert await store.tallies(NOTES, "p1", ["a", "b"]) == {"b": {"seen": Tally(1, 7.0)}}
    with pytest.raises(ValueError):
        await store.increment(NOTES, "", [Increment("a", "seen", 1.0)])


async def test_documents_and_the_tallies_they_add_are_written_together_or_not_at_all(store):
    """What a batch of recall events does: the events and the counts they add in one write."""
    counted = Collection("counted", indexes=(("subject_id",),), ordered="_order")
    events = [("e1", {"subject_id": "u1", "n": 1}), ("e2", {"subject_id": "u1", "n": 2})]
    await store.put_many_and_increment(NOTES, "p1", events, counted, [Increment("m1", "seen", 10.0, by=2)])
    assert [d["n"] for d in await store.find(NOTES, "p1", {"subject_id": "u1"})] == [1, 2]
    assert await store.tallies(counted, "p1", ["m1"]) == {"m1": {"seen": Tally(2, 10.0)}}
    # Either part may be empty.
    await store.put_many_and_increment(NOTES, "p1", [], counted, [Increment("m1", "seen", 11.0)])
    await store.put_many_and_increment(NOTES, "p1", [("e3", {"subject_id": "u1", "n": 3})], counted, [])
    assert await store.tallies(counted, "p1", ["m1"]) == {"m1": {"seen": Tally(3, 11.0)}}
    assert await store.count(NOTES, "p1", {"subject_id": "u1"}) == 3
    # A document the store refuses: no event and no count is written.
    with pytest.raises(ValueError):
        await store.put_many_and_increment(counted, "p1", [("ok", {"subject_id": "u1"}),
                                                           ("bad", {"subject_id": "u1", "_order": {"n": [math.nan]}})],
                                           counted, [Increment("m1", "seen", 12.0)])
    assert await store.get(counted, "p1", "ok") is None
    assert await store.tallies(counted, "p1", ["m1"]) == {"m1": {"seen": Tally(3, 11.0)}}
    with pytest.raises(ValueError):
        await store.put_many_and_increment(NOTES, "", events, counted, [])


async def test_concurrent_increments_are_never_lost(store, tmp_path):
    """Two writers at once (on Redis: two clients, as two gateways would be): every increment counts."""
    other = store
    if isinstance(store, RedisDocumentStore):
        other = another_gateways_store(store)

    async def writer(backend, start: float) -> None:
        for i in range(50):
            await backend.increment(NOTES, "p1", [Increment("hot", "seen", start + i), Increment("cold", "seen", 1.0)])

    await asyncio.gather(writer(store, 1000.0), writer(other, 2000.0))
    if other is not store:
        await other.close()
    assert await store.tallies(NOTES, "p1", ["hot", "cold"]) == {"hot": {"seen": Tally(100, 2049.0)},
                                                                  "cold": {"seen": Tally(100, 1.0)}}


async def test_what_orjson_refuses_is_still_stored_and_read_back(store):
    """Documents are written with orjson; an integer beyond 64 bits (a client's metadata) and a
    NaN written by the standard library before orjson was used go through json instead."""
    doc = {"subject_id": "u1", "metadata": {"big": 2 ** 70, "text": "é ✓ \u2028"}, "score": 0.1 + 0.2}
    await store.put(NOTES, "p1", "big", doc)
    assert await store.get(NOTES, "p1", "big") == doc
    assert codec.decode('{"score": NaN}')["score"] != codec.decode('{"score": NaN}')["score"]  # NaN is NaN


# -- charge: counters checked and added in one atomic step (usage limits) ---------------------

async def test_charge_adds_up_to_the_limit_and_refuses_without_adding(store):
    later = time.time() + 60
    for expected in (1, 2, 3):
        charged = await store.charge("p1", [Charge("rpm", 1, 3, later)])
        assert (charged.refused, charged.counts) == (None, (expected,))
    refused = await store.charge("p1", [Charge("rpm", 1, 3, later)])
    assert (refused.refused, refused.counts) == (0, (3,))
    # A check (by=0) asks for room for one more; no limit: always added; other projects: their own.
    assert (await store.charge("p1", [Charge("rpm", 0, 3, later)])).refused == 0
    assert (await store.charge("p1", [Charge("rpm", 0, 4, later)])).refused is None
    assert (await store.charge("p1", [Charge("rpm", 10, None, later)])).counts == (13,)
    assert (await store.charge("p2", [Charge("rpm", 1, 3, later)])).counts == (1,)
    with pytest.raises(ValueError):
        await store.charge("", [Charge("rpm", 1, 3, later)])


async def test_charge_is_all_or_nothing_across_counters(store):
    later = time.time() + 60
    await store.charge("p1", [Charge("key", 2, None, later)])
    # The second counter has no room: the first is not added to either.
    charged = await store.charge("p1", [Charge("project", 1, 5, later), Charge("key", 1, 2, later)])
    assert (charged.refused, charged.counts) == (1, (0, 2))
    charged = await store.charge("p1", [Charge("project", 1, 5, later), Charge("key", 1, 3, later)])
    assert (charged.refused, charged.counts) == (None, (1, 3))


async def test_an_expired_counter_starts_again_from_zero(store):
    await store.charge("p1", [Charge("window", 2, 2, time.time() + 0.3)])
    assert (await store.charge("p1", [Charge("window", 1, 2, time.time() + 0.3)])).refused == 0
    await asyncio.sleep(0.4)
    assert (await store.charge("p1", [Charge("window", 1, 2, time.time() + 60)])).counts == (1,)


async def test_concurrent_charges_admit_exactly_the_limit(store):
    """Two writers at once (on Redis: two clients, as two gateways would be): 100 charges of 1
    against a limit of 37 are exactly 37 admissions."""
    other = store
    if isinstance(store, RedisDocumentStore):
        other = another_gateways_store(store)
    later = time.time() + 60

    async def writer(backend) -> int:
        admitted = 0
        for _ in range(50):
            charged = await backend.charge("p1", [Charge("hot", 1, 37, later), Charge("all", 1, None, later)])
            admitted += charged.refused is None
        return admitted

    results = await asyncio.gather(writer(store), writer(other))
    if other is not store:
        await other.close()
    assert sum(results) == 37
    assert (await store.charge("p1", [Charge("all", 0, None, later)])).counts == (37,)
