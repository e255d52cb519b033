"""The vector-index contract, run against Qdrant Edge, qdrant-client (local mode), Redis's
query engine (a server the tests start: tests/redis_stack.py) and, when QDRANT_URL names
one, a real Qdrant server.

Every backend must filter by tenant inside the adapter, keep superseded and deleted
memories out of search, honour visibility, and fuse dense with lexical results.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from typing import Any
from collections.abc import Iterator

import pytest
from qdrant_edge import SparseVector

from gateway.config import EdgeVectorsConfig, QdrantVectorsConfig, RedisVectorsConfig, VectorsConfig
from gateway.errors import ConfigError
from gateway.memory.backends import open_vector_index, prepare
from gateway.memory.edge_index import FREQUENCIES_FILE, LAYOUT, LAYOUT_FILE, EdgeIndex
from gateway.memory.lexical import Lexicon
from gateway.memory.qdrant_index import QdrantIndex
from gateway.memory.ranking import CONTEXT_TERM_WEIGHT
from gateway.memory.redis_index import RedisIndex
from gateway.memory.vector_index import IndexedMemory, IndexMismatch, IndexQuery, RecallCounts
from tests.redis_stack import redis_stack  # noqa: F401  (the fixture, for the redis kind)

LEXICON = Lexicon()


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def memory(memory_id: str, subject: str, text: str, *, status: str = "active", visibility: str = "private",
           dense: list[float] | None = None) -> IndexedMemory:
    lexical = LEXICON.index_text(text, "")
    fields = {"text": text, "status": status, "visibility": visibility, "importance": 50, "created_at": 1.0,
              "seen_count": 0, "terms": lexical.terms, "context_terms": lexical.context_terms}
    return IndexedMemory(memory_id, subject, fields, lexical.vector, dense)


def query(subject: str, text: str, **kwargs: Any) -> IndexQuery:
    return IndexQuery(subject, LEXICON.query_vector(text), **kwargs)


# The server-backed kinds' settings for the running test (its own Redis index or Qdrant
# collection, set by the ``kind`` fixture, which drops it afterwards).
_server_configs: dict[str, Any] = {}


async def open_index(kind: str, path: Any, dims: int | None) -> Any:
    if kind == "edge":
        return EdgeIndex(str(path / "edge"), dims)
    if kind == "redis":
        index: Any = RedisIndex(_server_configs["redis"], dims)
    else:
        config = _server_configs["qdrant-server"] if kind == "qdrant-server" else QdrantVectorsConfig(
            location=":memory:")
        index = QdrantIndex(config, dims)
    await index.open()
    return index


def qdrant_server_config() -> QdrantVectorsConfig:
    """A collection of its own on the Qdrant server QDRANT_URL names (QDRANT_API_KEY if it needs one)."""
    url = os.environ.get("QDRANT_URL")
    if not url:
        pytest.skip("QDRANT_URL is not set: the contract suite runs against a real Qdrant server only when it "
                    "names one (e.g. QDRANT_URL=http://127.0.0.1:6333)")
    return QdrantVectorsConfig.model_validate({"url": url, "api_key": os.environ.get("QDRANT_API_KEY") or None,
                                               "collection": f"mnx_test_{secrets.token_hex(6)}"})


async def drop_qdrant_collection(config: QdrantVectorsConfig) -> None:
    from qdrant_client import AsyncQdrantClient

    client = AsyncQdrantClient(url=config.url, api_key=config.api_key.get_secret_value() if config.api_key else None)
    await client.delete_collection(config.collection)
    await client.close()


async def drop_redis_index(config: RedisVectorsConfig) -> None:
    index = RedisIndex(config, None)
    await index.drop()
    await index.close()


def redis_index_config(url: str) -> RedisVectorsConfig:
    name = f"mnx_test_{secrets.token_hex(6)}"
    return RedisVectorsConfig(url=url, key_prefix=f"mnxtest:{name}:", index=name)


@pytest.fixture
def redis_index(redis_stack) -> Iterator[RedisVectorsConfig]:  # noqa: F811  (the imported fixture)
    """A Redis index of this test's own on the query-engine server, dropped afterwards."""
    config = redis_index_config(redis_stack)
    yield config
    run(drop_redis_index(config))


@pytest.fixture(params=["edge", "qdrant-local", "redis", "qdrant-server"])
def kind(request) -> Iterator[str]:
    if request.param == "redis":
        config: Any = request.getfixturevalue("redis_index")  # dropped by that fixture
        _server_configs["redis"] = config
        yield "redis"
    elif request.param == "qdrant-server":
        config = qdrant_server_config()
        _server_configs["qdrant-server"] = config
        yield "qdrant-server"
        run(drop_qdrant_collection(config))
    else:
        yield request.param


