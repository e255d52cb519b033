"""A provider that closes kept-alive connections, or every connection, without answering.

Faults injected, by a tiny HTTP/1.1 server written here over raw asyncio sockets (the
fake provider runs on uvicorn, which cannot be told to misbehave at this level):

* "stale": it answers the first request on each connection (``connection: keep-alive``)
  and closes the connection, unanswered, when a second request arrives on it. That is
  what a client sees when the server closes an idle pooled connection just as a request
  goes out on it (load balancers and providers do after a few idle seconds). The request
  never reached anyone, so the gateway sends it again, once, on a fresh connection: the
  caller sees nothing of it.
* "refuse": it closes every connection, fresh ones too, without answering. That is the
  provider's failure, not a stale connection: one attempt, then ``502
  upstream_unreachable``, logged.
* "truncate": on a reused connection it sends the headers and half the body, then
  closes. The provider got the request (and may bill it), so it is not sent again.

Every turn that is answered is recorded once; none that failed is recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import KEY, PROVIDER_KEY
from tests.faults.conftest import history_of, providers_with

ANSWER = "fresh answer"


class RawProvider:
    """An OpenAI Chat Completions server, just enough of one, misbehaving per ``mode``."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        # (connection number, request number on that connection) of every request received in full.
        self.requests: list[tuple[int, int]] = []
        self._connections = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self.url = ""

    def start(self) -> RawProvider:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop).result(5)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            # End the handlers of connections a client still holds open (their ``finally``
            # closes them), so that no transport outlives the loop.
            handlers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = next(self._connections)
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                body = json.loads(await reader.readexactly(length)) if length else {}
                served += 1
                self.requests.append((connection, served))
                if self.mode == "refuse" or (self.mode == "stale" and served > 1):
                    return  # close without a word
                response = _response(body)
                if self.mode == "truncate" and served > 1:
                    writer.write(response[:len(response) - 20])
                    await writer.drain()
                    return
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the client closed the connection
        finally:
            writer.close()


def _response(request: dict[str, Any]) -> bytes:
    model = request.get("model", "raw")
    if request.get("stream"):
        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return "data: " + json.dumps({"id": "chatcmpl-raw", "object": "chat.completion.chunk", "created": 1,
                                          "model": model, "choices": [{"index": 0, "delta": delta,
                                                                       "finish_reason": finish}]}) + "\n\n"
        body = (chunk({"role": "assistant", "content": ""}) + chunk({"content": ANSWER}) + chunk({}, "stop")
                + "data: [DONE]\n\n").encode()
        content_type = "text/event-stream"
    else:
        body = json.dumps({"id": "chatcmpl-raw", "object": "chat.completion", "created": 1, "model": model,
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                                        "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}).encode()
        content_type = "application/json"
    head = (f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
            "connection: keep-alive\r\n\r\n").encode()
    return head + body


@pytest.fixture
def raw_provider():
    servers: list[RawProvider] = []

    def start(mode: str) -> RawProvider:
        server = RawProvider(mode).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def gateway_on(start_gateway, storage_sqlite, server: RawProvider):
    return start_gateway(storage_sqlite, providers=providers_with(server.url, read=5))


def chat(gw, chat_id: str, *, stream: bool = False) -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", timeout=30,
                      headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY},
                      json={"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "hi"}],
                            "mnx": {"subject_id": "pooled", "chat_id": chat_id, "learn": False}})


def recorded(gw, chat_id: str) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in history_of(gw.url, chat_id)]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_pooled_connection_the_provider_closed_is_retried_once_on_a_fresh_one_unseen_by_the_client(
        start_gateway, storage_sqlite, raw_provider, caplog, stream):
    server = raw_provider("stale")
    gw = gateway_on(start_gateway, storage_sqlite, server)
    caplog.set_level(logging.INFO, logger="gateway.upstream")
    first = chat(gw, "first", stream=stream)
    second = chat(gw, "second", stream=stream)  # goes out on the first one's kept-alive connection

    for response in (first, second):
        assert response.status_code == 200, response.text
        assert ANSWER in response.text
    # The second request met the closed connection, then went out again on a new one.
    assert server.requests == [(1, 1), (1, 2), (2, 1)]
    assert recorded(gw, "first") == [("user", "hi"), ("assistant", ANSWER)]
    assert recorded(gw, "second") == [("user", "hi"), ("assistant", ANSWER)]
    assert any("sending it again" in r.getMessage() for r in caplog.records if r.name == "gateway.upstream")


