"""A gateway on a real three-master Redis Cluster (``storage.redis.cluster: true``), end to end.

The contract suites (store, job queue, subject locks, events, usage-limit race) also run on the
cluster through their own params; this test drives one gateway through what a user does:
chat turns with history and learning, the memories REST API, a subject's erasure and a usage
limit, with several projects, whose keys must land on more than one master.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx
import pytest
import redis

from gateway.config import parse_config
from gateway.errors import ConfigError
from tests.conftest import PROVIDER_KEY, wait_until
from tests.redis_cluster import RedisClusterServers

# Five projects, each with a key of its own: their hash tags spread over the three masters.
PROJECTS = [f"cluster-{name}" for name in ("ann", "bob", "cy", "dee", "eve")]
LIMITED = "cluster-eve"  # requests per minute: 3


def key_of(project: str) -> str:
    return f"mnx_live_test_key_{project}"


def chat(gateway: Any, project: str, text: str, subject: str, chat_id: str, **mnx: Any) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}],
            "mnx": {"subject_id": subject, "chat_id": chat_id, "history": True, "learn": True, **mnx}}
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30,
                      headers={"x-mnexium-key": key_of(project), "x-openai-key": PROVIDER_KEY})


def rest(gateway: Any, project: str) -> httpx.Client:
    return httpx.Client(base_url=gateway.api, headers={"x-mnexium-key": key_of(project)}, timeout=30)


def master_of(cluster: RedisClusterServers, key: str) -> int:
    """The port of the master serving ``key``'s slot, as the cluster itself says."""
    node = redis.Redis(port=cluster.ports[0], decode_responses=True)
    try:
        slot = int(node.execute_command("CLUSTER", "KEYSLOT", key))
        for start, end, master, *_ in node.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(master[1])
    finally:
        node.close()
    raise AssertionError(f"slot of {key!r} is served by no master")


def test_a_gateway_on_a_redis_cluster_chats_learns_erases_and_limits(start_gateway, storage_redis_cluster,
                                                                     redis_cluster):
    prefix = storage_redis_cluster["redis"]["key_prefix"]
    projects = [{"id": project, "keys": [{"name": "main", "key": key_of(project), "scopes": ["*"]}],
                 **({"limits": {"requests_per_minute": 3}} if project == LIMITED else {})} for project in PROJECTS]
    gateway = start_gateway(storage_redis_cluster, projects=projects)

    # A chat turn with history and learning, then a second that must carry the first.
    ann = PROJECTS[0]
    assert chat(gateway, ann, "Hi! My favorite fruit is blueberry.", "ann", "fruit").status_code == 200
    assert chat(gateway, ann, "What should I eat?", "ann", "fruit").status_code == 200
    sent = [m["content"] for m in gateway.forwarded()[-1]["body"]["messages"] if m["role"] == "user"]
    assert sent[-2:] == ["Hi! My favorite fruit is blueberry.", "What should I eat?"]
    with rest(gateway, ann) as client:
        def learned() -> list[str]:
            return [m["text"] for m in client.get("/memories", params={"subject_id": "ann"}).json()["data"]]
        assert wait_until(lambda: "User's favorite fruit is blueberry" in learned(), timeout=10), learned()
        history = client.get("/chat/history/read", params={"chat_id": "fruit", "subject_id": "ann"}).json()
        assert len(history["messages"]) == 4

        # The memories REST API: create, read, update, search, delete.
        created = client.post("/memories", json={"subject_id": "ann", "text": "Ann plays the cello"})
        assert created.status_code in (200, 201), created.text
        memory_id = created.json()["id"]
        assert client.get(f"/memories/{memory_id}").json()["data"]["text"] == "Ann plays the cello"
        assert client.patch(f"/memories/{memory_id}", json={"importance": 90}).status_code == 200
        found = client.get("/memories/search", params={"subject_id": "ann", "q": "cello"}).json()["data"]
        assert [hit["id"] for hit in found][:1] == [memory_id]
        assert client.delete(f"/memories/{memory_id}").status_code == 200
        assert client.get(f"/memories/{memory_id}").status_code == 404

    # Every other project writes too: a turn each (history, a learn job, its memory).
    for project in PROJECTS[1:4]:
        assert chat(gateway, project, "I love hiking on weekends.", "someone", "walks").status_code == 200
    for project in PROJECTS[1:4]:
        with rest(gateway, project) as client:
            assert wait_until(lambda c=client: c.get("/memories", params={"subject_id": "someone"}).json()["data"],
                              timeout=10)

    # The projects' hash tags are in slots of different masters, and so are the keys written.
    masters = {master_of(redis_cluster, f"{prefix}{{{project}}}:x") for project in PROJECTS[:4]}
    assert len(masters) > 1, masters
    holding = [port for port, count in redis_cluster.keys_per_master(prefix).items() if count]
    assert len(holding) > 1, redis_cluster.keys_per_master(prefix)
    # Each project's keys all sit on its own master (one slot per project: the hash tag).
    for project in PROJECTS[:4]:
        node = redis.Redis(port=master_of(redis_cluster, f"{prefix}{{{project}}}:x"), decode_responses=True)
        try:
            assert any(node.scan_iter(match=f"{prefix}{{{project}}}:*", count=1000))
        finally:
            node.close()

    # Erasure: the subject's memories and history go, another project's same subject stays.
    with rest(gateway, ann) as client:
        erased = client.delete("/subjects/ann")
        assert erased.status_code == 200, erased.text
        assert client.get("/memories", params={"subject_id": "ann"}).json()["data"] == []
        assert client.get("/chat/history/read", params={"chat_id": "fruit", "subject_id": "ann"}).json()[
            "messages"] == []
    assert chat(gateway, ann, "Do you remember my fruit?", "ann", "fruit", learn=False).status_code == 200
    assert "blueberry" not in str(gateway.forwarded()[-1]["body"]["messages"])
    with rest(gateway, PROJECTS[1]) as client:
        assert client.get("/memories", params={"subject_id": "someone"}).json()["data"]

    # A usage limit, counted on the cluster: the fourth request of the minute is refused.
    with rest(gateway, LIMITED) as client:
        statuses = [client.get("/memories", params={"subject_id": "x"}).status_code for _ in range(4)]
        refused = client.get("/memories", params={"subject_id": "x"})
    assert statuses == [200, 200, 200, 429]
    assert refused.status_code == 429
    assert {k: refused.json()[k] for k in ("error", "current", "limit")} == {
        "error": "usage_limit_exceeded", "current": 3, "limit": 3}


