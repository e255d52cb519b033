"""Batched encodings (issue 22 item 5): the learn worker, ``POST /memories/extract`` and imports
hand the embedding model many texts per call, not one per memory, and versioning still weighs
each new memory against those stored just before it in the same batch; concurrent calls to a
local model (concurrent ``POST /memories``) share its model calls.

The embedder is tests/word_hash_embedder.py, installed as a plugin package; it logs how many
texts each call it answered carried.
"""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.cli import main
from gateway.memory.merged_calls import MergedCalls
from tests.conftest import KEY, PROVIDER_KEY, edge_memory, wait_until
from tests.word_hash_embedder import DIMENSIONS, NAME, embed_calls, install_word_hash_embedder

SUBJECT = "ada"
WORD_HASH = {"provider": NAME, "model": "word-hash", "dimensions": DIMENSIONS}


@pytest.fixture
def embed_log(tmp_path, monkeypatch) -> Path:
    return install_word_hash_embedder(tmp_path, monkeypatch)


def memory_section(index: Path) -> dict[str, Any]:
    return {**edge_memory(index), "embedder": WORD_HASH}


def active_and_superseded(rest: httpx.Client) -> tuple[list[str], list[str]]:
    active = [m["text"] for m in rest.get("/memories", params={"subject_id": SUBJECT}).json()["data"]]
    superseded = [m["text"] for m in rest.get("/memories/superseded", params={"subject_id": SUBJECT}).json()["data"]]
    return sorted(active), sorted(superseded)


def test_a_learn_job_embeds_its_memories_in_one_call_and_each_sees_the_one_before(start_gateway, storage,
                                                                                 tmp_path, embed_log):
    gateway = start_gateway(storage, memory=memory_section(tmp_path / "index"),
                            learning={"extractor": {"provider": "heuristic"}})
    turn = {"model": "gpt-4o-mini", "mnx": {"subject_id": SUBJECT, "history": False, "learn": True},
            "messages": [{"role": "user", "content": "I have a dog named Rex. I love pasta. I live in Paris. "
                                                     "Actually I live in Lyon now."}]}
    answer = httpx.post(gateway.url + "/v1/chat/completions", json=turn, timeout=30,
                        headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY})
    assert answer.status_code == 200, answer.text
    with gateway.rest() as rest:
        assert wait_until(lambda: tuple(map(len, active_and_superseded(rest))) == (3, 1), timeout=15)
        active, superseded = active_and_superseded(rest)
    # Lyon, stored after Paris in the same job, found it and replaced it.
    assert superseded == ["User lives in Paris"]
    assert active == ["User has a dog named Rex", "User lives in Lyon now", "User loves eating pasta"]
    # The job's four texts went to the model in one call (the chat's own recall embeds its query apart).
    assert 4 in embed_calls(embed_log)
    assert all(size in (1, 4) for size in embed_calls(embed_log)), embed_calls(embed_log)
    assert embed_calls(embed_log).count(4) == 1


def test_extract_and_store_embeds_the_extracted_memories_in_one_call(start_gateway, storage_sqlite, tmp_path,
                                                                     embed_log):
    gateway = start_gateway(storage_sqlite, memory=memory_section(tmp_path / "index"),
                            learning={"extractor": {"provider": "heuristic"}})
    with gateway.rest() as rest:
        stored = rest.post("/memories/extract", json={"subject_id": SUBJECT, "learn": True,
                                                      "text": "I live in Paris. Actually I live in Lyon now. "
                                                              "I have a cat named Luna."})
        assert stored.status_code == 200, stored.text
        assert stored.json()["learned_memory_count"] == 3, stored.json()
        active, superseded = active_and_superseded(rest)
    assert superseded == ["User lives in Paris"]
    assert active == ["User has a cat named Luna", "User lives in Lyon now"]
    assert embed_calls(embed_log) == [3]


