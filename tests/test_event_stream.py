"""GET /api/v1/events/memories (contract §13): memory events as server-sent events, over HTTP.

Subscribers here are real HTTP clients of running gateways (httpx streams, a raw socket that
stops reading, the mnexium SDK's EventStream); the events come from real writes: chat turns
the learn worker learns from, and the REST routes.
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import httpx
import pytest
from mnexium import Mnexium, ProviderConfig

from tests.conftest import KEY, KEY_B, PROVIDER_KEY, wait_until

SSE = {"Accept": "text/event-stream"}


@dataclass
class Frame:
    id: str | None
    event: str
    data: dict[str, Any]


def parse_frame(block: str) -> Frame:
    fields: dict[str, str] = {}
    for line in block.split("\n"):
        name, _, value = line.partition(": ")
        fields[name] = value
    return Frame(fields.get("id"), fields["event"], json.loads(fields["data"]))


class Subscriber(threading.Thread):
    """An SSE client of GET /events/memories, reading in the background; ``frames`` is what came."""

    def __init__(self, gateway: Any, *, key: str = KEY, subject_id: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(daemon=True)
        self.url = gateway.api + "/events/memories"
        self.params = {"subject_id": subject_id} if subject_id is not None else {}
        self.headers = {"x-mnexium-key": key, **SSE, **(headers or {})}
        self.frames: list[Frame] = []
        self.status: int | None = None
        self.response_headers: httpx.Headers | None = None
        self.connected = threading.Event()
        self.ended = threading.Event()  # the server ended the stream (or it failed)
        self.failure: BaseException | None = None
        self._response: httpx.Response | None = None
        self._closing = False

    def __enter__(self) -> Subscriber:
        self.start()
        assert self.connected.wait(10), f"no connected frame: {self.status} {self.failure!r}"
        assert self.status == 200
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self) -> None:
        try:
            with httpx.Client(timeout=httpx.Timeout(10, read=60)) as client:
                with client.stream("GET", self.url, params=self.params, headers=self.headers) as response:
                    self._response = response
                    self.status, self.response_headers = response.status_code, response.headers
                    buffer = ""
                    for text in response.iter_text():
                        buffer += text
                        while "\n\n" in buffer:
                            block, buffer = buffer.split("\n\n", 1)
                            self.frames.append(parse_frame(block))
                            if self.frames[-1].event == "connected":
                                self.connected.set()
        except BaseException as error:
            if not self._closing:
                self.failure = error
        finally:
            self.ended.set()
            self.connected.set()

    def close(self) -> None:
        """Hang up, as a client that goes away does (the reading thread wakes up to a closed socket)."""
        self._closing = True
        if self._response is not None:
            with contextlib.suppress(OSError):
                self._response.extensions["network_stream"].get_extra_info("socket").shutdown(socket.SHUT_RDWR)
        self.join(5)
        assert not self.is_alive()

    def events(self, *types: str) -> list[Frame]:
        """The frames of these event types (all but connected and heartbeat if none named)."""
        return [f for f in self.frames if (f.event in types if types else f.event not in ("connected", "heartbeat"))]

    def wait_for(self, predicate: Callable[[list[Frame]], bool], timeout: float = 10) -> list[Frame]:
        assert wait_until(lambda: predicate(self.events()), timeout=timeout), (
            [(f.event, f.data) for f in self.frames], self.failure)
        return self.events()


def order(event_id: str | None) -> tuple[int, int]:
    assert event_id is not None
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


def learn_turn(gateway: Any, text: str, subject_id: str, chat_id: str = "events-chat") -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}],
            "mnx": {"subject_id": subject_id, "chat_id": chat_id, "history": False, "learn": True}}
    response = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30,
                          headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY})
    assert response.status_code == 200, response.text


def create_memory(gateway: Any, subject_id: str, text: str, key: str = KEY, **fields: Any) -> dict[str, Any]:
    response = httpx.post(gateway.api + "/memories", json={"subject_id": subject_id, "text": text, **fields},
                          headers={"x-mnexium-key": key}, timeout=30)
    assert response.status_code in (200, 201), response.text
    return response.json()


def check_learn_cycle(writer: Any, subscriber: Subscriber, subject: str) -> None:
    """Learn, supersede, edit and delete through ``writer``: ``subscriber`` gets each event, in order."""
    learn_turn(writer, "My favorite fruit is blueberry.", subject)
    [created] = subscriber.wait_for(lambda frames: len(frames) >= 1)
    assert created.event == "memory.created"
    assert created.data["text"] == "User's favorite fruit is blueberry" and created.data["subject_id"] == subject
    assert {"id", "kind", "importance", "created_at", "timestamp"} <= set(created.data)
    first_id = created.data["id"]

    learn_turn(writer, "My favorite fruit is mango.", subject)
    frames = subscriber.wait_for(lambda frames: len(frames) >= 3)
    assert [f.event for f in frames[1:]] == ["memory.created", "memory.superseded"]
    second_id = frames[1].data["id"]
    assert frames[2].data["id"] == first_id and frames[2].data["superseded_by"] == second_id

    with httpx.Client(base_url=writer.api, headers={"x-mnexium-key": KEY}, timeout=30) as rest:
        assert rest.patch(f"/memories/{second_id}", json={"importance": 90}).status_code == 200
        assert rest.delete(f"/memories/{second_id}").status_code == 200
    frames = subscriber.wait_for(lambda frames: len(frames) >= 5)
    assert [(f.event, f.data["id"]) for f in frames[3:]] == [("memory.updated", second_id),
                                                             ("memory.deleted", second_id)]
    assert frames[3].data["subject_id"] == subject
    # Every event carries an id, in increasing order (what Last-Event-ID resumes from).
    orders = [order(f.id) for f in frames]
    assert len(orders) == 5 and orders == sorted(orders) and len(set(orders)) == 5


def test_a_subscriber_receives_a_learn_cycle_as_it_happens(gateway_on):
    with Subscriber(gateway_on, subject_id="ev-learner") as subscriber:
        connected = subscriber.frames[0]
        assert (connected.event, connected.id) == ("connected", None)
        assert connected.data["project_id"] == "project-a" and connected.data["subject_id"] == "ev-learner"
        headers = subscriber.response_headers
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["cache-control"] == "no-cache, no-transform"
        assert headers["x-accel-buffering"] == "no" and headers["connection"] == "keep-alive"
        check_learn_cycle(gateway_on, subscriber, "ev-learner")


@pytest.mark.parametrize("backend", ["redis", "redis_cluster"])
def test_on_redis_an_event_written_through_one_gateway_reaches_a_subscriber_of_another(start_gateway, request,
                                                                                       backend):
    storage = request.getfixturevalue(f"storage_{backend}")
    writer, reader = start_gateway(storage), start_gateway(storage)
    with Subscriber(reader, subject_id="ev-two") as subscriber, Subscriber(writer, subject_id="ev-two") as local:
        check_learn_cycle(writer, subscriber, "ev-two")
        # The writer's own subscribers get the same events, with the same ids.
        assert [(f.id, f.event) for f in local.wait_for(lambda frames: len(frames) >= 5)] == [
            (f.id, f.event) for f in subscriber.events()]


def test_the_subject_filter_and_a_project_wide_subscriber(gateway):
    with Subscriber(gateway, subject_id="ev-ann") as ann, Subscriber(gateway) as everyone:
        create_memory(gateway, "ev-bob", "Bob keeps bees")
        create_memory(gateway, "ev-ann", "Ann plays the cello")
        frames = everyone.wait_for(lambda frames: len(frames) >= 2)
        assert [f.data["subject_id"] for f in frames] == ["ev-bob", "ev-ann"]
        assert [f.data["text"] for f in ann.wait_for(lambda frames: len(frames) >= 1)] == ["Ann plays the cello"]
        time.sleep(0.2)
        assert len(ann.events()) == 1


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_another_projects_key_receives_nothing_of_this_project(start_gateway, request, backend):
    storage = request.getfixturevalue(f"storage_{backend}")
    gateway = start_gateway(storage)
    with Subscriber(gateway, key=KEY_B, subject_id="ev-shared") as b_subject, Subscriber(gateway, key=KEY_B) as b_all:
        assert b_all.frames[0].data["project_id"] == "project-b"
        create_memory(gateway, "ev-shared", "A's secret: the vault code is 4512")
        with Subscriber(gateway, key=KEY_B, subject_id="ev-shared",
                        headers={"Last-Event-ID": "0-0"}) as b_resuming:
            create_memory(gateway, "ev-shared", "B's own memory", key=KEY_B)
            for subscriber in (b_subject, b_all, b_resuming):
                frames = subscriber.wait_for(lambda frames: len(frames) >= 1)
                time.sleep(0.2)
                assert [f.data["text"] for f in subscriber.events("memory.created")] == ["B's own memory"]
                assert "4512" not in json.dumps([f.data for f in subscriber.frames]), frames


def test_the_mnexium_sdks_event_stream_receives_events(gateway):
    mnx = Mnexium(api_key=KEY, base_url=gateway.api, max_retries=0, openai=ProviderConfig(api_key=PROVIDER_KEY))
    stream = mnx.subject("ev-sdk").memories.subscribe()
    received: list[Any] = []

    def read() -> None:
        for event in stream:
            received.append(event)
            if event.type == "memory.deleted":
                break

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert wait_until(lambda: received and received[0].type == "connected"), received
    assert received[0].data["subject_id"] == "ev-sdk"
    memory = create_memory(gateway, "ev-sdk", "User's favorite tea is sencha")
    httpx.delete(f"{gateway.api}/memories/{memory['id']}", headers={"x-mnexium-key": KEY}, timeout=30)
    reader.join(10)
    stream.close()
    mnx.close()
    assert [(e.type, e.data["id"]) for e in received[1:]] == [("memory.created", memory["id"]),
                                                             ("memory.deleted", memory["id"])]
    assert received[1].data["text"] == "User's favorite tea is sencha"


def test_heartbeats_come_at_the_configured_interval(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite, events={"heartbeat_seconds": 0.2})
    with Subscriber(gateway) as subscriber:
        assert wait_until(lambda: len(subscriber.events("heartbeat")) >= 3, timeout=5)
        beats = subscriber.events("heartbeat")
        assert all(set(beat.data) == {"timestamp"} and beat.id is None for beat in beats)


@pytest.mark.parametrize("backend", ["sqlite", "redis", "redis_cluster"])
def test_last_event_id_resumes_after_the_last_event_received(start_gateway, request, backend):
    storage = request.getfixturevalue(f"storage_{backend}")
    gateway = start_gateway(storage)
    with Subscriber(gateway, subject_id="ev-resume") as first:
        create_memory(gateway, "ev-resume", "User collects stamps")
        [seen] = first.wait_for(lambda frames: len(frames) >= 1)
    # Missed while disconnected: two memories of this subject, one of another.
    missed = [create_memory(gateway, "ev-resume", text) for text in ("User speaks Portuguese",
                                                                      "User owns a red bicycle")]
    create_memory(gateway, "ev-other", "User collects shells")
    with Subscriber(gateway, subject_id="ev-resume", headers={"Last-Event-ID": seen.id}) as second:
        frames = second.wait_for(lambda frames: len(frames) >= 2)
        assert [f.data["id"] for f in frames] == [m["id"] for m in missed]
        live = create_memory(gateway, "ev-resume", "User collects postcards")
        frames = second.wait_for(lambda frames: len(frames) >= 3)
        assert [f.data["id"] for f in frames] == [*(m["id"] for m in missed), live["id"]]
        assert order(frames[0].id) > order(seen.id)


def test_a_resume_from_beyond_the_replay_buffer_is_told_events_were_lost(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite, events={"replay_size": 2})
    with Subscriber(gateway, subject_id="ev-gap") as first:
        create_memory(gateway, "ev-gap", "User knits scarves")
        [seen] = first.wait_for(lambda frames: len(frames) >= 1)
    texts = [f"User knits pattern number {i}" for i in range(4)]
    for text in texts:
        create_memory(gateway, "ev-gap", text, no_supersede=True)
    with Subscriber(gateway, subject_id="ev-gap", headers={"Last-Event-ID": seen.id}) as second:
        frames = second.wait_for(lambda frames: len(frames) >= 3)
        assert (frames[0].event, frames[0].data["reason"], frames[0].data["count"]) == ("dropped", "resume_gap", None)
        assert [f.data["text"] for f in frames[1:]] == texts[-2:]


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
@pytest.mark.parametrize("last_event_id", [f"{2**64 - 1}-{2**64 - 1}", "99999999999999-0"],
                         ids=["largest id", "year 5138"])
def test_an_id_newer_than_any_sent_is_told_of_a_gap_and_gets_the_live_events(start_gateway, request, backend,
                                                                            last_event_id):
    """A client's id from the future (this host's clock was stepped back after a restart, or
    Redis lost its streams): taken at its word it would hide every event to come."""
    gateway = start_gateway(request.getfixturevalue(f"storage_{backend}"))
    # The project has a stream on Redis. Events are sent after the write answers: wait until this
    # one has reached a live subscriber, else the next subscriber could get it live too.
    with Subscriber(gateway, subject_id="ev-future") as witness:
        create_memory(gateway, "ev-future", "User sails dinghies")
        witness.wait_for(lambda frames: len(frames) >= 1)
    with Subscriber(gateway, subject_id="ev-future", headers={"Last-Event-ID": last_event_id}) as subscriber:
        [notice] = subscriber.wait_for(lambda frames: len(frames) >= 1)
        assert (notice.event, notice.data["reason"], notice.id) == ("dropped", "resume_gap", None)
        create_memory(gateway, "ev-future", "User sails catamarans")
        frames = subscriber.wait_for(lambda frames: len(frames) >= 2)
        assert [f.data.get("text") for f in frames[1:]] == ["User sails catamarans"]


# --- a subscriber that stops reading ----------------------------------------------------------

class StuckSubscriber:
    """A client that opens the stream and then never reads: a tiny receive buffer, so the
    gateway's socket and send buffers fill, and then the events pile up in its queue."""

    def __init__(self, gateway: Any, *, subject_id: str) -> None:
        host, port = gateway.url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, int(port)))
        self.sock.sendall((f"GET /api/v1/events/memories?subject_id={subject_id} HTTP/1.1\r\nHost: {host}\r\n"
                           f"x-mnexium-key: {KEY}\r\nAccept: text/event-stream\r\n\r\n").encode())
        self.head = self.sock.recv(1024)  # the response head and the connected frame

    def read_all(self, quiet_seconds: float = 0.5) -> str:
        """Start reading (at last): everything the gateway sends until it has been quiet for a while."""
        self.sock.settimeout(quiet_seconds)
        received = b""
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                return received.decode(errors="replace")
            if not chunk:
                return received.decode(errors="replace")
            received += chunk

    def close(self) -> None:
        self.sock.close()