def test_a_cluster_url_naming_another_database_is_refused_by_the_config():
    with pytest.raises(ConfigError, match="database 0 only"):
        parse_config({"storage": {"backend": "redis", "redis": {"url": "redis://127.0.0.1:7000/15", "cluster": True}},
                      "projects": [{"id": "p", "keys": [{"key": "mnx_live_a_key_for_the_test"}]}]})
    parse_config({"storage": {"backend": "redis", "redis": {"url": "redis://127.0.0.1:7000/15"}},
                  "projects": [{"id": "p", "keys": [{"key": "mnx_live_a_key_for_the_test"}]}]})


async def test_calls_wait_for_a_free_connection_and_fail_as_unavailable_past_the_pool_timeout(redis_cluster):
    """As on a single Redis: 200 calls through 2 connections all succeed (they take turns); a call
    that waits longer than pool_timeout fails as a storage error (503), not as a client error."""
    from gateway.store.errors import STORAGE_ERRORS
    from gateway.store.redis_client import connect_redis

    prefix = f"mnxtest:{secrets.token_hex(6)}:"
    client: Any = connect_redis(redis_cluster.url, cluster=True, max_connections=2, pool_timeout=5)
    try:
        async def write(n: int) -> None:
            if n % 2:
                await client.set(f"{prefix}{{p{n % 7}}}:k{n}", n)
            else:
                async with client.pipeline(transaction=True) as pipe:
                    pipe.set(f"{prefix}{{p{n % 7}}}:k{n}", n)
                    pipe.get(f"{prefix}{{p{n % 7}}}:k{n}")
                    assert (await pipe.execute())[1] == str(n)
        await asyncio.gather(*(write(n) for n in range(200)))
        assert sum(redis_cluster.keys_per_master(prefix).values()) == 200
    finally:
        await client.aclose()
        redis_cluster.drop_prefix(prefix)

    impatient: Any = connect_redis(redis_cluster.url, cluster=True, max_connections=1, pool_timeout=0.2)
    try:
        blocked = asyncio.create_task(impatient.blpop([f"{prefix}{{q}}:never"], timeout=1))
        await asyncio.sleep(0.1)
        with pytest.raises(STORAGE_ERRORS):
            await impatient.get(f"{prefix}{{q}}:other")
        assert await blocked is None
        assert await impatient.get(f"{prefix}{{q}}:other") is None  # free again
    finally:
        await impatient.aclose()


async def test_memory_events_cross_masters_through_classic_pub_sub(redis_cluster):
    """The event channel and the project's stream on different masters (chosen so): an event
    published through one gateway's events reaches a subscriber of another's, and resumes."""
    from gateway.memory.events import RedisMemoryEvents
    from gateway.store.redis_client import connect_redis

    project = "cluster-events"
    prefix = next(p for p in (f"mnxtest:{secrets.token_hex(6)}:" for _ in range(100))
                  if master_of(redis_cluster, p + "memory_events") != master_of(redis_cluster, f"{p}{{{project}}}:x"))
    clients = [connect_redis(redis_cluster.url, cluster=True) for _ in range(2)]
    writer, reader = (RedisMemoryEvents(client, prefix) for client in clients)
    try:
        await writer.start()
        await reader.start()
        with reader.subscribe(project, "ann") as subscription:
            writer.publish(project, "ann", "memory.created", {"id": "m1", "text": "Ann plays the cello"})
            event = await subscription.next(timeout=5)
            assert event is not None and (event.type, event.data["id"]) == ("memory.created", "m1")
        # The stream on the project's master is the replay buffer a reconnecting client resumes from.
        with reader.subscribe(project, "ann") as resumed:
            await reader.resume(resumed, (0, 0))
            replayed = await resumed.next(timeout=5)
            assert replayed is not None and replayed.id == event.id
    finally:
        for events in (writer, reader):
            await events.aclose()
        for client in clients:
            await client.aclose()
        redis_cluster.drop_prefix(prefix)
