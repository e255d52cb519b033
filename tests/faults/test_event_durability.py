"""A memory event outlives a gateway SIGKILLed right after the write it announces was acknowledged.

Faults injected: ``kill -9`` of a gateway subprocess on the Redis backend (no shutdown code
runs, its outgoing event queue dies with it)

* right after each ``200`` of a REST write (create, patch, delete, a profile field): a gateway
  started afresh, replaying the stream from its start (``Last-Event-ID: 0-0``), must show the
  event of every one of those writes, once;
* in the middle of a learn job, its memory stored but the job not completed: the job runs again
  once the dead gateway's lease runs out, finds the memory stored, and announces it then; the
  stream holds its ``memory.created`` once, and the profile field it learned;
* and no kill, but Redis slower to take an event than a writer waits: the writer is answered
  503, and the event, still queued, reaches the stream once.

On a quiet machine the sender sends an event within a fraction of a millisecond of the write,
so a kill from the test would seldom land in that window. The gateway therefore reaches Redis
through ``SlowLink``, which holds what the gateway sends to Redis for ``HOLD_SECONDS`` before
passing it on, and drops it if the gateway died meanwhile: bytes not yet past the link were
still the gateway's, as an event waiting for a slow or busy Redis is. Without the wait for the
events in gateway/routing.py and gateway/memory/learning.py, or without the re-run's
announcement (gateway/memory/reannounce.py), these tests fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from gateway.config import EventsConfig
from gateway.errors import GatewayError
from gateway.memory import events as events_module
from gateway.memory.events import RedisMemoryEvents
from gateway.memory.learning import memory_id_for
from gateway.store.redis_client import connect_redis
from tests.conftest import KEY, PROVIDER_KEY, REDIS_URL, drop_redis_prefix, require_redis, wait_until
from tests.fake_upstream import free_socket
from tests.faults.conftest import jobs_of, providers_with
from tests.test_event_stream import Subscriber

PROJECT = [{"id": "project-a", "keys": [{"name": "main", "key": KEY, "scopes": ["*"]}]}]
HOLD_SECONDS = 0.05
REST = {"x-mnexium-key": KEY}


class SlowLink:
    """A TCP relay to Redis that holds each chunk the client (the gateway) sends for ``hold``
    seconds, and drops it, closing both ends, if the client hung up meanwhile. Redis's answers
    pass at once. ``hold`` may change at any time: a gateway starts faster through a link
    that holds nothing."""

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self.hold = 0.0
        self._listener = free_socket()
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._stopped = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database: str) -> str:
        return f"redis://127.0.0.1:{self.port}/{database}"

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            self._sockets += [client, upstream]
            threading.Thread(target=self._to_redis, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._to_client, args=(upstream, client), daemon=True).start()

    def _to_redis(self, client: socket.socket, upstream: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                if self.hold:
                    time.sleep(self.hold)
                if _hung_up(client):
                    break  # the gateway died with these bytes still its own
                upstream.sendall(chunk)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.close()

    @staticmethod
    def _to_client(upstream: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := upstream.recv(65536):
                client.sendall(chunk)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self._stopped = True
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


def _hung_up(sock: socket.socket) -> bool:
    """Whether the peer closed ``sock`` (EOF or reset waiting to be read); data waiting is no hang-up."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


@pytest.fixture
def slow_link() -> Iterator[SlowLink]:
    require_redis()
    link = SlowLink(int(REDIS_URL.rsplit(":", 1)[1].split("/")[0]))
    yield link
    link.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    require_redis()
    prefix = f"mnxtest:{secrets.token_hex(6)}:"
    yield prefix
    drop_redis_prefix(prefix)


def storage_through(link: SlowLink, prefix: str) -> dict[str, Any]:
    return {"backend": "redis", "redis": {"url": link.url(REDIS_URL.rsplit("/", 1)[1]), "key_prefix": prefix}}


def replayed_events(start_gateway, prefix: str, expected: int) -> list[Any]:
    """Every event of project-a's stream, as a client replaying it from its start reads them
    through a gateway started afresh (straight to Redis)."""
    fresh = start_gateway({"backend": "redis", "redis": {"url": REDIS_URL, "key_prefix": prefix}})
    with Subscriber(fresh, headers={"last-event-id": "0-0"}) as subscriber:
        wait_until(lambda: len(subscriber.events()) >= expected, timeout=10)
        time.sleep(0.3)  # anything beyond what is expected would be a duplicate: let it come
        return subscriber.events()