def ids(hits: list[Any]) -> list[str]:
    return [hit.memory_id for hit in hits]


def test_search_is_filtered_by_project_subject_and_status(kind, tmp_path):
    async def scenario() -> None:
        index = await open_index(kind, tmp_path, None)
        await index.upsert("p1", [memory("m1", "alice", "Alice likes green tea"),
                                  memory("m2", "bob", "Bob likes green tea"),
                                  memory("m3", "alice", "Alice used to like green tea", status="superseded")])
        await index.upsert("p2", [memory("m1", "alice", "Another project's green tea")])
        hits = await index.search("p1", query("alice", "green tea"))
        assert ids(hits) == ["m1"]
        assert hits[0].fields["text"] == "Alice likes green tea"
        assert ids(await index.search("p2", query("alice", "green tea"))) == ["m1"]
        assert (await index.search("p2", query("alice", "green tea")))[0].fields["text"].startswith("Another")
        assert await index.count("p1") == 3 and await index.count("p1", "alice") == 2
        with pytest.raises(ValueError):
            await index.search("", query("alice", "green tea"))
        await index.close()

    run(scenario())


def test_shared_memories_reach_the_whole_project_but_not_versioning(kind, tmp_path):
    async def scenario() -> None:
        index = await open_index(kind, tmp_path, None)
        await index.upsert("p", [memory("team", "alice", "The office wifi password is kumquat", visibility="shared"),
                                 memory("own", "alice", "Alice's wifi at home is slow")])
        assert ids(await index.search("p", query("bob", "wifi password"))) == ["team"]
        # Versioning compares a subject's own memories only.
        assert ids(await index.search("p", query("bob", "wifi password", include_shared=False))) == []
        await index.close()

    run(scenario())


def test_status_changes_and_subject_erasure(kind, tmp_path):
    async def scenario() -> None:
        index = await open_index(kind, tmp_path, None)
        await index.upsert("p", [memory("m1", "alice", "Favorite fruit is blueberry"),
                                 memory("m2", "carol", "Favorite fruit is mango")])
        fields = {"text": "Favorite fruit is blueberry", "visibility": "private", "created_at": 1.0}
        await index.update_fields("p", "alice", "m1", {**fields, "status": "superseded", "seen_count": 0})
        assert ids(await index.search("p", query("alice", "favorite fruit"))) == []
        await index.update_fields("p", "alice", "m1", {**fields, "status": "active", "seen_count": 3})
        hits = await index.search("p", query("alice", "favorite fruit"))
        assert ids(hits) == ["m1"] and hits[0].fields["seen_count"] == 3
        await index.delete_subject("p", "alice")
        assert await index.count("p", "alice") == 0
        assert ids(await index.search("p", query("carol", "favorite fruit"))) == ["m2"]
        await index.close()

    run(scenario())


def test_dense_vectors_find_what_shares_no_word(kind, tmp_path):
    async def scenario() -> None:
        index = await open_index(kind, tmp_path, 3)
        await index.upsert("p", [memory("veg", "a", "Vegetarian, loves Italian cuisine", dense=[1.0, 0.0, 0.0]),
                                 memory("job", "a", "Works as a nurse", dense=[0.0, 1.0, 0.0])])
        hits = await index.search("p", query("a", "food preferences", dense=[0.9, 0.1, 0.0]))
        assert ids(hits) == ["veg", "job"]
        # The cosine similarity to the query comes with each hit, fused or dense-only.
        assert [hit.similarity for hit in hits] == pytest.approx([0.9 / 0.82 ** 0.5, 0.1 / 0.82 ** 0.5], abs=1e-4)
        dense_only = await index.search("p", IndexQuery("a", LEXICON.query_vector("the"), dense=[0.0, 2.0, 0.0]))
        assert ids(dense_only)[0] == "job" and dense_only[0].similarity == pytest.approx(1.0, abs=1e-4)
        await index.close()

    run(scenario())


