"""Hybrid search with a provider embedding model through LiteLLM (the provider faked)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.services import Services
from tests.conftest import KEY, PROVIDER_KEY, edge_memory, wait_until
from tests.fake_upstream import EMBEDDING_DIMENSIONS

SUBJECT = "diner"


def hybrid_memory(path) -> dict:
    return {**edge_memory(path), "embedder": {"provider": "litellm", "model": "text-embedding-3-small",
                                              "dimensions": EMBEDDING_DIMENSIONS}}


@pytest.fixture
def hybrid(start_gateway, storage_sqlite, tmp_path):
    return start_gateway(storage_sqlite, memory=hybrid_memory(tmp_path / "index"))


def test_dense_search_finds_what_shares_no_word_with_the_callers_own_key(hybrid):
    with hybrid.rest() as rest:
        byok = {"x-openai-key": PROVIDER_KEY}
        created = rest.post("/memories", headers=byok,
                            json={"subject_id": SUBJECT, "text": "User is vegetarian and enjoys Italian cuisine"})
        assert created.status_code == 201
        rest.post("/memories", headers=byok, json={"subject_id": SUBJECT, "text": "User works as a nurse"})
        embedding_calls = [r for r in hybrid.forwarded() if r["path"].endswith("/embeddings")]
        assert embedding_calls[0]["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"
        assert embedding_calls[0]["body"]["input"] == ["User is vegetarian and enjoys Italian cuisine"]
        found = rest.get("/memories/search", headers=byok, params={"subject_id": SUBJECT, "q": "food preferences"})
        body = found.json()
        assert body["engine"] == "hybrid"
        assert body["data"][0]["id"] == created.json()["id"] and body["data"][0]["score"] > 0.3

        # A new text is embedded again: the dense vector follows the text.
        memory_id = created.json()["id"]
        assert rest.patch(f"/memories/{memory_id}", headers=byok, json={"text": "User works night shifts"}).json()[
            "updated"] is True
        embedding_calls = [r for r in hybrid.forwarded() if r["path"].endswith("/embeddings")]
        assert embedding_calls[-1]["body"]["input"] == ["User works night shifts"]
        found = rest.get("/memories/search", headers=byok, params={"subject_id": SUBJECT, "q": "food preferences"})
        assert memory_id not in [hit["id"] for hit in found.json()["data"] if hit["score"] > 0.3]


def test_without_a_key_for_the_embedding_model_nothing_is_stored(hybrid):
    with hybrid.rest() as rest:
        refused = rest.post("/memories", json={"subject_id": SUBJECT, "text": "User keeps bees"})
        assert refused.status_code == 400 and refused.json()["error"] == "openai_key_required"
        assert rest.get("/memories", params={"subject_id": SUBJECT}).json()["count"] == 0


def test_a_failing_embedding_model_is_a_clean_upstream_error(start_gateway, storage_sqlite, tmp_path):
    memory = hybrid_memory(tmp_path / "index")
    memory["embedder"]["model"] = "fail-503"
    gateway = start_gateway(storage_sqlite, memory=memory)
    with gateway.rest() as rest:
        failed = rest.post("/memories", headers={"x-openai-key": PROVIDER_KEY},
                           json={"subject_id": SUBJECT, "text": "User keeps bees"})
        assert failed.status_code == 503 and failed.json()["error"] == "upstream_error"
        assert rest.get("/memories", params={"subject_id": SUBJECT}).json()["count"] == 0


def test_an_index_built_for_another_model_fails_at_startup(provider, storage_sqlite, tmp_path):
    def config(memory: dict):
        return parse_config({"storage": storage_sqlite, "memory": memory,
                             "projects": [{"id": "p", "keys": [{"key": "mnx_live_k"}]}],
                             "providers": {"openai": {"api_base": provider.url + "/v1"}}})

    # The index is created without dense vectors by a BM25-only gateway...
    asyncio.run(Services.build(config(edge_memory(tmp_path / "index"))).aclose())
    # ...so a gateway configured with an embedding model refuses to start on it.
    with pytest.raises(ConfigError, match="created without dense vectors"):
        Services.build(config(hybrid_memory(tmp_path / "index")))
    with pytest.raises(ConfigError, match="dimensions is required"):
        Services.build(config({**edge_memory(tmp_path / "other"),
                               "embedder": {"provider": "litellm", "model": "text-embedding-3-small"}}))
    with pytest.raises(ConfigError, match=r"memory.embedder.provider: no embedder named 'word2vec' \(known: "):
        Services.build(config({**edge_memory(tmp_path / "other"), "embedder": {"provider": "word2vec",
                                                                                "model": "x"}}))


def test_learning_and_recall_use_the_callers_key_and_recall_degrades_without_one(hybrid):
    with httpx.Client(timeout=30) as client:
        answer = client.post(hybrid.url + "/v1/chat/completions", headers={
            "x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY}, json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "I am vegetarian and love pasta"}],
            "mnx": {"subject_id": SUBJECT, "learn": True}})
        assert answer.status_code == 200
        with hybrid.rest() as rest:
            assert wait_until(lambda: rest.get("/memories", params={"subject_id": SUBJECT}).json()["count"] == 1)
        embedded = [r for r in hybrid.forwarded() if r["path"].endswith("/embeddings")]
        assert embedded[-1]["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"

        # A Claude request carries no OpenAI key: recall still works, lexically.
        calls = len([r for r in hybrid.forwarded() if r["path"].endswith("/embeddings")])
        claude = client.post(hybrid.url + "/v1/chat/completions", headers={
            "x-mnexium-key": KEY, "x-anthropic-key": "sk-ant-caller"}, json={
            "model": "claude-gateway-test", "messages": [{"role": "user", "content": "Suggest a pasta dish"}],
            "mnx": {"subject_id": SUBJECT, "recall": True, "learn": False}})
        assert claude.status_code == 200
        assert "User is vegetarian and love pasta" in json.dumps(hybrid.forwarded()[-1]["body"])
        assert len([r for r in hybrid.forwarded() if r["path"].endswith("/embeddings")]) == calls


def test_a_fact_stated_again_word_for_word_is_a_duplicate_without_paying_for_an_embedding(hybrid):
    """Case, spacing and a final full stop aside, the same words are the same memory: it is
    reinforced, and neither the embedding model nor a search is needed to know it. After an
    edit the old words no longer match it."""
    with hybrid.rest() as rest:
        byok = {"x-openai-key": PROVIDER_KEY}
        first = rest.post("/memories", headers=byok, json={"subject_id": SUBJECT, "text": "User keeps bees"}).json()
        embedded = len([r for r in hybrid.forwarded() if r["path"].endswith("/embeddings")])
        again = rest.post("/memories", headers=byok, json={"subject_id": SUBJECT, "text": "  user KEEPS bees. "})
        assert again.status_code == 200, again.text
        assert (again.json()["skipped"], again.json()["duplicate_of"]) == (True, first["id"])
        assert len([r for r in hybrid.forwarded() if r["path"].endswith("/embeddings")]) == embedded
        assert rest.get(f"/memories/{first['id']}").json()["data"]["reinforcement_count"] == 1
        # Another subject's identical words are that subject's own memory.
        other = rest.post("/memories", headers=byok, json={"subject_id": "someone-else", "text": "User keeps bees"})
        assert other.status_code == 201
        # Edited, the memory is found by its new words only.
        rest.patch(f"/memories/{first['id']}", headers=byok, json={"text": "User keeps wasps"})
        stated = rest.post("/memories", headers=byok, json={"subject_id": SUBJECT, "text": "User keeps wasps"})
        assert stated.json().get("duplicate_of") == first["id"]
        back = rest.post("/memories", headers=byok, json={"subject_id": SUBJECT, "text": "User keeps bees"})
        assert back.status_code == 201 and back.json()["created"] is True


def test_a_paraphrase_judged_a_duplicate_once_is_known_the_next_time_without_an_embedding(hybrid):
    """The first time a differently worded fact arrives, versioning searches and compares (one
    embedding); judged a duplicate, that wording is remembered, so the same wording again is the
    same duplicate at the cost of one read. Once the memory's text is edited it no longer is."""
    def embeddings() -> int:
        return len([r for r in hybrid.forwarded() if r["path"].endswith("/embeddings")])

    with hybrid.rest() as rest:
        byok = {"x-openai-key": PROVIDER_KEY}
        first = rest.post("/memories", headers=byok, json={"subject_id": SUBJECT, "text": "User is vegetarian"}).json()
        before = embeddings()
        judged = rest.post("/memories", headers=byok, json={"subject_id": SUBJECT,
                                                            "text": "User follows a vegetarian diet"}).json()
        assert (judged["skipped"], judged["duplicate_of"]) == (True, first["id"])
        assert embeddings() == before + 1
        again = rest.post("/memories", headers=byok, json={"subject_id": SUBJECT,
                                                           "text": "user follows a  vegetarian diet."}).json()
        assert (again["skipped"], again["duplicate_of"]) == (True, first["id"])
        assert embeddings() == before + 1  # no embedding, no search
        assert rest.get(f"/memories/{first['id']}").json()["data"]["reinforcement_count"] == 2
        # Another subject's same wording is judged for that subject.
        elsewhere = rest.post("/memories", headers=byok, json={"subject_id": "someone-else",
                                                               "text": "User follows a vegetarian diet"})
        assert elsewhere.status_code == 201
        # Edited, the memory no longer says what that wording was a duplicate of.
        rest.patch(f"/memories/{first['id']}", headers=byok, json={"text": "User works night shifts"})
        after_edit = rest.post("/memories", headers=byok, json={"subject_id": SUBJECT,
                                                                "text": "User follows a vegetarian diet"}).json()
        assert after_edit.get("duplicate_of") != first["id"] and after_edit["created"] is True