# Each memory.created event carries the memory's tags: 50 KB of them fill the socket buffers
# between the gateway and a client that does not read (about 3 MB on Linux) in some 60 writes.
# (Gateways that write them allow events that large: BULKY_EVENTS.)
BULKY_TAGS = ["t" * 50_000]
BULKY_EVENTS = {"max_event_bytes": 100_000}


def write_latencies(gateway: Any, subject_id: str, count: int) -> list[float]:
    """Store ``count`` memories with bulky events one after another; the time each POST took."""
    latencies = []
    with httpx.Client(base_url=gateway.api, headers={"x-mnexium-key": KEY}, timeout=30) as rest:
        for i in range(count):
            started = time.perf_counter()
            response = rest.post("/memories", json={"subject_id": subject_id, "text": f"User note number {i}",
                                                    "tags": BULKY_TAGS, "no_supersede": True})
            latencies.append(time.perf_counter() - started)
            assert response.status_code in (200, 201), response.text
    return latencies


def test_a_subscriber_that_stops_reading_neither_slows_writes_nor_grows_memory(start_gateway, storage_sqlite):
    """The stuck subscriber's queue holds at most events.queue_size events; the rest are dropped
    (oldest first) and it is told how many when it reads again. Writes are timed with and
    without it: p50 over 200 writes each (the figures are printed; the bound is generous)."""
    queue_size = 20
    gateway = start_gateway(storage_sqlite, events={"queue_size": queue_size, **BULKY_EVENTS})
    write_latencies(gateway, "ev-warm", 20)
    alone = write_latencies(gateway, "ev-alone", 200)
    stuck = StuckSubscriber(gateway, subject_id="ev-stuck")
    try:
        assert b"200 OK" in stuck.head
        # The first 100 fill the socket buffers; the last 200 are timed, with the queue full.
        with_stuck = write_latencies(gateway, "ev-stuck", 300)
        received = stuck.read_all()
    finally:
        stuck.close()
    last = with_stuck[-200:]
    p50_alone, p50_stuck = statistics.median(alone) * 1000, statistics.median(last) * 1000
    print(f"\nPOST /memories p50: {p50_alone:.2f} ms alone, {p50_stuck:.2f} ms with a stuck subscriber "
          f"(last 200 of 300 writes); p99 {sorted(alone)[197] * 1000:.2f} / {sorted(last)[197] * 1000:.2f} ms")
    assert p50_stuck < p50_alone * 1.5 + 2, (p50_alone, p50_stuck)
    # What it gets once it reads: part of the events (the socket buffers held some), a notice of
    # how many were dropped, then the newest queue_size events, the last write's among them.
    dropped = [json.loads(line.removeprefix("data: ")) for block in received.split("\n\n")
               if "event: dropped" in block for line in block.split("\n") if line.startswith("data: ")]
    created = received.count("event: memory.created")
    before_notice = received.split("event: dropped", 1)[0]
    print(f"the stuck subscriber then read {created} events: {before_notice.count('event: memory.created')} "
          f"({len(before_notice)} bytes) from the socket buffers, a notice of {sum(d['count'] for d in dropped)} "
          "dropped, the rest from its queue")
    assert dropped and dropped[0]["reason"] == "queue_full"
    assert created + sum(d["count"] for d in dropped) == 300
    assert '"User note number 299"' in received.rsplit("event: dropped", 1)[1]
    after_notice = received.rsplit("event: dropped", 1)[1].count("event: memory.created")
    assert after_notice <= queue_size


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_an_event_larger_than_max_event_bytes_goes_out_shortened(start_gateway, request, backend):
    """Tags (unbounded up to the request body limit) would make every queue and replay buffer
    hold megabytes: the event keeps its id and what fits of its text, marked truncated."""
    gateway = start_gateway(request.getfixturevalue(f"storage_{backend}"), events={"max_event_bytes": 2048})
    with Subscriber(gateway, subject_id="ev-big") as subscriber:
        big = create_memory(gateway, "ev-big", "User likes " + "very " * 1000 + "long walks", tags=["t" * 50_000])
        small = create_memory(gateway, "ev-big", "User likes tea", tags=["drinks"])
        frames = subscriber.wait_for(lambda frames: len(frames) >= 2)
    assert [f.data["id"] for f in frames] == [big["id"], small["id"]]
    shortened, whole = frames[0].data, frames[1].data
    assert shortened["truncated"] is True and "tags" not in shortened
    assert shortened["text"].startswith("User likes very very") and len(json.dumps(shortened)) <= 2048 + 100
    assert shortened["subject_id"] == "ev-big" and shortened["kind"] == whole["kind"]
    assert "truncated" not in whole and whole["tags"] == ["drinks"] and whole["text"] == "User likes tea"