def test_a_lexical_update_replaces_words_and_fields_but_keeps_the_dense_vector(kind, tmp_path):
    async def scenario() -> None:
        index = await open_index(kind, tmp_path, 3)
        await index.upsert("p", [memory("trip", "a", "Visited Kyoto in spring", dense=[1.0, 0.0, 0.0]),
                                 memory("pet", "a", "Has a cat named Miso", dense=[0.0, 1.0, 0.0])])
        assert ids(await index.search("p", query("a", "sister"))) == []
        # What Memories does when the next memory arrives: the earlier one gets its words as context.
        rewritten = LEXICON.index_text("Visited Kyoto in spring", "", "Went there with my sister")
        fields = {"text": "Visited Kyoto in spring", "status": "active", "visibility": "private", "importance": 50,
                  "created_at": 1.0, "seen_count": 4, "context_terms": rewritten.context_terms}
        await index.update_lexical("p", "a", "trip", rewritten.vector, fields)
        hits = await index.search("p", query("a", "sister"))
        assert ids(hits) == ["trip"] and hits[0].fields["seen_count"] == 4
        assert ids(await index.search("p", query("a", "Kyoto"))) == ["trip"]  # its own words stay
        dense_only = await index.search("p", IndexQuery("a", LEXICON.query_vector("the"), dense=[0.9, 0.1, 0.0]))
        assert ids(dense_only)[0] == "trip"
        await index.close()

    run(scenario())


def test_a_query_terms_weight_counts_as_much_as_it_says(kind, tmp_path):
    """Conversation context enters the lexical query at a lower weight (ranking.CONTEXT_TERM_WEIGHT):
    two context words must not outweigh the question's own word. Unweighted, the memory holding
    both context words would win (two matches against one)."""
    async def scenario() -> None:
        index = await open_index(kind, tmp_path, None)
        await index.upsert("p", [memory("louvre", "ann", "Paris Louvre"), memory("berlin", "ann", "Berlin")])
        question, context = LEXICON.query_vector("berlin"), LEXICON.query_vector("paris louvre")
        weights = {**dict.fromkeys(context.indices, CONTEXT_TERM_WEIGHT), **dict.fromkeys(question.indices, 1.0)}
        terms = sorted(weights)
        weighted = SparseVector(terms, [weights[term] for term in terms])
        assert ids(await index.search("p", IndexQuery("ann", weighted))) == ["berlin", "louvre"]
        even = SparseVector(terms, [1.0] * len(terms))
        assert ids(await index.search("p", IndexQuery("ann", even))) == ["louvre", "berlin"]
        await index.close()

    run(scenario())


def test_edge_index_survives_a_restart_and_checks_its_dimensions(tmp_path):
    async def scenario() -> None:
        index = EdgeIndex(str(tmp_path / "idx"), None)
        await index.upsert("p", [memory("m1", "alice", "Alice keeps bees")])
        await index.close()
        reopened = EdgeIndex(str(tmp_path / "idx"), None)
        assert ids(await reopened.search("p", query("alice", "bees"))) == ["m1"]
        await reopened.close()
        with pytest.raises(IndexMismatch, match="without dense vectors"):
            EdgeIndex(str(tmp_path / "idx"), 384)

    run(scenario())


def test_a_visibility_change_moves_a_memory_between_readers(kind, tmp_path):
    async def scenario() -> None:
        index = await open_index(kind, tmp_path, None)
        await index.upsert("p", [memory("wifi", "alice", "The office wifi password is kumquat")])
        assert ids(await index.search("p", query("bob", "wifi password"))) == []
        shared = {**memory("wifi", "alice", "The office wifi password is kumquat").fields, "visibility": "shared"}
        await index.update_fields("p", "alice", "wifi", shared)
        assert ids(await index.search("p", query("bob", "wifi password"))) == ["wifi"]
        assert ids(await index.search("p", query("alice", "kumquat"))) == ["wifi"]
        assert ids(await index.search("p", query("alice", "kumquat", include_shared=False))) == ["wifi"]
        await index.update_fields("p", "alice", "wifi", {**shared, "visibility": "private", "seen_count": 2})
        assert ids(await index.search("p", query("bob", "wifi password"))) == []
        hits = await index.search("p", query("alice", "wifi password"))
        assert ids(hits) == ["wifi"] and hits[0].fields["seen_count"] == 2
        await index.close()

    run(scenario())


def test_a_word_the_whole_project_uses_weighs_less_than_a_rare_one(tmp_path):
    """The embedded index posts each subject's words apart, yet weighs a query word by how
    many of the project's memories hold it: other subjects' coffee makes Alice's coffee
    memory a weaker match than her Kenya one (alone, the shorter coffee one would win).
    Another project's words change nothing; erasing the coffee drinkers restores the order."""
    async def scenario() -> None:
        index = EdgeIndex(str(tmp_path / "idx"), None)
        alice = [memory("coffee", "alice", "Coffee daily"), memory("kenya", "alice", "A long trip to Kenya last year")]
        await index.upsert("p", alice)
        assert ids(await index.search("p", query("alice", "coffee kenya"))) == ["coffee", "kenya"]
        await index.upsert("other", [memory(f"k{i}", "zed", f"Kenya safari number {i}") for i in range(20)])
        assert ids(await index.search("p", query("alice", "coffee kenya"))) == ["coffee", "kenya"]
        await index.upsert("p", [memory(f"c{i}", f"drinker{i}", f"Drinks coffee with oat milk {i}") for i in range(20)])
        assert ids(await index.search("p", query("alice", "coffee kenya"))) == ["kenya", "coffee"]
        for i in range(20):
            await index.delete_subject("p", f"drinker{i}")
        assert ids(await index.search("p", query("alice", "coffee kenya"))) == ["coffee", "kenya"]
        await index.close()

    run(scenario())


