"""``mnx-gateway reindex`` (issue 22 item 4): the memory index rebuilt from the store into a new
index (another lexical kind, another embedder, or a lost index), while the gateway keeps serving
from its old one.

* after the switch, search answers exactly as an index built from the start with the new
  settings does, on each store backend, and record search finds the records too;
* a run that fails part-way (the embedding model went away) resumes from its checkpoint:
  nothing is embedded twice and no point is written twice;
* memories written, edited, deleted or erased while it runs, and after it, are as they should
  be once it has been run again at the switch;
* progress lines on stderr; bad arguments or a target it must not write to exit 2, naming why.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from gateway.cli import main
from gateway.config import parse_config
from gateway.memory.edge_index import EdgeIndex
from tests.conftest import KEY, drop_redis_prefix, edge_memory, serve_gateway, wait_until
from tests.fake_upstream import ServerThread
from tests.redis_stack import redis_stack  # noqa: F401  (the fixture)
from tests.word_hash_embedder import DIMENSIONS, NAME, embed_calls, install_word_hash_embedder

PROJECT = "project-a"
SUBJECTS = ("ada", "bo")
PLACES = ["Lisbon", "Oslo", "Kyoto", "Lima", "Nairobi", "Quebec", "Tbilisi", "Hanoi", "Cusco", "Bergen", "Accra",
          "Perth", "Tallinn", "Bogota", "Porto", "Dakar", "Osaka", "Cork", "Riga", "Fez"]
THINGS = ["violin", "kayak", "telescope", "sourdough", "chess", "pottery", "orchids", "marathons", "origami",
          "beekeeping", "fencing", "calligraphy", "sailing", "juggling", "knitting", "birding", "judo", "harp",
          "climbing", "tango"]
QUERIES = ["violin Lisbon", "kayak trip", "telescope", "sourdough bread", "chess club", "pottery Kyoto",
           "orchids", "marathon training", "origami", "bees", "where does the user live", "Nairobi"]
WORD_HASH = {"provider": NAME, "model": "word-hash", "dimensions": DIMENSIONS}


def facts(subject: str) -> list[tuple[str, str]]:
    """(memory id, text): twenty distinct facts of the subject."""
    return [(f"m-{subject}-{i:02d}", f"{subject.title()} took up {THINGS[i]} while living in "
             f"{PLACES[(i * 3 + len(subject)) % 20]} in {2000 + i}") for i in range(20)]


def ingest(gateway: Any) -> None:
    """The same writes on every gateway: facts, a shared one, a supersede and a delete per subject."""
    with gateway.rest() as rest:
        for subject in SUBJECTS:
            for memory_id, text in facts(subject):
                answer = rest.post("/memories", json={"subject_id": subject, "id": memory_id, "text": text,
                                                      "no_supersede": True})
                assert answer.status_code == 201, answer.text
            replaced = rest.post("/memories", json={"subject_id": subject, "id": f"m-{subject}-new",
                                                    "text": f"{subject.title()} gave up chess for good",
                                                    "no_supersede": True, "supersedes": f"m-{subject}-04"})
            assert replaced.status_code == 201, replaced.text
            assert rest.delete(f"/memories/m-{subject}-07").json()["deleted"] is True
        shared = rest.post("/memories", json={"subject_id": "ada", "id": "m-shared", "visibility": "shared",
                                              "no_supersede": True, "text": "The office orchids need water on Fridays"})
        assert shared.status_code == 201, shared.text


def searches(gateway: Any) -> dict[tuple[str, str], list[tuple[str, float]]]:
    results = {}
    with gateway.rest() as rest:
        for subject in SUBJECTS:
            for query in QUERIES:
                answer = rest.get("/memories/search", params={"subject_id": subject, "q": query, "limit": 50,
                                                              "min_score": 0})
                assert answer.status_code == 200, answer.text
                results[(subject, query)] = [(hit["id"], hit["score"]) for hit in answer.json()["data"]]
    return results


def scored(hits: list[tuple[str, float]]) -> dict[str, float]:
    return {memory_id: round(score, 3) for memory_id, score in hits}


def write_config(path: Path, storage: dict[str, Any], memory: dict[str, Any]) -> Path:
    data = {"storage": storage, "memory": memory,
            "projects": [{"id": PROJECT, "keys": [{"name": "main", "key": KEY, "scopes": ["*"]}]},
                         {"id": "project-b", "keys": [{"name": "main", "key": "mnx_live_reindex_b", "scopes": ["*"]}]}]}
    parse_config(data)  # valid as written
    path.write_text(yaml.safe_dump(data))
    return path


def reindex(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(["reindex", "--config", str(config), *extra])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def servers():
    started: list[ServerThread] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def word_hash(tmp_path, monkeypatch) -> Path:
    """The word-hash embedder installed; returns the file its calls are logged to."""
    return install_word_hash_embedder(tmp_path, monkeypatch)


def start(provider, storage, tmp_path_factory, servers, memory) -> Any:
    return serve_gateway(provider, storage, tmp_path_factory, servers, memory=memory)


def stop(gateway_servers: list[ServerThread], index: int) -> None:
    gateway_servers[index].stop()


TARGETS: dict[str, dict[str, Any]] = {
    "plain-lexical": {"lexical": "plain"},
    "new-embedder": {"lexical": "contextual", "embedder": WORD_HASH},
}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_after_the_switch_search_answers_as_a_fresh_index_does(target, storage, provider, tmp_path,
                                                                tmp_path_factory, servers, word_hash, capsys,
                                                                request):
    settings = TARGETS[target]
    old_memory = edge_memory(tmp_path / "index-old")
    old = start(provider, storage, tmp_path_factory, servers, old_memory)
    ingest(old)
    new_memory = {"vectors": {**edge_memory(tmp_path / "index-new")["vectors"], "lexical": settings["lexical"]},
                  **({"embedder": settings["embedder"]} if "embedder" in settings else {})}
    config = write_config(tmp_path / "new.yaml", storage, new_memory)

    # Built beside the running gateway, which still serves from its old index.
    status, out, err = reindex(config, capsys, "--batch", "7")
    assert status == 0, err
    memories = 2 * 21 + 1
    assert f"reindexed {memories} memories and 0 records" in out
    assert f"reindex build: {memories}/{memories} documents (100%)" in err
    assert "reindex catch-up:" in err
    if "embedder" in settings:
        calls = embed_calls(word_hash)
        # A batch per call, the deleted memories left out (no search can reach them).
        assert sum(calls) == memories - 2 and max(calls) <= 7 and len(calls) >= 6
    assert searches(old)  # the old gateway answered throughout

    # The switch: the gateway stops, the command runs once more (nothing changed: nothing to embed).
    stop(servers, 0)
    word_hash.unlink(missing_ok=True)
    status, out, err = reindex(config, capsys)
    assert status == 0, err
    assert "(0 texts embedded by this run" in out
    assert embed_calls(word_hash) == []
    switched = start(provider, storage, tmp_path_factory, servers, new_memory)

    fresh_storage = ({"backend": "sqlite", "sqlite": {"path": str(tmp_path / "fresh.db")}}
                     if storage["backend"] == "sqlite" else
                     {**storage, "redis": {**storage["redis"], "key_prefix": f"mnxtest:{secrets.token_hex(6)}:"}})
    if storage["backend"] == "redis":
        request.addfinalizer(lambda: drop_redis_prefix(fresh_storage["redis"]["key_prefix"]))
    fresh_memory = {**new_memory,
                    "vectors": {**new_memory["vectors"], **edge_memory(tmp_path / "index-fresh")["vectors"]}}
    fresh = start(provider, fresh_storage, tmp_path_factory, servers, fresh_memory)
    ingest(fresh)

    reindexed, expected = searches(switched), searches(fresh)
    for key, hits in expected.items():
        # The same hits with the same scores (each hit's cosine or share of the query's words).
        # Their order is the fused rank of each leg's ranking, and a leg ranks points of equal
        # score in the order they were written (one at a time here, a batch at a time there),
        # so the order is compared only through the top hit of distinctive queries below.
        assert scored(reindexed[key]) == scored(hits), key
    # Every active memory is found by its own words, as in the fresh index; the superseded and
    # deleted ones are not found.
    with switched.rest() as rest, fresh.rest() as fresh_rest:
        for subject in SUBJECTS:
            for memory_id, text in facts(subject):
                params = {"subject_id": subject, "q": text, "limit": 50, "min_score": 0}
                found = [(hit["id"], hit["score"])
                         for hit in rest.get("/memories/search", params=params).json()["data"]]
                assert scored(found) == scored([(hit["id"], hit["score"]) for hit in fresh_rest.get(
                    "/memories/search", params=params).json()["data"]])
                if memory_id.endswith(("-04", "-07")):
                    assert memory_id not in scored(found)
                else:
                    assert memory_id in scored(found[:3]), (memory_id, found)


def test_record_search_finds_the_records_after_the_switch(storage_sqlite, provider, tmp_path, tmp_path_factory,
                                                          servers, capsys):
    old = start(provider, storage_sqlite, tmp_path_factory, servers, edge_memory(tmp_path / "index-old"))
    with old.rest() as rest:
        schema = rest.post("/records/schemas", json={"type_name": "ticket", "fields": {"title": "string"}})
        assert schema.status_code in (200, 201), schema.text
        for number in range(5):
            made = rest.post("/records/ticket", json={"owner_id": "ada", "data": {
                "title": f"Printer {number} jams on {PLACES[number]} paper"}})
            assert made.status_code == 201, made.text
    config = write_config(tmp_path / "new.yaml", storage_sqlite,
                          {"vectors": {**edge_memory(tmp_path / "index-new")["vectors"], "lexical": "plain"}})
    stop(servers, 0)
    status, out, err = reindex(config, capsys)
    assert status == 0, err
    assert "and 5 records" in out
    switched = start(provider, storage_sqlite, tmp_path_factory, servers,
                     {"vectors": {**edge_memory(tmp_path / "index-new")["vectors"], "lexical": "plain"}})
    with switched.rest() as rest:
        found = rest.post("/records/ticket/search", json={"query": "printer Oslo"})
        assert found.status_code == 200, found.text
        assert "Printer 1 jams on Oslo paper" in found.text


def test_an_interrupted_run_resumes_without_embedding_or_writing_anything_twice(storage_sqlite, provider, tmp_path,
                                                                               tmp_path_factory, servers, word_hash,
                                                                               monkeypatch, capsys):
    old = start(provider, storage_sqlite, tmp_path_factory, servers, edge_memory(tmp_path / "index-old"))
    ingest(old)
    stop(servers, 0)
    new_memory = {"vectors": edge_memory(tmp_path / "index-new")["vectors"], "embedder": WORD_HASH}
    config = write_config(tmp_path / "new.yaml", storage_sqlite, new_memory)

    monkeypatch.setenv("MNX_TEST_EMBED_FAIL_AFTER", "3")
    status, out, err = reindex(config, capsys, "--batch", "5")
    assert status == 1
    assert "reindex stopped: EmbeddingModelDown: the embedding model is unreachable" in err
    assert "run it again to resume" in err
    first = embed_calls(word_hash)
    assert len(first) == 3 and max(first) == 5  # three batches of five (less a deleted memory)

    monkeypatch.delenv("MNX_TEST_EMBED_FAIL_AFTER")
    status, out, err = reindex(config, capsys, "--batch", "5")
    assert status == 0, err
    embeddable = 2 * 21 + 1 - 2  # the two deleted memories get no vector
    # The three batches done are not embedded again.
    assert sum(embed_calls(word_hash)) == embeddable
    assert f"{embeddable - sum(first)} texts embedded by this run" in out

    index = EdgeIndex(str(tmp_path / "index-new"), DIMENSIONS, "contextual")
    try:
        assert asyncio.run(index.count(PROJECT)) == 2 * 21 + 1  # one point per memory, whatever its status
    finally:
        asyncio.run(index.close())
    switched = start(provider, storage_sqlite, tmp_path_factory, servers, new_memory)
    with switched.rest() as rest:
        for subject in SUBJECTS:
            for memory_id, text in facts(subject)[:3]:
                found = rest.get("/memories/search", params={"subject_id": subject, "q": text, "limit": 3}).json()
                # Among the top three: a neighbour lends its words (contextual), so may tie or lead.
                assert found["engine"] == "hybrid" and memory_id in [hit["id"] for hit in found["data"]]


def test_a_killed_run_resumes_and_embeds_at_most_the_batch_it_was_in_again(storage_sqlite, provider, tmp_path,
                                                                          tmp_path_factory, servers, word_hash):
    old = start(provider, storage_sqlite, tmp_path_factory, servers, edge_memory(tmp_path / "index-old"))
    ingest(old)
    stop(servers, 0)
    new_memory = {"vectors": edge_memory(tmp_path / "index-new")["vectors"], "embedder": WORD_HASH}
    config = write_config(tmp_path / "new.yaml", storage_sqlite, new_memory)
    # The command as an operator runs it, killed (SIGKILL: no cleanup) after its third model call.
    env = {**os.environ, "MNX_TEST_EMBED_DELAY": "0.2",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(Path(__file__).resolve().parents[1])])}
    process = subprocess.Popen([sys.executable, "-m", "gateway", "reindex", "--config", str(config), "--batch", "4"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: len(embed_calls(word_hash)) >= 3, timeout=60)
    finally:
        process.kill()
        process.wait()
    before = sum(embed_calls(word_hash))

    assert main(["reindex", "--config", str(config), "--batch", "4"]) == 0
    embeddable = 2 * 21 + 1 - 2
    again = sum(embed_calls(word_hash)) - embeddable  # texts embedded by both runs
    assert 0 <= again <= 4, (before, embed_calls(word_hash))
    index = EdgeIndex(str(tmp_path / "index-new"), DIMENSIONS, "contextual")
    try:
        assert asyncio.run(index.count(PROJECT)) == 2 * 21 + 1
    finally:
        asyncio.run(index.close())


def test_what_is_written_while_it_runs_and_before_the_switch_is_there_after_it(storage, provider, tmp_path,
                                                                              tmp_path_factory, servers, word_hash,
                                                                              capsys):
    old = start(provider, storage, tmp_path_factory, servers, edge_memory(tmp_path / "index-old"))
    ingest(old)
    with old.rest() as rest:
        for number in range(30):
            rest.post("/memories", json={"subject_id": "cy", "text": f"Cy note {number} about {THINGS[number % 10]}",
                                         "no_supersede": True})
    new_memory = {"vectors": {**edge_memory(tmp_path / "index-new")["vectors"], "lexical": "plain"},
                  "embedder": WORD_HASH}
    config = write_config(tmp_path / "new.yaml", storage, new_memory)

    # While the rebuild runs, a batch at a time, the old gateway keeps taking writes.
    finished: list[int] = []
    runner = threading.Thread(target=lambda: finished.append(main(["reindex", "--config", str(config),
                                                                   "--batch", "2"])))
    runner.start()
    with old.rest() as rest:
        during = rest.post("/memories", json={"subject_id": "bo", "text": "Bo adopted a greyhound named Comet",
                                              "no_supersede": True}).json()["id"]
        assert rest.patch("/memories/m-ada-01", json={"text": "Ada took up the cello in Reykjavik"}).status_code == 200
        assert rest.delete("/memories/m-ada-02").json()["deleted"] is True
        assert rest.delete("/subjects/cy").status_code in (200, 202, 204)
        runner.join(timeout=120)
        assert finished == [0]
        # After the run, before the switch.
        rest.post("/memories", json={"subject_id": "ada", "text": "Ada bought a sailboat called Petrel",
                                     "no_supersede": True})
        for number in range(3):  # the erased subject comes back with new memories
            rest.post("/memories", json={"subject_id": "cy", "text": f"Cy fresh start {number} with hiking",
                                         "no_supersede": True})

    stop(servers, 0)
    status, out, err = reindex(config, capsys)
    assert status == 0, err
    switched = start(provider, storage, tmp_path_factory, servers, new_memory)
    with switched.rest() as rest:
        def top(subject: str, query: str) -> list[str]:
            return [hit["text"] for hit in rest.get("/memories/search", params={
                "subject_id": subject, "q": query, "limit": 5}).json()["data"]]

        assert top("bo", "greyhound Comet")[0] == "Bo adopted a greyhound named Comet"
        assert top("ada", "sailboat Petrel")[0] == "Ada bought a sailboat called Petrel"
        assert top("ada", "cello Reykjavik")[0] == "Ada took up the cello in Reykjavik"
        assert facts("ada")[1][1] not in top("ada", facts("ada")[1][1])  # m-ada-01's old text
        assert facts("ada")[2][1] not in top("ada", facts("ada")[2][1])  # deleted
        # Of the erased subject's memories only the three written since are found.
        found = [hit["text"] for hit in rest.get("/memories/search", params={
            "subject_id": "cy", "q": "Cy note fresh start hiking about", "limit": 50}).json()["data"]]
        assert sorted(found) == [f"Cy fresh start {number} with hiking" for number in range(3)]
    assert during


def test_bad_arguments_and_forbidden_targets_exit_2_naming_why(storage_sqlite, provider, tmp_path, tmp_path_factory,
                                                              servers, capsys):
    old_memory = edge_memory(tmp_path / "index-old")
    config = write_config(tmp_path / "new.yaml", storage_sqlite, {"vectors": {
        **edge_memory(tmp_path / "index-new")["vectors"], "lexical": "plain"}})
    for arguments, message in [(["--batch", "0"], "--batch: must be between 1 and 4096, not 0"),
                               (["--batch", "many"], "--batch: not a whole number: 'many'"),
                               (["--sideways"], "unrecognized arguments: --sideways")]:
        with pytest.raises(SystemExit) as exit_:
            main(["reindex", "--config", str(config), *arguments])
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err

    status, _, err = reindex(tmp_path / "missing.yaml", capsys)
    assert status == 2 and "missing.yaml" in err

    old = start(provider, storage_sqlite, tmp_path_factory, servers, old_memory)
    ingest(old)
    live = write_config(tmp_path / "live.yaml", storage_sqlite, old_memory)
    # The index the running gateway serves from: Qdrant Edge's lock says so.
    status, _, err = reindex(live, capsys)
    assert status == 2 and "another gateway process holds" in err
    stop(servers, 0)
    # Stopped, it is still an index reindex did not build: never written into.
    status, _, err = reindex(live, capsys)
    assert status == 2 and "already holds" in err and "not built by reindex" in err

    # A checkpoint belongs to one target.
    assert reindex(config, capsys)[0] == 0
    other = write_config(tmp_path / "other.yaml", storage_sqlite, {"vectors": {
        **edge_memory(tmp_path / "index-other")["vectors"], "lexical": "plain"}})
    status, _, err = reindex(other, capsys, "--checkpoint", str(tmp_path / "index-new" / "reindex_checkpoint.sqlite3"))
    assert status == 2 and "is for another index" in err
    # A checkpoint whose index was removed since would resume into nothing.
    kept = str(tmp_path / "kept-checkpoint.sqlite3")
    assert reindex(other, capsys, "--checkpoint", kept)[0] == 0
    shutil.rmtree(tmp_path / "index-other")
    status, _, err = reindex(other, capsys, "--checkpoint", kept)
    assert status == 2 and "but the index holds none" in err


def test_into_a_qdrant_collection(storage_sqlite, provider, tmp_path, tmp_path_factory, servers, capsys):
    """qdrant-client's local mode (a directory, one process at a time) stands in for a server."""
    old = start(provider, storage_sqlite, tmp_path_factory, servers, edge_memory(tmp_path / "index-old"))
    ingest(old)
    stop(servers, 0)
    new_memory = {"vectors": {"backend": "qdrant", "lexical": "plain",
                              "qdrant": {"location": str(tmp_path / "qdrant"), "collection": "mnx_memories_v2"}}}
    config = write_config(tmp_path / "new.yaml", storage_sqlite, new_memory)
    status, out, err = reindex(config, capsys, "--checkpoint", str(tmp_path / "checkpoint.sqlite3"))
    assert status == 0, err
    assert "into mnx_memories_v2" in out
    switched = start(provider, storage_sqlite, tmp_path_factory, servers, new_memory)
    with switched.rest() as rest:
        for subject in SUBJECTS:
            memory_id, text = facts(subject)[9]
            found = rest.get("/memories/search", params={"subject_id": subject, "q": text, "limit": 3}).json()
            assert found["data"][0]["id"] == memory_id