def test_a_project_may_open_only_so_many_streams(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite, events={"max_subscribers_per_project": 2})
    with Subscriber(gateway), Subscriber(gateway, subject_id="ev-many"):
        response = httpx.get(gateway.api + "/events/memories", headers={"x-mnexium-key": KEY, **SSE}, timeout=10)
        assert response.status_code == 429, response.text
        assert response.json()["error"] == "too_many_subscribers" and "2" in response.json()["message"]
        with Subscriber(gateway, key=KEY_B):  # another project's streams are counted apart
            pass

    def two_open() -> bool:  # closed streams free their places (once the gateway sees them closed)
        url, headers = gateway.api + "/events/memories", {"x-mnexium-key": KEY, **SSE}
        with httpx.stream("GET", url, headers=headers, timeout=10) as first, \
                httpx.stream("GET", url, headers=headers, timeout=10) as second:
            return first.status_code == second.status_code == 200

    assert wait_until(two_open, timeout=5, interval=0.1)


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("params", "headers", "status", "code"), [
    ({}, {}, 406, "not_acceptable"),  # no Accept header
    ({}, {"Accept": "application/json"}, 406, "not_acceptable"),
    ({}, {"Accept": "text/event-stream;q=0, */*"}, 406, "not_acceptable"),
    ({"subject_id": "x" * 257}, SSE, 400, "invalid_subject_id"),
    ({"subject_id": "  "}, SSE, 400, "invalid_subject_id"),
    ({"subject_id": "ann\x00"}, SSE, 400, "invalid_subject_id"),
    ({}, {**SSE, "Last-Event-ID": "not-an-id"}, 400, "invalid_last_event_id"),
    ({}, {**SSE, "Last-Event-ID": f"{2**64}-0"}, 400, "invalid_last_event_id"),  # Redis ids are 64-bit
    ({}, {**SSE, "Last-Event-ID": f"1-{2**64}"}, 400, "invalid_last_event_id"),
], ids=["no accept", "json accept", "q=0", "long subject", "blank subject", "control character", "bad last id",
        "ms past 64 bits", "sequence past 64 bits"])