def test_word_counts_survive_a_restart_and_are_recounted_after_a_crash(tmp_path):
    async def scenario() -> None:
        path = tmp_path / "idx"
        index = EdgeIndex(str(path), None)
        await index.upsert("p", [memory("coffee", "alice", "Coffee daily"),
                                 memory("kenya", "alice", "A long trip to Kenya last year"),
                                 *[memory(f"c{i}", f"d{i}", f"Drinks coffee {i}") for i in range(20)]])
        async def ranking(opened: EdgeIndex) -> tuple[list[str], list[float]]:
            hits = await opened.search("p", query("alice", "coffee kenya"))
            return ids(hits), [hit.rank_score for hit in hits]

        order, scores = await ranking(index)
        assert order == ["kenya", "coffee"]
        await index.close()
        assert (path / FREQUENCIES_FILE).exists()
        reopened = EdgeIndex(str(path), None)
        # Read and removed: a process that dies from here on leaves no stale counts behind.
        assert not (path / FREQUENCIES_FILE).exists()
        assert (await ranking(reopened))[0] == order
        assert (await ranking(reopened))[1] == pytest.approx(scores)
        await reopened.close()
        (path / FREQUENCIES_FILE).unlink()  # as a crash leaves it
        recounted = EdgeIndex(str(path), None)
        assert (await ranking(recounted))[0] == order
        assert (await ranking(recounted))[1] == pytest.approx(scores)
        await recounted.close()

    run(scenario())


def write_old_index(path: Any, layout: str) -> None:
    """An index as an earlier gateway wrote it, with UUID point ids: ``shared-postings`` (no
    layout file: the engine's IDF, every subject's words in one set of postings) or
    ``uuid-ids`` (per-reader postings and the gateway's IDF)."""
    from qdrant_edge import (EdgeConfig, EdgeShard, EdgeSparseVectorParams, KeywordIndexParams, Memory, Modifier,
                             PayloadSchemaType, Point, UpdateOperation)

    from gateway.memory.lexical_postings import posted
    from gateway.memory.vector_index import SPARSE, packed_payload, point_id

    modifier = Modifier.Idf if layout == "shared-postings" else None
    old = EdgeShard.create(str(path), EdgeConfig(
        sparse_vectors={SPARSE: EdgeSparseVectorParams(modifier=modifier)}, payload_memory=Memory.Pinned))
    old.update(UpdateOperation.create_field_index("project", KeywordIndexParams(is_tenant=True)))
    old.update(UpdateOperation.create_field_index("access", PayloadSchemaType.Keyword))
    written = [memory("bees", "alice", "Alice keeps bees"),
               memory("team", "alice", "The office wifi password is kumquat", visibility="shared")]
    old.update(UpdateOperation.upsert_points([
        Point(point_id("p", m.memory_id),
              {SPARSE: m.sparse if layout == "shared-postings" else posted("p", m.subject_id, m.fields, m.sparse)},
              packed_payload("p", m.subject_id, m.memory_id, m.fields))
        for m in written]))
    old.flush()
    old.close()
    if layout == "uuid-ids":
        (path / LAYOUT_FILE).write_text(json.dumps({"postings": "per-reader", "idf": "gateway"}))