def test_an_import_embeds_a_batch_of_memories_per_call(start_gateway, storage_sqlite, tmp_path, embed_log,
                                                       provider):
    source = start_gateway(storage_sqlite, memory=edge_memory(tmp_path / "source-index"))
    count = 150
    with source.rest() as rest:
        for number in range(count):
            made = rest.post("/memories", json={"subject_id": SUBJECT, "no_supersede": True,
                                                "text": f"Ada's note {number}: visit museum {number * 7919 % 1000}"})
            assert made.status_code == 201, made.text
    projects = [{"id": "project-a", "keys": [{"name": "main", "key": KEY, "scopes": ["*"]}]}]
    exported = tmp_path / "export.jsonl"
    source_config = tmp_path / "source.yaml"
    source_config.write_text(yaml.safe_dump({"storage": storage_sqlite, "projects": projects,
                                             "memory": edge_memory(tmp_path / "source-index")}))
    assert main(["export", "--config", str(source_config), "--project", "project-a", "-o", str(exported)]) == 0

    target_storage = {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "target.db")}}
    target_config = tmp_path / "target.yaml"
    target_config.write_text(yaml.safe_dump({"storage": target_storage, "projects": projects,
                                             "memory": memory_section(tmp_path / "target-index")}))
    assert main(["import", "--config", str(target_config), "--project", "project-a", str(exported)]) == 0
    calls = embed_calls(embed_log)
    assert sum(calls) == count and len(calls) == math.ceil(count / 64) and max(calls) == 64

    target = start_gateway(target_storage, memory=memory_section(tmp_path / "target-index"))
    with target.rest() as rest:
        found = rest.get("/memories/search", params={"subject_id": SUBJECT, "q": "Ada's note 123: visit museum 17",
                                                     "limit": 3}).json()
        assert found["engine"] == "hybrid"
        assert found["data"][0]["text"].startswith("Ada's note 123:")


# --- concurrent calls to a local model share model calls (gateway/memory/merged_calls.py) ----


class RecordingModel:
    """A stand-in for a local model: the vector of a text is [its length], and each call takes a
    little while on a worker thread, as an encoder's does; it keeps the size of every call."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self._fail_on = fail_on

    def encode(self, texts: list[str]) -> list[list[float]]:
        time.sleep(0.05)
        self.calls.append(texts)
        if self._fail_on in texts:
            raise RuntimeError("the model ran out of memory")
        return [[float(len(text))] for text in texts]


def test_calls_that_arrive_while_the_model_runs_share_its_next_call():
    model = RecordingModel()
    calls = MergedCalls(model.encode, max_texts=64)

    async def scenario() -> list[list[Any]]:
        first = asyncio.create_task(calls.embed(["x" * 100]))
        await asyncio.sleep(0.01)  # the model is busy with the first call now
        rest = [asyncio.create_task(calls.embed(["y" * number, "z"])) for number in range(1, 10)]
        return await asyncio.gather(first, *rest)

    answers = asyncio.run(scenario())
    assert [len(call) for call in model.calls] == [1, 18]  # one model call for the nine that waited
    assert answers[0] == [[100.0]]
    assert answers[1:] == [[[float(number)], [1.0]] for number in range(1, 10)]  # each its own vectors


def test_a_model_failure_fails_the_calls_it_carried_and_the_next_call_works():
    model = RecordingModel(fail_on="boom")
    calls = MergedCalls(model.encode)

    async def scenario() -> tuple[list[Any], list[Any]]:
        first = asyncio.create_task(calls.embed(["warm"]))
        await asyncio.sleep(0.01)
        merged = [asyncio.create_task(calls.embed([text])) for text in ("boom", "fine")]
        failed = await asyncio.gather(first, *merged, return_exceptions=True)
        return failed, await calls.embed(["later"])

    failed, later = asyncio.run(scenario())
    assert failed[0] == [[4.0]]
    assert all(isinstance(answer, RuntimeError) for answer in failed[1:])
    assert later == [[5.0]]


def test_a_caller_that_gives_up_leaves_the_others_served():
    model = RecordingModel()
    calls = MergedCalls(model.encode)

    async def scenario() -> list[Any]:
        first = asyncio.create_task(calls.embed(["first"]))
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(calls.embed(["gone"]))
        kept = asyncio.create_task(calls.embed(["kept"]))
        await asyncio.sleep(0)
        gone.cancel()
        first.cancel()  # the call the model is running: the model call goes on for the others
        return await asyncio.gather(kept)

    assert asyncio.run(scenario()) == [[[4.0]]]
    assert model.calls == [["first"], ["kept"]]


def test_concurrent_memories_on_a_local_onnx_model_are_all_stored_and_found(start_gateway, storage_sqlite,
                                                                             tmp_path):
    from tests.test_fastembed_embedder import fastembed_memory, write_model

    model_dir = write_model(tmp_path / "synonym-words")
    gateway = start_gateway(storage_sqlite, memory=fastembed_memory(tmp_path / "index", model_dir))
    texts = [f"User {number} drives an automobile" if number % 2 else f"User {number} owns a puppy"
             for number in range(16)]

    def post(number: int) -> int:
        with gateway.rest() as rest:
            return rest.post("/memories", json={"subject_id": f"s{number}", "text": texts[number]}).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert list(pool.map(post, range(16))) == [201] * 16
    with gateway.rest() as rest:
        for number in (3, 4):
            found = rest.get("/memories/search", params={"subject_id": f"s{number}",
                                                         "q": "car" if number % 2 else "dog"}).json()
            assert found["engine"] == "hybrid" and [hit["text"] for hit in found["data"]] == [texts[number]]