def test_bad_requests_are_refused_in_the_rest_error_shape(shared_gateway, params, headers, status, code):
    with httpx.Client(timeout=10) as client:
        del client.headers["accept"]  # httpx's default Accept: */*
        response = client.get(shared_gateway.api + "/events/memories", params=params,
                              headers={"x-mnexium-key": KEY, **headers})
    assert ("accept" in response.request.headers) == ("Accept" in headers)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code and isinstance(response.json()["message"], str)


def test_no_key_is_401_and_a_key_without_the_scope_is_403(start_gateway, storage_sqlite, provider):
    gateway = start_gateway(storage_sqlite, projects=[{"id": "project-a", "keys": [
        {"name": "main", "key": KEY, "scopes": ["*"]},
        {"name": "events", "key": "mnx_live_events_only", "scopes": ["events:read"]},
        {"name": "history", "key": "mnx_live_history_only", "scopes": ["history:read"]}]}])
    url = gateway.api + "/events/memories"
    response = httpx.get(url, headers=SSE, timeout=10)
    assert (response.status_code, response.json()["error"]) == (401, "unauthorized")
    response = httpx.get(url, headers={**SSE, "x-mnexium-key": "mnx_live_history_only"}, timeout=10)
    assert (response.status_code, response.json()["error"]) == (403, "forbidden")
    assert "memories:read" in response.json()["message"]
    with Subscriber(gateway, key="mnx_live_events_only") as subscriber:
        assert subscriber.frames[0].data["project_id"] == "project-a"


