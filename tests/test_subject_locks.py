"""Subject locks: writers of one subject take turns, in one process and across processes on Redis
(and on a Redis Cluster)."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from gateway.errors import GatewayError
from gateway.store.redis_client import connect_redis
from gateway.subject_locks import RedisSubjectLocks, SubjectLocks
from tests.conftest import REDIS_URL, drop_redis_prefix, require_redis


async def overlaps(holders: list[SubjectLocks], subject: str = "ann", writers: int = 12) -> int:
    """How many times a writer found another inside the same subject's section."""
    inside = 0
    seen = 0

    async def write(n: int) -> None:
        nonlocal inside, seen
        async with holders[n % len(holders)].hold("p", subject):
            inside += 1
            seen = max(seen, inside)
            await asyncio.sleep(0.005)  # a read, a decision, a write: each awaits on Redis
            inside -= 1

    await asyncio.gather(*(write(n) for n in range(writers)))
    return seen


def test_writers_in_one_process_take_turns():
    assert asyncio.run(overlaps([SubjectLocks("claims")])) == 1


@pytest.mark.parametrize("backend", ["redis", "redis-cluster"])
def test_gateways_sharing_redis_take_turns_and_other_subjects_do_not_wait(backend, request):
    cluster = request.getfixturevalue("redis_cluster") if backend == "redis-cluster" else None
    if cluster is None:
        require_redis()
    prefix = f"locks-{secrets.token_hex(4)}:"

    async def scenario() -> None:
        client = connect_redis(cluster.url, cluster=True) if cluster is not None else connect_redis(REDIS_URL)
        try:
            # Two gateways: each its own in-process locks, one Redis between them.
            gateways: list[SubjectLocks] = [RedisSubjectLocks("claims", client, prefix),
                                            RedisSubjectLocks("claims", client, prefix)]
            assert await overlaps(gateways) == 1
            # Without the Redis lease the two would overlap (what the lease is for).
            assert await overlaps([SubjectLocks("claims"), SubjectLocks("claims")]) == 2
            # A lease held elsewhere (a gateway mid-write) makes a writer wait, then refuses with 503.
            patient = RedisSubjectLocks("claims", client, prefix, wait_seconds=0.2)
            async with gateways[0].hold("p", "ann"):
                with pytest.raises(GatewayError) as busy:
                    async with patient.hold("p", "ann"):
                        pass
                assert busy.value.status == 503 and busy.value.code == "subject_busy"
                async with patient.hold("p", "bob"):  # another subject: no wait
                    pass
            # Released: the next writer gets it at once, and no lease is left behind.
            async with patient.hold("p", "ann"):
                pass
            if cluster is not None:
                assert sum(cluster.keys_per_master(prefix).values()) == 0
            else:
                assert [key async for key in client.scan_iter(match=f"{prefix}*")] == []
        finally:
            await client.aclose()

    try:
        asyncio.run(scenario())
    finally:
        if cluster is not None:
            cluster.drop_prefix(prefix)
        else:
            drop_redis_prefix(prefix)


def _two_keys_on_one_stripe() -> tuple[str, str]:
    """Two different subjects whose locks share a stripe (found by search: 64 stripes)."""
    from gateway.subject_locks import _STRIPES, _digest

    seen: dict[int, str] = {}
    for n in range(10_000):
        subject = f"s{n}"
        stripe = int.from_bytes(_digest("p", subject)[:4], "big") % _STRIPES
        if stripe in seen:
            return seen[stripe], subject
        seen[stripe] = subject
    raise AssertionError("no two subjects share a stripe")


@pytest.mark.parametrize("backend", ["local", "redis"])
def test_one_operation_may_hold_two_keys_that_share_a_stripe(backend):
    """A record type's redefinition holds the type's lock, then each record's: two keys on one
    stripe must not wait for each other (it hung a schema redefinition forever, about one in 20)."""
    first, second = _two_keys_on_one_stripe()
    prefix = f"locks-{secrets.token_hex(4)}:"

    async def scenario() -> None:
        client = connect_redis(REDIS_URL) if backend == "redis" else None
        try:
            locks = RedisSubjectLocks("records", client, prefix) if client else SubjectLocks("records")
            async with asyncio.timeout(5):
                async with locks.hold("p", first):
                    async with locks.hold("p", second):
                        pass
            # Another task still waits for the stripe while it is held.
            entered = asyncio.Event()

            async def other() -> None:
                async with locks.hold("p", second):
                    entered.set()
            async with locks.hold("p", first):
                waiting = asyncio.create_task(other())
                await asyncio.sleep(0.05)
                assert not entered.is_set()
            await asyncio.wait_for(waiting, 5)
            assert entered.is_set()
        finally:
            if client is not None:
                await client.aclose()

    if backend == "redis":
        require_redis()
    try:
        asyncio.run(scenario())
    finally:
        if backend == "redis":
            drop_redis_prefix(prefix)