@pytest.mark.parametrize("interrupted", [False, True])
@pytest.mark.parametrize("layout", ["shared-postings", "uuid-ids"])
def test_an_index_written_with_an_older_layout_is_migrated_on_open(tmp_path, layout, interrupted):
    path = tmp_path / "idx"
    write_old_index(path, layout)
    if interrupted:  # a migration that died between retiring the old index and putting the new one in place
        path.rename(tmp_path / "idx.retired")
        (tmp_path / "idx.migrating").mkdir()

    async def scenario() -> None:
        index = EdgeIndex(str(path), None)
        assert ids(await index.search("p", query("alice", "bees"))) == ["bees"]
        assert ids(await index.search("p", query("bob", "wifi password"))) == ["team"]
        assert ids(await index.search("p", query("bob", "bees"))) == []
        assert await index.count("p") == 2
        # A migrated memory is found again by its id: rewriting it replaces its point.
        await index.upsert("p", [memory("bees", "alice", "Alice keeps wasps now")])
        await index.update_fields("p", "alice", "team", memory("team", "alice", "The office wifi password is kumquat",
                                                              status="superseded").fields)
        assert await index.count("p") == 2
        assert ids(await index.search("p", query("alice", "wasps"))) == ["bees"]
        assert ids(await index.search("p", query("alice", "bees"))) == []
        assert ids(await index.search("p", query("bob", "wifi password"))) == []
        await index.close()

    run(scenario())
    assert json.loads((path / LAYOUT_FILE).read_text()) == {**LAYOUT, "lexical": "contextual"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_an_edge_index_keeps_the_kind_of_lexical_vectors_it_was_built_with(tmp_path):
    plain, older = tmp_path / "plain", tmp_path / "older"

    async def scenario() -> None:
        index = EdgeIndex(str(plain), None, "plain")
        await index.upsert("p", [memory("m1", "alice", "Alice keeps bees")])
        await index.close()
        # Opening it for the other kind would mix two kinds of vectors in one ranking: refused,
        # naming the setting, and the index is left as it was.
        with pytest.raises(ConfigError, match="^memory.vectors.lexical: the memory index at .* holds plain BM25 "
                                              "vectors but memory.vectors.lexical is contextual; use a new index path"):
            open_vector_index(VectorsConfig(edge=EdgeVectorsConfig(path=str(plain)), lexical="contextual"), None)
        reopened = EdgeIndex(str(plain), None, "plain")
        assert ids(await reopened.search("p", query("alice", "bees"))) == ["m1"]
        await reopened.close()
        # An index from before the setting existed holds contextual vectors, and says so from then on.
        older_index = EdgeIndex(str(older), None)
        await older_index.close()
        (older / LAYOUT_FILE).write_text(json.dumps(LAYOUT))
        with pytest.raises(IndexMismatch, match="holds contextual BM25 vectors but memory.vectors.lexical is plain"):
            EdgeIndex(str(older), None, "plain")
        await EdgeIndex(str(older), None, "contextual").close()
        assert json.loads((older / LAYOUT_FILE).read_text()) == {**LAYOUT, "lexical": "contextual"}

    run(scenario())


def test_qdrant_collection_checks_its_dimensions(tmp_path):
    async def scenario() -> None:
        config = QdrantVectorsConfig(location=str(tmp_path / "local"))
        index = QdrantIndex(config, 8)
        await index.open()
        await index.close()
        mismatched = QdrantIndex(config, 16)
        with pytest.raises(IndexMismatch, match="8-dimensional"):
            await mismatched.open()
        await mismatched.close()

    run(scenario())


def test_a_qdrant_collection_keeps_the_kind_of_lexical_vectors_it_was_built_with(tmp_path):
    config = QdrantVectorsConfig(location=str(tmp_path / "local"))

    async def scenario() -> None:
        plain = QdrantIndex(config, None, "plain")
        await plain.open()
        await plain.upsert("p", [memory("m1", "alice", "Alice keeps bees")])
        await plain.close()
        default = open_vector_index(VectorsConfig(backend="qdrant", qdrant=config), None)
        with pytest.raises(ConfigError, match="^memory.vectors.lexical: the Qdrant collection 'mnx_memories' holds "
                                              "plain BM25 vectors but memory.vectors.lexical is contextual"):
            await prepare(default)
        await default.close()
        reopened = QdrantIndex(config, None, "plain")
        await reopened.open()
        assert ids(await reopened.search("p", query("alice", "bees"))) == ["m1"]
        await reopened.close()

    run(scenario())


def test_touched_recall_counts_are_what_search_reads_and_survive_other_updates(kind, tmp_path):
    async def scenario() -> None:
        index = await open_index(kind, tmp_path, None)
        await index.upsert("p", [memory("m1", "alice", "Favorite fruit is blueberry"),
                                 memory("m2", "alice", "Favorite tea is green")])
        await index.touch("p", [RecallCounts("m1", 4, 500.0), RecallCounts("gone", 1, 500.0)])  # "gone": skipped
        hits = {hit.memory_id: hit.fields for hit in await index.search("p", query("alice", "favorite fruit tea"))}
        assert (hits["m1"]["seen_count"], hits["m1"]["last_seen_at"]) == (4, 500.0)
        assert (hits["m2"]["seen_count"], hits["m2"].get("last_seen_at")) == (0, None)
        # A change of its other fields (a status flip and back) leaves the counts as touched.
        fields = dict(memory("m1", "alice", "Favorite fruit is blueberry").fields)
        await index.update_fields("p", "alice", "m1", {**fields, "importance": 90})
        [hit] = [h for h in await index.search("p", query("alice", "blueberry")) if h.memory_id == "m1"]
        assert (hit.fields["importance"], hit.fields["seen_count"], hit.fields["last_seen_at"]) == (90, 4, 500.0)
        # Another project's memory of the same id is not touched.
        await index.upsert("q", [memory("m1", "alice", "Favorite fruit is blueberry")])
        [other] = await index.search("q", query("alice", "blueberry"))
        assert other.fields["seen_count"] == 0
        await index.close()

    run(scenario())


def test_rewriting_an_edge_point_keeps_its_touched_counts(tmp_path):
    """A re-index (upsert of the whole point) must not drop the counts recalls have set since."""
    async def scenario() -> None:
        index = EdgeIndex(str(tmp_path / "edge"), None)
        await index.upsert("p", [memory("m1", "alice", "Favorite fruit is blueberry")])
        await index.touch("p", [RecallCounts("m1", 7, 900.0)])
        await index.upsert("p", [memory("m1", "alice", "Favorite fruit is blueberry")])
        [hit] = await index.search("p", query("alice", "blueberry"))
        assert (hit.fields["seen_count"], hit.fields["last_seen_at"]) == (7, 900.0)
        await index.close()

    run(scenario())


def test_an_edge_index_reopens_with_the_configured_search_threads(tmp_path):
    """An index built with a search pool per CPU (as before the setting) opens with the gateway's
    setting, and everything in it is still found."""
    async def scenario() -> None:
        index = EdgeIndex(str(tmp_path / "idx"), None, search_threads=4)
        await index.upsert("p", [memory("m1", "alice", "Favorite fruit is blueberry")])
        await index.close()
        stored = json.loads((tmp_path / "idx" / "edge_config.json").read_text())
        assert stored["max_search_threads"] == 4
        reopened = EdgeIndex(str(tmp_path / "idx"), None)
        assert ids(await reopened.search("p", query("alice", "blueberry"))) == ["m1"]
        await reopened.close()
        assert json.loads((tmp_path / "idx" / "edge_config.json").read_text())["max_search_threads"] == 1

    run(scenario())


# Ids and words a caller controls, with everything the Redis query language (and a Qdrant
# filter) could read as syntax: tag braces and separators, field names, negation, wildcards,
# quotes, escapes; and one naming another project outright.
HOSTILE = ['p} | @project:{*', "-alice*", '"bob" OR *', "x\\\\ @access:{a|b}", "%fuzzy%", "p2 | alice"]


def test_hostile_ids_and_words_neither_break_nor_widen_a_search(kind, tmp_path):
    async def scenario() -> None:
        index = await open_index(kind, tmp_path, None)
        await index.upsert("p2", [memory("m", "alice", "Alice keeps bees in the garden")])
        for i, name in enumerate(HOSTILE):
            await index.upsert(name, [memory(f"m{i}", name, f"{name} keeps bees in the garden"),
                                      memory(f"s{i}", "carol", "Shared garden rota", visibility="shared")])
        for i, name in enumerate(HOSTILE):
            assert ids(await index.search(name, query(name, "bees garden"))) == [f"m{i}", f"s{i}"]
            # The query's own words may be anything: they match words, never syntax.
            assert ids(await index.search(name, query(name, f"{name} bees | * @project:{{p2}} -garden"))) == [
                f"m{i}", f"s{i}"]
            assert ids(await index.search(name, query("alice", "bees garden"))) == [f"s{i}"]
            assert await index.count(name) == 2 and await index.count(name, name) == 1
        assert ids(await index.search("p2", query("alice", "bees garden p2"))) == ["m"]
        # Erasing a hostile subject removes its memory only, in its own project only.
        await index.delete_subject(HOSTILE[0], HOSTILE[0])
        assert await index.count(HOSTILE[0]) == 1 and await index.count(HOSTILE[0], HOSTILE[0]) == 0
        assert [await index.count(name) for name in HOSTILE[1:]] == [2] * (len(HOSTILE) - 1)
        assert await index.count("p2") == 1
        await index.close()

    run(scenario())


def test_a_redis_index_weighs_a_project_wide_word_less_than_a_rare_one(redis_index):
    """As the embedded index does (test_a_word_the_whole_project_uses_weighs_less_than_a_rare_one):
    each term's token carries its project's salt, so Redis's BM25 counts a word's documents in
    the asker's project only."""
    config = redis_index

    async def scenario() -> None:
        index = RedisIndex(config, None)
        await index.open()
        alice = [memory("coffee", "alice", "Coffee daily"), memory("kenya", "alice", "A long trip to Kenya last year")]
        await index.upsert("p", alice)
        assert ids(await index.search("p", query("alice", "coffee kenya"))) == ["coffee", "kenya"]
        await index.upsert("other", [memory(f"k{i}", "zed", f"Kenya safari number {i}") for i in range(20)])
        assert ids(await index.search("p", query("alice", "coffee kenya"))) == ["coffee", "kenya"]
        await index.upsert("p", [memory(f"c{i}", f"drinker{i}", f"Drinks coffee with oat milk {i}") for i in range(20)])
        assert ids(await index.search("p", query("alice", "coffee kenya"))) == ["kenya", "coffee"]
        # (Unlike the embedded index's test, no erasure here: RediSearch counts a deleted memory's
        # words out only when its garbage collector runs, and before late 2025 never took its
        # length out of the average; see docs/architecture.md.)
        await index.close()

    run(scenario())


def test_dropping_a_redis_index_whose_prefix_has_pattern_characters_leaves_other_keys(redis_stack):  # noqa: F811
    """drop() finds the index's keys by their prefix: a * or ? in it is matched as itself."""
    config = redis_index_config(redis_stack).model_copy(update={"key_prefix": f"mnxtest:{secrets.token_hex(4)}*?:"})
    bystander = config.key_prefix.replace("*?", "ab") + "f:someone-elses"

    async def scenario() -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_stack)
        await client.set(bystander, "keep me")
        index = RedisIndex(config, None)
        await index.open()
        await index.upsert("p", [memory("m1", "ann", "Ann keeps bees")])
        await index.drop()
        await index.close()
        assert await client.get(bystander) == b"keep me"
        assert [key async for key in client.scan_iter(match=f"{config.key_prefix[:-3]}*")] == [bystander.encode()]
        await client.delete(bystander)
        await client.aclose()

    run(scenario())