# --- subject erasure and stopping ---------------------------------------------------------------

@pytest.mark.parametrize("backend", ["sqlite", "redis", "redis_cluster"])
def test_erasing_a_subject_drops_its_pending_events(start_gateway, request, backend):
    storage = request.getfixturevalue(f"storage_{backend}")
    gateway = start_gateway(storage, events={"queue_size": 5, **BULKY_EVENTS})
    gateways = [gateway, start_gateway(storage, events=BULKY_EVENTS)] if backend != "sqlite" else [gateway]
    stuck = [StuckSubscriber(g, subject_id="ev-erased") for g in gateways]
    try:
        # Enough to fill the socket buffers, so the last events wait in the gateways' queues.
        write_latencies(gateway, "ev-erased", 150)
        response = httpx.delete(gateway.api + "/subjects/ev-erased", headers={"x-mnexium-key": KEY}, timeout=30)
        assert response.status_code == 200, response.text
        received = [s.read_all() for s in stuck]
    finally:
        for s in stuck:
            s.close()
    for text in received:
        # What was already in the socket buffers got through; the queued newest events did not.
        assert '"User note number 149"' not in text and '"User note number 0"' in text
        assert "event: memory.created" in text
    # Nor does the replay buffer still hold them.
    with Subscriber(gateway, subject_id="ev-erased", headers={"Last-Event-ID": "1-0"}) as resumed:
        time.sleep(0.3)
        assert resumed.events("memory.created") == []


