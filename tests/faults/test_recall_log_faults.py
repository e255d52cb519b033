"""What a crash, a clean stop and a store outage do to recall bookkeeping, which is written
just after the answer (gateway/memory/recall_log.py), on both backends.

The promise: a turn's recall events and counts are durable once the flush delay (5 ms) has
passed after its answer, even through SIGKILL; a clean stop writes what is still waiting; a
store outage delays them, it does not lose them (up to the log's bound).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

import httpx
import pytest

from gateway.config import parse_config
from gateway.memory.changes import NewMemory
from gateway.memory.recall_log import RecalledTurn, RecallLog
from gateway.services import Services
from tests.conftest import KEY, PROVIDER_KEY, REDIS_URL, drop_redis_prefix, edge_memory, require_redis

PROJECT = [{"id": "project-a", "keys": [{"name": "main", "key": KEY, "scopes": ["*"]}]}]


@pytest.fixture(params=["sqlite", "redis"])
def durable_storage(request, tmp_path):
    if request.param == "sqlite":
        yield {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "gateway.db")}}
        return
    require_redis()
    prefix = f"mnxtest:{secrets.token_hex(6)}:"
    yield {"backend": "redis", "redis": {"url": REDIS_URL, "key_prefix": prefix}}
    drop_redis_prefix(prefix)


def rest(url: str) -> httpx.Client:
    return httpx.Client(base_url=url + "/api/v1", headers={"x-mnexium-key": KEY}, timeout=30)


def recall_turn(url: str, chat_id: str) -> None:
    answer = httpx.post(url + "/v1/chat/completions", timeout=30,
                        headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY},
                        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Any pizza ideas?"}],
                              "mnx": {"subject_id": "ann", "chat_id": chat_id, "recall": True, "history": False,
                                      "learn": False}})
    assert answer.status_code == 200, answer.text


def recalls(url: str, memory_id: str) -> tuple[int, int]:
    """(recall events of the memory, its seen_count)."""
    with rest(url) as client:
        events = client.get("/memories/recalls", params={"memory_id": memory_id}).json()["count"]
        return events, client.get(f"/memories/{memory_id}").json()["data"]["seen_count"]


def test_recalls_survive_sigkill_after_the_flush_delay_and_a_clean_stop_at_once(
        provider, tmp_path, gateway_process, durable_storage):
    config: dict[str, Any] = {"storage": durable_storage, "projects": PROJECT,
                              "providers": {"openai": {"api_base": provider.url + "/v1"}},
                              "memory": {"vectors": {"edge": {"path": str(tmp_path / "memories")}}}}
    gateway = gateway_process(config).start()
    with rest(gateway.url) as client:
        memory_id = client.post("/memories", json={"subject_id": "ann", "text": "User loves pizza"}).json()["id"]
    for turn in range(3):
        recall_turn(gateway.url, f"chat-{turn}")
    time.sleep(0.5)  # a hundred times the flush delay
    gateway.kill()
    gateway.start()
    assert recalls(gateway.url, memory_id) == (3, 3)

    for turn in range(3, 6):
        recall_turn(gateway.url, f"chat-{turn}")
    gateway.stop()  # SIGTERM right after the last answer: the log is written on the way out
    gateway.start()
    assert recalls(gateway.url, memory_id) == (6, 6)


def test_recalls_made_while_redis_is_down_are_written_once_it_is_back(tmp_path, private_redis, caplog):
    """Turns answered, then Redis dies before the log writes them: the write fails, is retried,
    and lands once Redis is back (a Redis without persistence comes back empty, so only what the
    log still held is there then)."""
    async def scenario() -> list[str]:
        services = Services.build(parse_config({
            "storage": {"backend": "redis", "redis": {"url": private_redis.url, "key_prefix": "t:",
                                                      "socket_timeout_seconds": 0.5}},
            "memory": edge_memory(tmp_path / "index"), "projects": [{"id": "p", "keys": [{"key": "mnx_k"}]}]}))
        await services.memories.create("p", NewMemory("ann", "User loves pizza"))
        hits = (await services.memories.search("p", "ann", "pizza", limit=1))
        log = RecallLog(services.recalls, services.memories, services.erasure, flush_delay_seconds=0.3)
        now = time.time()
        log.add(RecalledTurn("p", "ann", now, now, hits, {"chat_id": "outage-chat", "message_index": 0,
                                                           "chat_logged": 0, "request_type": "chat", "model": "m",
                                                           "metadata": {}}))
        private_redis.kill()
        await asyncio.sleep(1.0)  # the write (due at 0.3 s) fails meanwhile
        private_redis.start()
        events: list[str] = []
        for _ in range(50):  # retried within RETRY_SECONDS
            await asyncio.sleep(0.1)
            try:
                events = [e["memory_text"] for e in await services.recalls.for_chat("p", "outage-chat", 10)]
            except Exception:
                continue
            if events:
                break
        await log.close()
        await services.aclose()
        return events

    with caplog.at_level(logging.ERROR, logger="gateway.memory"):
        assert asyncio.run(scenario()) == ["User loves pizza"]
    assert "writing recall events failed" in caplog.text