def test_a_redis_index_checks_its_dimensions_and_lexicon(redis_index):
    config = redis_index

    async def scenario() -> None:
        index = RedisIndex(config, 8)
        await index.open()
        await index.upsert("p", [memory("m1", "alice", "Alice keeps bees", dense=[1.0] * 8)])
        await index.close()
        for dims, message in ((16, "holds 8-dimensional vectors but memory.embedder gives 16"),
                              (None, "holds 8-dimensional dense vectors but no embedder is configured")):
            mismatched = RedisIndex(config, dims)
            with pytest.raises(IndexMismatch, match=message):
                await mismatched.open()
            await mismatched.close()
        # Through the registry, the error names the setting, as for the other backends.
        plain = open_vector_index(VectorsConfig(backend="redis", redis=config, lexical="plain"), 8)
        with pytest.raises(ConfigError, match="^memory.vectors.lexical: the Redis index 'mnx_test_.*' holds "
                                              "contextual BM25 vectors but memory.vectors.lexical is plain"):
            await prepare(plain)
        await plain.close()
        reopened = RedisIndex(config, 8)
        await reopened.open()
        assert ids(await reopened.search("p", query("alice", "bees"))) == ["m1"]
        await reopened.close()

    run(scenario())


def test_a_redis_index_left_without_its_record_by_a_crash_is_adopted_only_if_empty_and_ours(redis_index):
    """A gateway killed between FT.CREATE and writing the index's record: the next start would wait
    for a record that never comes. It takes over an index that is exactly its own and empty, and
    still refuses one that holds points (their lexical kind is unknown) or has another schema."""
    config = redis_index

    async def forget_record() -> None:
        index = RedisIndex(config, 8)
        await index._client.delete(index._meta)
        await index.close()

    async def scenario() -> None:
        first = RedisIndex(config, 8)
        await first.open()
        await first.close()
        await forget_record()
        other_size = RedisIndex(config, 16)  # empty, but built for another embedder
        with pytest.raises(IndexMismatch, match="exists but was not created by the gateway"):
            await other_size.open()
        await other_size.close()
        adopted = RedisIndex(config, 8)
        await adopted.open()  # no IndexMismatch: it was ours and empty
        await adopted.upsert("p", [memory("m1", "alice", "Alice keeps bees", dense=[1.0] * 8)])
        assert ids(await adopted.search("p", query("alice", "bees"))) == ["m1"]
        await adopted.close()
        await forget_record()
        for dims in (8, 16):  # it now holds a point: not adopted, whatever the size asked
            holding = RedisIndex(config, dims)
            with pytest.raises(IndexMismatch, match="exists but was not created by the gateway"):
                await holding.open()
            await holding.close()

    run(scenario())


