"""Redis, the shared store, killed mid-run and started again.

Fault injected: the test's own redis-server (no persistence) is SIGKILLed, as a crashed
or OOM-killed Redis would go, while a gateway runs on it; later a new one is started on
the same port. What a client must see:

* a stream in progress when Redis dies cannot be recorded at its end: it ends with the
  surface's in-band ``turn_not_recorded`` error instead of its normal last frame, so no
  client takes an unrecorded turn for a recorded one (the SDKs raise);
* while Redis is down (or frozen: SIGSTOP), every request that needs it fails fast with
  ``503 storage_unavailable`` in its surface's error shape: not a hang, not a 500;
* once Redis is back, the same gateway process serves again (its pool reconnects, its
  job worker still runs) and a new turn is stored exactly once.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import KEY, wait_until
from tests.faults.conftest import (PROVIDER_HEADERS, error_code, history_of, in_band_error_code, jobs_of,
                                   memories_of, sse_data, turn_request)

NOT_RECORDED = "turn_not_recorded"


@pytest.fixture
def gw(start_gateway, private_redis):
    return start_gateway({"backend": "redis", "redis": {"url": private_redis.url, "key_prefix": "t:",
                                                        "pool_timeout_seconds": 1}})


def post(gw, surface: str, model: str, chat: str, **kwargs: Any) -> httpx.Response:
    path, body, extra = turn_request(surface, model, chat, **kwargs)
    return httpx.post(gw.url + path, json=body, headers={"x-mnexium-key": KEY, **PROVIDER_HEADERS, **extra},
                      timeout=30)


class RawStream(threading.Thread):
    """Reads one streamed turn to its end in the background; ``flowing`` is set once a few
    events have arrived, ``events`` holds every ``data:`` payload."""

    def __init__(self, gw, surface: str, model: str, chat: str) -> None:
        super().__init__(daemon=True)
        self.gw, self.surface, self.model, self.chat = gw, surface, model, chat
        self.flowing = threading.Event()
        self.status: int | None = None
        self.text = ""
        self.failure: BaseException | None = None

    def run(self) -> None:
        path, body, extra = turn_request(self.surface, self.model, self.chat, stream=True, learn=False)
        try:
            with httpx.stream("POST", self.gw.url + path, json=body, timeout=30,
                              headers={"x-mnexium-key": KEY, **PROVIDER_HEADERS, **extra}) as response:
                self.status = response.status_code
                for piece in response.iter_text():
                    self.text += piece
                    if self.text.count("data:") >= 3:
                        self.flowing.set()
        except BaseException as error:  # reported by the test
            self.failure = error
        finally:
            self.flowing.set()

    @property
    def events(self) -> list[Any]:
        return sse_data(self.text)


class SdkStream(threading.Thread):
    """The same through the official OpenAI SDK, which must raise rather than end quietly."""

    def __init__(self, gw, chat: str) -> None:
        super().__init__(daemon=True)
        self.gw, self.chat = gw, chat
        self.flowing = threading.Event()
        self.chunks = 0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            stream = self.gw.openai().chat.completions.create(
                model="slow-stream", stream=True, messages=[{"role": "user", "content": "count for me"}],
                extra_body={"mnx": {"subject_id": "faulty", "chat_id": self.chat, "log": True, "learn": False}})
            for _ in stream:
                self.chunks += 1
                if self.chunks >= 3:
                    self.flowing.set()
        except BaseException as error:
            self.failure = error
        finally:
            self.flowing.set()


def test_a_stream_in_progress_when_redis_dies_ends_with_turn_not_recorded_not_a_cut_connection(gw, private_redis):
    # Four streams at once (the provider streams for 10 s): the raw events on three
    # surfaces (Messages and Gemini reach the provider through LiteLLM), and the OpenAI SDK.
    raw = {surface: RawStream(gw, surface, "slow-stream", f"dies-{surface}") for surface in ("chat", "messages",
                                                                                           "gemini")}
    sdk = SdkStream(gw, "dies-sdk")
    streams = [*raw.values(), sdk]
    for stream in streams:
        stream.start()
    for stream in streams:
        assert stream.flowing.wait(15)
    assert all(s.failure is None for s in streams), [s.failure for s in streams]
    private_redis.kill()
    for stream in streams:
        stream.join(30)
        assert not stream.is_alive()

    for surface, stream in raw.items():
        assert stream.failure is None, f"{surface}: the connection broke instead: {stream.failure!r}"
        assert stream.status == 200
        events = stream.events
        assert any("tick" in str(e) for e in events[:-1])  # the answer itself got through...
        assert in_band_error_code(surface, events[-1]) == NOT_RECORDED, (surface, events[-3:])  # ...then the error
        assert "[DONE]" not in events
        assert not any(isinstance(e, dict) and e.get("type") == "message_stop" for e in events)
    assert isinstance(sdk.failure, openai.APIError) and not isinstance(sdk.failure, openai.APIConnectionError), \
        repr(sdk.failure)
    assert sdk.failure.code == NOT_RECORDED
    assert sdk.chunks >= 3


@pytest.mark.parametrize("surface", ["chat", "messages", "gemini", "responses"])
def test_with_redis_down_a_turn_fails_fast_with_503_storage_unavailable_in_the_surfaces_shape(gw, private_redis,
                                                                                                provider, surface):
    private_redis.kill()
    for stream in (False, True):
        started = time.monotonic()
        response = post(gw, surface, "gpt-4o-mini", "down", stream=stream)
        assert time.monotonic() - started < 5
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/json"
        assert error_code(surface, response.json()) == "storage_unavailable"
    # Nothing reached the provider: a turn that cannot be recorded is not sent.
    assert provider.requests == []


def test_with_redis_down_the_rest_api_fails_fast_with_503_storage_unavailable(gw, private_redis):
    private_redis.kill()
    with gw.rest() as rest:
        for method, path, kwargs in [
            ("GET", "/memories", {"params": {"subject_id": "faulty"}}),
            ("POST", "/memories", {"json": {"subject_id": "faulty", "text": "I like figs"}}),
            ("GET", "/chat/history/list", {"params": {"subject_id": "faulty"}}),
            ("GET", "/jobs", {}),
            ("DELETE", "/subjects/faulty", {}),
        ]:
            started = time.monotonic()
            response = rest.request(method, path, **kwargs)
            assert time.monotonic() - started < 5, (method, path)
            assert response.status_code == 503, (method, path, response.text)
            assert error_code("mnexium", response.json()) == "storage_unavailable", (method, path)


def test_a_frozen_redis_is_a_503_after_the_socket_timeout_not_a_hang(gw, private_redis):
    """SIGSTOP: the port still accepts connections but nothing answers (a stalled server, a
    network partition). redis-py's default 5 s socket timeout (the gateway sets none of its
    own) is what bounds the wait."""
    assert post(gw, "chat", "gpt-4o-mini", "frozen").status_code == 200
    private_redis.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = post(gw, "chat", "gpt-4o-mini", "frozen")
        elapsed = time.monotonic() - started
    finally:
        private_redis.process.send_signal(signal.SIGCONT)
    assert response.status_code == 503 and error_code("chat", response.json()) == "storage_unavailable"
    assert elapsed < 8, elapsed
    assert wait_until(lambda: post(gw, "chat", "gpt-4o-mini", "thawed").status_code == 200, timeout=10)
    assert len(history_of(gw.url, "frozen")) == 2  # the first turn, once


def test_once_redis_is_back_the_same_gateway_serves_again_and_stores_each_turn_once(gw, private_redis):
    assert post(gw, "chat", "gpt-4o-mini", "before").status_code == 200
    private_redis.kill()
    assert post(gw, "chat", "gpt-4o-mini", "during").status_code == 503
    private_redis.start()  # same port, empty (no persistence)

    def serving() -> bool:
        return post(gw, "chat", "gpt-4o-mini", "probe", log=False, learn=False).status_code == 200
    assert wait_until(serving, timeout=10, interval=0.2)
    response = post(gw, "chat", "gpt-4o-mini", "after", learn="force", subject_id="back")
    assert response.status_code == 200, response.text
    history = history_of(gw.url, "after", "back")
    assert [(m["role"], m["content"]) for m in history] == [("user", "My favorite tree is the oak"),
                                                             ("assistant", "echo: My favorite tree is the oak")]
    # The job worker lived through the outage: the turn's learn job runs, once.
    assert wait_until(lambda: memories_of(gw.url, "back") and not jobs_of(gw.url), timeout=10)
    assert [m["text"] for m in memories_of(gw.url, "back")] == ["User's favorite tree is the oak"]
    with gw.rest() as rest:
        assert rest.get("/chat/history/list", params={"subject_id": "back"}).json()["chats"][0]["message_count"] == 2
