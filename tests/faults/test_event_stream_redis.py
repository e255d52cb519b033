"""Memory events across gateways survive a Redis restart: the listener subscribes again, the sender retries;
a connection that goes silent is noticed; an erasure reaches the events the sender is still retrying."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.memory import events as events_module
from gateway.memory.events import RedisMemoryEvents
from tests.conftest import KEY, REDIS_URL, require_redis, wait_until
from tests.fake_upstream import free_socket
from tests.test_event_stream import Subscriber, create_memory


def test_events_flow_between_gateways_again_after_redis_restarts(start_gateway, private_redis, caplog):
    caplog.set_level(logging.WARNING, logger="gateway.events")
    storage = {"backend": "redis", "redis": {"url": private_redis.url, "key_prefix": "t:", "pool_timeout_seconds": 1,
                                             "socket_timeout_seconds": 1}}
    writer, reader = start_gateway(storage), start_gateway(storage)
    with Subscriber(reader, subject_id="ev-restart") as subscriber:
        create_memory(writer, "ev-restart", "User grows tomatoes")
        subscriber.wait_for(lambda frames: len(frames) == 1)

        private_redis.kill()
        private_redis.start()  # empty: no persistence

        def stored_again() -> bool:
            response = httpx.post(writer.api + "/memories", json={"subject_id": "ev-restart",
                                                                  "text": "User grows sweet peppers"},
                                  headers={"x-mnexium-key": KEY}, timeout=10)
            return response.status_code in (200, 201)

        assert wait_until(stored_again, timeout=20, interval=0.2)
        frames = subscriber.wait_for(lambda frames: any(f.data.get("text") == "User grows sweet peppers"
                                                        for f in frames), timeout=20)
        assert [f.event for f in frames] == ["memory.created", "memory.created"]
    assert any("lost the Redis subscription" in record.getMessage() for record in caplog.records)


# --- a connection to Redis that breaks in ways Redis itself cannot show --------------------------

class RedisLink:
    """A TCP relay in front of Redis that a test can break: ``freeze`` leaves the connections
    open but passes nothing more on them (a half-open connection: a network partition, a Redis
    host that vanished), ``cut`` closes them and refuses new ones until ``mend``."""

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = free_socket()
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self._refusing = False
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database: str) -> str:
        return f"redis://127.0.0.1:{self.port}/{database}"

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing:
                client.close()
                continue
            upstream = socket.create_connection(self._target)
            frozen = threading.Event()
            with self._lock:
                self._pairs.append((client, upstream, frozen))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink, frozen), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, frozen: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                if not frozen.is_set():
                    sink.sendall(chunk)
        for sock in (source, sink):
            if not frozen.is_set():
                with contextlib.suppress(OSError):
                    sock.close()

    def freeze(self) -> None:
        """From now on nothing passes on the connections open now; new ones work."""
        with self._lock:
            for _, _, frozen in self._pairs:
                frozen.set()
            self._pairs = []

    def cut(self) -> None:
        """Close every connection, and refuse new ones until ``mend``."""
        self._refusing = True
        with self._lock:
            for client, upstream, _ in self._pairs:
                for sock in (client, upstream):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                        sock.close()
            self._pairs = []

    def mend(self) -> None:
        self._refusing = False

    def close(self) -> None:
        self._stopped = True
        self.cut()
        self._listener.close()


@pytest.fixture
def redis_link() -> Iterator[RedisLink]:
    require_redis()
    link = RedisLink(int(REDIS_URL.rsplit(":", 1)[1].split("/")[0]))
    yield link
    link.close()


def test_a_listener_whose_connection_went_silent_notices_and_catches_up(start_gateway, storage_redis, redis_link,
                                                                        monkeypatch, caplog):
    """The reader's connections to Redis go half-open: no error, nothing read. The listener's
    PING gets no PONG, so it subscribes again on a new connection and catches up from the
    stream: the event written meanwhile through another gateway still arrives."""
    monkeypatch.setattr(events_module, "_LISTEN_POLL_SECONDS", 0.1)
    monkeypatch.setattr(events_module, "_LISTEN_PING_SECONDS", 0.5)
    caplog.set_level(logging.WARNING, logger="gateway.events")
    writer = start_gateway(storage_redis)
    database = REDIS_URL.rsplit("/", 1)[1]
    reader = start_gateway({"backend": "redis", "redis": {**storage_redis["redis"], "url": redis_link.url(database),
                                                          "socket_timeout_seconds": 1}})
    with Subscriber(reader, subject_id="ev-silent") as subscriber:
        create_memory(writer, "ev-silent", "User plays chess")
        subscriber.wait_for(lambda frames: len(frames) == 1)
        time.sleep(2)  # idle for four PING intervals: a connection that answers them is kept
        assert not any("lost the Redis subscription" in record.getMessage() for record in caplog.records)
        redis_link.freeze()
        create_memory(writer, "ev-silent", "User plays go")
        frames = subscriber.wait_for(lambda frames: len(frames) == 2, timeout=15)
        assert [f.data["text"] for f in frames] == ["User plays chess", "User plays go"]
        create_memory(writer, "ev-silent", "User plays shogi")  # and the new subscription hears live ones
        assert subscriber.wait_for(lambda frames: len(frames) == 3)[2].data["text"] == "User plays shogi"
    assert any("not even a PONG" in record.getMessage() for record in caplog.records)


def test_an_erasure_drops_the_subjects_events_the_sender_is_retrying(storage_redis, redis_link, caplog):
    """Redis was unreachable for the sender, which holds a batch and retries it; the subject is
    erased meanwhile (Redis is back): the retried batch must not put its events in the stream."""
    caplog.set_level(logging.WARNING, logger="gateway.events")
    database = REDIS_URL.rsplit("/", 1)[1]
    prefix = storage_redis["redis"]["key_prefix"]

    def failed_sends() -> int:
        return sum("sending 1 event(s) to Redis failed" in record.getMessage() for record in caplog.records)

    async def scenario() -> list[str]:
        linked = aioredis.Redis.from_url(redis_link.url(database), decode_responses=True, socket_timeout=1)
        direct = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
        events = RedisMemoryEvents(linked, prefix)
        await events.start()
        try:
            redis_link.cut()
            events.publish("p", "ann", "memory.created", {"text": "Ann's secret"})
            while failed_sends() < 3:  # the sender has failed a few times...
                await asyncio.sleep(0.01)
            redis_link.mend()  # ...and waits (0.4 s or more) to retry: the erasure runs meanwhile
            await events.forget_subject("p", "ann")
            events.publish("p", "bob", "memory.created", {"text": "Bob's note"})
            stream = f"{prefix}{{p}}:memory_events"
            for _ in range(200):  # Bob's event goes after the retried batch
                if await direct.xlen(stream):
                    break
                await asyncio.sleep(0.05)
            return [fields["m"] for _, fields in await direct.xrange(stream)]
        finally:
            await events.aclose()
            await linked.aclose()
            await direct.aclose()

    entries = asyncio.run(scenario())
    assert len(entries) == 1 and "Bob's note" in entries[0], entries