def stream_entries(prefix: str) -> list[dict[str, Any]]:
    """project-a's stream as Redis holds it: each event's type and data."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        entries = client.xrange(f"{prefix}{{project-a}}:memory_events")
    finally:
        client.close()
    return [json.loads(fields["m"]) for _, fields in entries]


def test_every_answered_rest_write_has_its_event_though_the_gateway_dies_right_after_answering(
        gateway_process, start_gateway, slow_link, prefix, tmp_path):
    config = {"storage": storage_through(slow_link, prefix), "projects": PROJECT,
              "memory": {"vectors": {"backend": "edge", "edge": {"path": str(tmp_path / "memories")}}}}
    gateway = gateway_process(config)
    api = gateway.url + "/api/v1"
    written: list[tuple[str, str]] = []  # (event type, what it names) of each acknowledged write

    def acknowledged(write: Any, event: str, names: Any) -> str:
        """Send one write to a gateway started for it; SIGKILL it as soon as the write is answered."""
        slow_link.hold = 0
        gateway.start()
        slow_link.hold = HOLD_SECONDS
        response = write(api)
        assert response.status_code in (200, 201), response.text
        gateway.kill()  # at once: the answer is all the client knows
        named = names(response.json()) if callable(names) else names
        written.append((event, named))
        return named

    ann = acknowledged(lambda api: httpx.post(api + "/memories", json={"subject_id": "ann",
                                                                       "text": "Ann keeps three cats"},
                                              headers=REST, timeout=30), "memory.created", lambda body: body["id"])
    acknowledged(lambda api: httpx.patch(f"{api}/memories/{ann}", json={"text": "Ann keeps four cats"},
                                         headers=REST, timeout=30), "memory.updated", ann)
    acknowledged(lambda api: httpx.patch(api + "/profiles", json={"subject_id": "ann", "updates": [
        {"field_key": "timezone", "value": "Europe/Paris"}]}, headers=REST, timeout=30), "profile.updated", "ann")
    acknowledged(lambda api: httpx.delete(f"{api}/memories/{ann}", headers=REST, timeout=30), "memory.deleted", ann)

    events = replayed_events(start_gateway, prefix, len(written))
    heard = [(frame.event, frame.data.get("id") or frame.data.get("subject_id")) for frame in events]
    # Every acknowledged write's event, once, in the order of the writes.
    assert heard == written


def test_a_learn_job_killed_after_storing_its_memory_announces_it_when_it_runs_again(
        gateway_process, start_gateway, slow_link, prefix, provider, tmp_path):
    sections = {
        "providers": providers_with(provider.url, read=10, api_key="sk-configured"),
        "memory": {"vectors": {"backend": "edge", "edge": {"path": str(tmp_path / "memories")}}},
        # Short, so that the job runs again soon after the kill.
        "learning": {"extractor": {"provider": "litellm", "model": "extractor"}, "lease_seconds": 3,
                     "poll_seconds": 0.2},
    }
    # The extractor's memory states the user's name: the job learns that profile field too.
    answer = json.dumps({"memories": [{
        "text": "User's name is Ada", "kind": "fact", "importance": 60, "confidence": 0.9, "tags": [],
        "visibility": "private", "is_temporal": False, "claims": [],
        "profile": [{"field_key": "name", "value": "Ada"}]}]})
    provider.extraction_answers += [answer, answer]  # the re-run asks the extractor again
    first = gateway_process({"storage": storage_through(slow_link, prefix), "projects": PROJECT,
                             **sections}).start()
    slow_link.hold = HOLD_SECONDS
    response = httpx.post(first.url + "/v1/chat/completions", timeout=30,
                          headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY},
                          json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "I am Ada"}],
                                "mnx": {"subject_id": "ada", "chat_id": "ada-chat", "learn": True}})
    assert response.status_code == 200, response.text
    [job] = [j for j in jobs_of(first.url) if j["kind"] == "learn"]
    memory_id = memory_id_for(job["id"], 0)

    # Killed as soon as its memory's document is in Redis: the rest of the write (claims, index,
    # the event, the profile field) was still to come, each call held by the link.
    direct = redis.Redis.from_url(REDIS_URL)
    try:
        assert wait_until(lambda: direct.exists(f"{prefix}{{project-a}}:memories:d:{memory_id}"), timeout=30,
                          interval=0.002)
    finally:
        direct.close()
    first.kill()
    assert not any(event.get("d", {}).get("id") == memory_id for event in stream_entries(prefix))

    second = start_gateway({"backend": "redis", "redis": {"url": REDIS_URL, "key_prefix": prefix}},
                           projects=PROJECT, **sections)
    # The job runs again once the dead gateway's lease is out, and completes. (An index repair
    # job for the memory the killed run left half-written may wait beside it: not this test's.)
    assert wait_until(lambda: not [j for j in jobs_of(second.url) if j["kind"] == "learn"], timeout=30), (
        jobs_of(second.url))
    events = stream_entries(prefix)
    created = Counter(event["d"]["id"] for event in events if event["t"] == "memory.created")
    assert created == {memory_id: 1}
    profile = [event["d"]["fields"] for event in events if event["t"] == "profile.updated"]
    assert profile == [{"name": "Ada"}]


async def test_a_write_whose_events_redis_is_slow_to_take_fails_503_and_the_events_still_go(
        slow_link, prefix, monkeypatch):
    """Redis answers the sender later than the writer may wait: the write is answered 503 (as a
    write that met a Redis failure half-way), and its event, kept queued, still reaches the stream."""
    monkeypatch.setattr(events_module, "_ACKNOWLEDGE_WAIT_SECONDS", 0.3)
    client = connect_redis(slow_link.url(REDIS_URL.rsplit("/", 1)[1]))
    events = RedisMemoryEvents(client, prefix, EventsConfig())
    await events.start()
    try:
        slow_link.hold = 1.0
        with pytest.raises(GatewayError) as refused:
            async with events.acknowledged():
                events.publish("project-a", "ann", "memory.deleted", {"id": "mem_slow"})
        assert (refused.value.status, refused.value.code) == (503, "storage_unavailable")
        assert await wait_for_async(lambda: any(e["d"].get("id") == "mem_slow" for e in stream_entries(prefix)))
    finally:
        slow_link.hold = 0
        await events.aclose()
        await client.aclose()
    assert [e["t"] for e in stream_entries(prefix)] == ["memory.deleted"]  # sent once


async def wait_for_async(predicate: Any, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()
