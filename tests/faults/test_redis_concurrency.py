"""Many turns at once against a Redis connection pool far smaller than the load.

Fault injected: connection starvation. The gateway's Redis pool is capped at 4
connections while 200 chats arrive together, each reading history and writing its turn
and a learn job through several store calls at once. A call that finds every connection
busy must wait for one (up to ``pool_timeout_seconds``) rather than fail: redis-py's
default pool raised MaxConnectionsError here, and most of the 200 answered 500. Every
chat must be answered, its turn stored exactly once, and each learn job run once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import KEY, PROVIDER_KEY, wait_until
from tests.faults.conftest import jobs_of

CHATS = 200


async def _chat_all(url: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CHATS + 10, max_keepalive_connections=CHATS + 10)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60,
                                 headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY}) as client:
        async def chat(i: int) -> httpx.Response:
            return await client.post("/v1/chat/completions", json={
                "model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"My lucky number is {i}"}],
                "mnx": {"subject_id": f"crowd-{i}", "chat_id": f"crowd-chat-{i}", "history": True, "log": True,
                        "learn": True}})
        return await asyncio.gather(*(chat(i) for i in range(CHATS)))


def test_200_concurrent_chats_on_a_4_connection_pool_are_all_answered_and_stored_once(start_gateway, storage_redis):
    storage = {**storage_redis, "redis": {**storage_redis["redis"], "max_connections": 4, "pool_timeout_seconds": 20}}
    gw = start_gateway(storage)
    responses = asyncio.run(_chat_all(gw.url))

    statuses: dict[int, int] = {}
    for response in responses:
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    assert statuses == {200: CHATS}, (statuses, [r.text for r in responses if r.status_code != 200][:3])
    assert [r.json()["choices"][0]["message"]["content"] for r in responses] == [
        f"echo: My lucky number is {i}" for i in range(CHATS)]

    with gw.rest() as rest:
        def stored(i: int) -> list[tuple[str, Any]]:
            messages = rest.get("/chat/history/read", params={"chat_id": f"crowd-chat-{i}",
                                                              "subject_id": f"crowd-{i}"}).json()["messages"]
            return [(m["role"], m["content"]) for m in messages]
        for i in range(CHATS):
            assert stored(i) == [("user", f"My lucky number is {i}"), ("assistant", f"echo: My lucky number is {i}")]

        # Each turn's learn job ran once: one memory per subject, none twice.
        assert wait_until(lambda: not jobs_of(gw.url), timeout=60)
        for i in range(CHATS):
            texts = [m["text"] for m in rest.get("/memories", params={"subject_id": f"crowd-{i}"}).json()["data"]]
            assert texts == [f"User's lucky number is {i}"], (i, texts)
