"""The upstream transport frees a request's slot on every path, and spreads load across shards."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from gateway.proxy.sharded_transport import ShardedTransport


def chat(model: str, stream: bool = False) -> dict:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "x"}]}


async def test_slots_are_released_after_answers_streams_cancellations_and_errors(provider):
    transport = ShardedTransport(shards=4)
    url = provider.url + "/v1/chat/completions"
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        answers = await asyncio.gather(*(client.post(url, json=chat("gpt-4o-mini")) for _ in range(12)))
        assert all(a.status_code == 200 for a in answers)
        async with client.stream("POST", url, json=chat("gpt-4o-mini", stream=True)) as streamed:
            assert b"[DONE]" in b"".join([chunk async for chunk in streamed.aiter_bytes()])
        async with client.stream("POST", url, json=chat("slow-stream", stream=True)) as abandoned:
            async for _ in abandoned.aiter_bytes():
                break  # the caller walks away mid-stream
        assert (await client.post(url, json=chat("fail-503"))).status_code == 503
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(closed)
    assert transport._in_flight == [0, 0, 0, 0]


async def test_concurrent_requests_use_several_shards(provider):
    transport = ShardedTransport(shards=4)
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        await asyncio.gather(*(client.post(provider.url + "/v1/chat/completions", json=chat("sleep-0.2"))
                               for _ in range(8)))
        # Eight overlapping requests over four shards: every shard opened connections.
        assert all(len(shard._pool.connections) == 2 for shard in transport._shards)