def test_gateways_starting_together_share_one_redis_index(redis_index):
    """Three gateways opening the same Redis index at once: one creates it, the others find it
    (even before its record is written), and what one writes the others find."""
    config = redis_index

    async def scenario() -> None:
        indexes = [RedisIndex(config, 3) for _ in range(3)]
        await asyncio.gather(*(index.open() for index in indexes))
        await indexes[0].upsert("p", [memory("m1", "alice", "Alice keeps bees", dense=[1.0, 0.0, 0.0])])
        for index in indexes[1:]:
            assert ids(await index.search("p", query("alice", "bees", dense=[1.0, 0.0, 0.0]))) == ["m1"]
        for index in indexes:
            await index.close()

    run(scenario())


def test_recalls_and_field_updates_leave_redis_scores_as_they_were(redis_index):
    """A recall touches its memories' counts, and ranking rewrites their fields, all the time:
    neither may re-index a point, or Redis's BM25 statistics would drift with every recall
    (each replaced document stays in them until the engine's garbage collector runs)."""
    config = redis_index

    async def scenario() -> None:
        index = RedisIndex(config, None)
        await index.open()
        await index.upsert("p", [memory("tea", "alice", "Green tea every morning"),
                                 memory("trip", "alice", "A long trip to Kenya for tea last year"),
                                 *[memory(f"n{i}", f"s{i}", f"Note number {i} about tea") for i in range(5)]])

        async def scores() -> dict[str, float]:
            return {hit.memory_id: hit.rank_score for hit in await index.search("p", query("alice", "tea kenya"))}

        before = await scores()
        for seen in range(1, 30):
            await index.touch("p", [RecallCounts("tea", seen, 1000.0 + seen), RecallCounts("trip", seen, 1.0)])
            await index.update_fields("p", "alice", "tea", {**memory("tea", "alice", "Green tea every morning").fields,
                                                            "importance": seen})
        assert await scores() == pytest.approx(before)
        [tea] = [hit for hit in await index.search("p", query("alice", "green tea")) if hit.memory_id == "tea"]
        assert (tea.fields["importance"], tea.fields["seen_count"], tea.fields["last_seen_at"]) == (29, 29, 1029.0)
        await index.close()

    run(scenario())


