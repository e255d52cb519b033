"""One service for everything: a gateway whose store, queue and memory index are all in one
Redis with the query engine (memory.vectors.backend: redis), learning from one chat turn and
recalling in the next, lexically and, with an embedding model, by vector."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest
import redis

from tests.conftest import KEY, PROVIDER_KEY, wait_until
from tests.fake_upstream import EMBEDDING_DIMENSIONS
from tests.redis_stack import redis_stack  # noqa: F401  (the fixture)

SUBJECT = "diner"


@pytest.fixture
def one_redis(redis_stack, start_gateway):  # noqa: F811  (the imported fixture)
    prefix = f"mnxtest:{secrets.token_hex(6)}:"
    index = f"mnx_test_{secrets.token_hex(6)}"
    storage = {"backend": "redis", "redis": {"url": redis_stack, "key_prefix": prefix}}
    memory = {"vectors": {"backend": "redis", "redis": {"url": redis_stack, "key_prefix": prefix + "vectors:",
                                                        "index": index}},
              "embedder": {"provider": "litellm", "model": "text-embedding-3-small",
                           "dimensions": EMBEDDING_DIMENSIONS}}
    gateway = start_gateway(storage, memory=memory)
    client = redis.Redis.from_url(redis_stack)
    yield gateway, client, prefix
    client.execute_command("FT.DROPINDEX", index, "DD")
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def test_a_memory_learned_in_one_turn_is_recalled_in_the_next_from_redis(one_redis):
    gateway, client, prefix = one_redis
    headers = {"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY}
    with httpx.Client(timeout=30) as http, gateway.rest() as rest:
        learned = http.post(gateway.url + "/v1/chat/completions", headers=headers, json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "I am vegetarian and love pasta"}],
            "mnx": {"subject_id": SUBJECT, "learn": True}})
        assert learned.status_code == 200
        assert wait_until(lambda: rest.get("/memories", params={"subject_id": SUBJECT}).json()["count"] == 1,
                          timeout=15)
        [stored] = rest.get("/memories", params={"subject_id": SUBJECT}).json()["data"]
        # The point is in Redis's index, with its dense vector.
        [point] = list(client.scan_iter(match=prefix + "vectors:pt:*"))
        assert client.hexists(point, "dense") and client.hexists(point, "terms")

        recalled = http.post(gateway.url + "/v1/chat/completions", headers=headers, json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Suggest a pasta dish for tonight"}],
            "mnx": {"subject_id": SUBJECT, "recall": True, "learn": False}})
        assert recalled.status_code == 200
        assert stored["text"] in json.dumps(gateway.forwarded()[-1]["body"])

        byok = {"x-openai-key": PROVIDER_KEY}
        # By a word of its own...
        by_word = rest.get("/memories/search", headers=byok, params={"subject_id": SUBJECT, "q": "vegetarian"})
        assert [hit["id"] for hit in by_word.json()["data"]][:1] == [stored["id"]]
        # ...and by meaning alone: "food preferences" shares no word with it, only the vector.
        by_vector = rest.get("/memories/search", headers=byok,
                             params={"subject_id": SUBJECT, "q": "food preferences"}).json()
        assert by_vector["engine"] == "hybrid"
        assert by_vector["data"][0]["id"] == stored["id"] and by_vector["data"][0]["score"] > 0.3
        # Another subject finds none of it.
        other = rest.get("/memories/search", headers=byok, params={"subject_id": "someone-else", "q": "vegetarian"})
        assert other.json()["data"] == []