def test_an_open_stream_does_not_hold_up_the_gateways_shutdown(provider, tmp_path_factory, storage_sqlite):
    from tests.conftest import serve_gateway

    servers: list[Any] = []
    gateway = serve_gateway(provider, storage_sqlite, tmp_path_factory, servers)
    subscriber = Subscriber(gateway)
    subscriber.start()
    assert subscriber.connected.wait(10)
    started = time.monotonic()
    servers[0].stop()
    stopped_in = time.monotonic() - started
    assert subscriber.ended.wait(5)
    assert not servers[0]._thread.is_alive()
    assert stopped_in < 2, stopped_in
    assert subscriber.failure is None  # the stream ended cleanly (the last chunk came)


def test_a_subscriber_that_stopped_reading_holds_up_the_shutdown_no_longer_than_its_bound(
        provider, tmp_path_factory, storage_sqlite):
    """Its last frames wait for room in its full buffers: the stop cuts it off after
    server.shutdown_timeout_seconds (it used to wait forever)."""
    from tests.conftest import serve_gateway

    servers: list[Any] = []
    gateway = serve_gateway(provider, storage_sqlite, tmp_path_factory, servers,
                            server={"shutdown_timeout_seconds": 1}, events=BULKY_EVENTS)
    stuck = StuckSubscriber(gateway, subject_id="ev-stuck-stop")
    try:
        write_latencies(gateway, "ev-stuck-stop", 100)  # enough to fill the socket buffers
        started = time.monotonic()
        servers[0].stop()
        stopped_in = time.monotonic() - started
        assert not servers[0]._thread.is_alive()
        assert stopped_in < 4, stopped_in
        # Its connection was closed: once it reads, what was buffered comes, then the end.
        assert "event: memory.created" in stuck.read_all(quiet_seconds=5)
    finally:
        stuck.close()
