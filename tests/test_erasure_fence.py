"""The erasure fence's contract, in process, on Redis and on a Redis Cluster: a writer that began
before an erasure writes nothing after it, and the eraser waits for writers already inside."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.erasure_fence import LocalErasureFence, RedisErasureFence, SubjectErased
from gateway.store.redis_client import connect_redis
from tests.conftest import REDIS_URL, drop_redis_prefix, require_redis


@pytest.fixture(params=["local", "redis", "redis-cluster"])
async def fences(request) -> AsyncIterator[tuple[Any, Any]]:
    """Two fences as two gateways would hold them (one shared fence in process)."""
    if request.param == "local":
        fence = LocalErasureFence()
        yield fence, fence
        return
    prefix = f"mnxtest:{secrets.token_hex(6)}:"
    cluster = request.getfixturevalue("redis_cluster") if request.param == "redis-cluster" else None
    if cluster is None:
        require_redis()
    clients = [connect_redis(cluster.url, cluster=True) if cluster is not None else connect_redis(REDIS_URL)
               for _ in range(2)]
    yield RedisErasureFence(clients[0], prefix), RedisErasureFence(clients[1], prefix)
    for client in clients:
        await client.aclose()
    if cluster is not None:
        cluster.drop_prefix(prefix)
    else:
        drop_redis_prefix(prefix)


async def test_work_begun_before_an_erasure_is_refused_and_later_work_is_not(fences):
    writer_side, eraser_side = fences
    began = time.time()
    await asyncio.sleep(0.01)
    await eraser_side.mark_erased("p1", "ann")
    with pytest.raises(SubjectErased):
        await writer_side.enter("p1", "ann", began)
    assert await writer_side.erased_after("p1", "ann", began)
    # Work that began after the erasure, another subject or another project: not fenced.
    await asyncio.sleep(0.01)
    token = await writer_side.enter("p1", "ann", time.time())
    await writer_side.leave("p1", "ann", token)
    await writer_side.leave("p1", "bob", await writer_side.enter("p1", "bob", began))
    await writer_side.leave("p2", "ann", await writer_side.enter("p2", "ann", began))
    assert not await writer_side.erased_after("p2", "ann", began)


async def test_the_eraser_waits_for_a_writer_inside_until_it_leaves(fences):
    writer_side, eraser_side = fences
    token = await writer_side.enter("p1", "cy", time.time())
    await eraser_side.mark_erased("p1", "cy")
    assert not await eraser_side.wait_for_writers("p1", "cy", timeout=0.2)
    assert await eraser_side.wait_for_writers("p1", "dee", timeout=0.2)  # nobody writes dee

    async def leave_soon() -> None:
        await asyncio.sleep(0.2)
        await writer_side.leave("p1", "cy", token)
    leaving = asyncio.create_task(leave_soon())
    started = time.monotonic()
    assert await eraser_side.wait_for_writers("p1", "cy", timeout=5)
    assert 0.1 < time.monotonic() - started < 4
    await leaving


async def test_subjects_entered_together_are_each_fenced_as_if_alone(fences):
    writer_side, eraser_side = fences
    began = time.time()
    await asyncio.sleep(0.01)
    await eraser_side.mark_erased("p1", "eve")
    after = time.time() + 0.01
    # eve's work began before her erasure: refused; fay and gus (another's since) are let in.
    tokens = await writer_side.enter_many("p1", {"eve": began, "fay": began, "gus": after})
    assert set(tokens) == {"fay", "gus"}
    # Each admitted subject holds back its own erasure until the batch leaves, and only its own.
    await eraser_side.mark_erased("p1", "fay")
    assert not await eraser_side.wait_for_writers("p1", "fay", timeout=0.1)
    assert not await eraser_side.wait_for_writers("p1", "gus", timeout=0.1)
    assert await eraser_side.wait_for_writers("p1", "eve", timeout=0.1)
    await writer_side.leave_many("p1", tokens)
    assert await eraser_side.wait_for_writers("p1", "fay", timeout=0.5)
    assert await eraser_side.wait_for_writers("p1", "gus", timeout=0.5)
    assert await writer_side.enter_many("p1", {"fay": began}) == {}
    assert await writer_side.enter_many("p1", {}) == {}