def test_a_stale_connection_is_retried_on_the_litellm_path_too(start_gateway, storage_sqlite, raw_provider):
    """A GPT model on /v1/messages goes through LiteLLM, which calls the OpenAI SDK with the
    gateway's own client for it (a soak once met a 502 here, when only the native path retried)."""
    server = raw_provider("stale")
    gw = gateway_on(start_gateway, storage_sqlite, server)
    for chat_id in ("first-bridged", "second-bridged"):
        response = httpx.post(gw.url + "/v1/messages", timeout=30,
                              headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY},
                              json={"model": "gpt-4o-mini", "max_tokens": 20,
                                    "messages": [{"role": "user", "content": "hi"}],
                                    "mnx": {"subject_id": "pooled", "chat_id": chat_id, "learn": False}})
        assert response.status_code == 200, response.text
        assert ANSWER in response.text
    assert server.requests == [(1, 1), (1, 2), (2, 1)]
    assert recorded(gw, "second-bridged") == [("user", "hi"), ("assistant", ANSWER)]


def test_the_openai_sdk_sees_two_ordinary_answers_over_a_stale_connection(start_gateway, storage_sqlite,
                                                                          raw_provider):
    server = raw_provider("stale")
    gw = gateway_on(start_gateway, storage_sqlite, server)
    client = gw.openai()
    for chat_id in ("sdk-1", "sdk-2"):
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                                extra_body={"mnx": {"chat_id": chat_id, "learn": False}})
        assert answer.choices[0].message.content == ANSWER
    assert len(server.requests) == 3
    assert recorded(gw, "sdk-2") == [("user", "hi"), ("assistant", ANSWER)]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_provider_that_closes_every_connection_unanswered_is_a_502_after_one_attempt(
        start_gateway, storage_sqlite, raw_provider, caplog, stream):
    server = raw_provider("refuse")
    gw = gateway_on(start_gateway, storage_sqlite, server)
    caplog.set_level(logging.INFO, logger="gateway.upstream")
    started = time.monotonic()
    response = chat(gw, "refused", stream=stream)
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_unreachable"
    assert time.monotonic() - started < 3
    assert server.requests == [(1, 1)]  # a fresh connection failing is the provider's failure: not retried
    warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.upstream" and r.levelno == logging.WARNING]
    assert any("cannot reach openai" in w and "1 attempt" in w for w in warnings), warnings
    assert PROVIDER_KEY not in caplog.text
    assert recorded(gw, "refused") == []


def test_a_stale_connection_is_retried_once_only_even_if_the_fresh_one_fails_too(start_gateway, storage_sqlite,
                                                                                   raw_provider, caplog):
    server = raw_provider("stale")
    gw = gateway_on(start_gateway, storage_sqlite, server)
    caplog.set_level(logging.INFO, logger="gateway.upstream")
    assert chat(gw, "ok").status_code == 200
    server.mode = "refuse"
    response = chat(gw, "then-refused")
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_unreachable"
    assert server.requests == [(1, 1), (1, 2), (2, 1)]  # the stale one, one fresh retry, no more
    assert any("2 attempts" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert recorded(gw, "then-refused") == []


def test_an_answer_cut_off_on_a_reused_connection_is_not_sent_again(start_gateway, storage_sqlite, raw_provider):
    """Headers arrived: the provider had the request (and may bill it). Sending it again could
    run the generation twice, so the caller gets the failure."""
    server = raw_provider("truncate")
    gw = gateway_on(start_gateway, storage_sqlite, server)
    assert chat(gw, "whole").status_code == 200
    response = chat(gw, "cut")
    assert response.status_code == 502, response.text
    assert server.requests == [(1, 1), (1, 2)]
    assert recorded(gw, "cut") == []


def test_the_openai_sdk_gets_a_502_it_may_retry_from_a_provider_that_refuses_every_connection(
        start_gateway, storage_sqlite, raw_provider):
    server = raw_provider("refuse")
    gw = gateway_on(start_gateway, storage_sqlite, server)
    with pytest.raises(openai.APIStatusError) as error:
        gw.openai().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert error.value.status_code == 502 and error.value.code == "upstream_unreachable"
    assert len(server.requests) == 1