def test_a_hybrid_search_keeps_the_best_lexical_match_first():
    """The dense leg reorders what follows BM25's best match but cannot push it down: a hit the
    dense leg ranks first and BM25 second still comes after BM25's first, even when the dense
    leg did not find that one at all (bench/locomo: letting it do so lost top-1 accuracy)."""
    from gateway.memory.vector_index import fused

    ranked = fused([("bm25", ["exact words", "same topic"]),
                    ("dense", ["same topic", "paraphrase", "unrelated"])], 3)
    assert [hit for hit, _ in ranked] == ["exact words", "same topic", "paraphrase"]


def test_redis_fuses_its_two_legs_as_qdrant_does(redis_index):
    """A hit first in both the lexical and the dense ranking scores what Qdrant's weighted RRF
    gives it (1 / ((p + 1) / w + k - 1) summed over the legs), and one found by a single leg less."""
    from gateway.memory.vector_index import FUSION_K, LEG_WEIGHTS, fused

    def rrf(position: int, leg: str) -> float:
        return 1 / ((position + 1) / LEG_WEIGHTS[leg] + FUSION_K - 1)

    # "a" first lexically only, "b" second lexically and first by vector, "c" second by vector only.
    expected = {"a": rrf(0, "bm25"), "b": rrf(1, "bm25") + rrf(0, "dense"), "c": rrf(1, "dense")}
    best_two = sorted(expected, key=lambda hit: -expected[hit])[:2]
    assert fused([("bm25", ["a", "b"]), ("dense", ["b", "c"])], 2) == [
        (hit, pytest.approx(expected[hit])) for hit in best_two]
    config = redis_index

    async def scenario() -> None:
        index = RedisIndex(config, 3)
        await index.open()
        await index.upsert("p", [memory("veg", "a", "Vegetarian, loves Italian cuisine", dense=[1.0, 0.0, 0.0]),
                                 memory("job", "a", "Works as a nurse", dense=[0.0, 1.0, 0.0]),
                                 memory("pet", "a", "Has a vegetarian cat", dense=[0.0, 0.0, 1.0])])
        hits = await index.search("p", query("a", "vegetarian cuisine", dense=[0.9, 0.1, 0.0]))

        # Lexically veg then pet; by vector veg, job, pet.
        assert ids(hits) == ["veg", "pet", "job"]
        assert [hit.rank_score for hit in hits] == pytest.approx([
            rrf(0, "bm25") + rrf(0, "dense"), rrf(1, "bm25") + rrf(2, "dense"), rrf(1, "dense")])
        await index.close()

    run(scenario())