def test_on_redis_it_builds_beside_running_gateways(redis_stack, provider, tmp_path,  # noqa: F811
                                                    tmp_path_factory, servers, capsys):
    prefix = f"mnxtest:{secrets.token_hex(6)}:"
    storage = {"backend": "redis", "redis": {"url": redis_stack, "key_prefix": prefix}}

    def vectors(name: str) -> dict[str, Any]:
        return {"vectors": {"backend": "redis", "redis": {"url": redis_stack, "key_prefix": f"{prefix}{name}:",
                                                          "index": f"mnx_test_{name}_{prefix[8:20]}"}}}

    client = redis.Redis.from_url(redis_stack)
    try:
        old = start(provider, storage, tmp_path_factory, servers, vectors("old"))
        ingest(old)
        new_memory = {**vectors("new"), "vectors": {**vectors("new")["vectors"], "lexical": "plain"}}
        config = write_config(tmp_path / "new.yaml", storage, new_memory)
        status, out, err = reindex(config, capsys, "--checkpoint", str(tmp_path / "checkpoint.sqlite3"))
        assert status == 0, err
        # The switch on a shared backend: gateways start on the new config (here beside the old
        # one, still taking writes), and the command runs once more.
        switched = start(provider, storage, tmp_path_factory, servers, new_memory)
        with old.rest() as rest:
            rest.post("/memories", json={"subject_id": "bo", "text": "Bo adopted a greyhound named Comet",
                                         "no_supersede": True})
        status, out, err = reindex(config, capsys, "--checkpoint", str(tmp_path / "checkpoint.sqlite3"))
        assert status == 0, err
        with switched.rest() as rest:
            hits = rest.get("/memories/search", params={"subject_id": "bo", "q": "greyhound", "limit": 3}).json()
            assert hits["data"][0]["text"] == "Bo adopted a greyhound named Comet"
            hits = rest.get("/memories/search", params={"subject_id": "ada", "q": facts("ada")[9][1]}).json()
            assert hits["data"][0]["id"] == "m-ada-09"
    finally:
        for name in ("old", "new"):
            try:
                client.execute_command("FT.DROPINDEX", f"mnx_test_{name}_{prefix[8:20]}", "DD")
            except redis.ResponseError:
                pass
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()

