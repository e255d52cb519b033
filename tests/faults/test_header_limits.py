"""Request header limits (gateway.server): past ``server.max_header_bytes`` (request line +
header lines) or ``server.max_headers`` the client gets 431 and is disconnected, before
authentication runs and without the gateway buffering more than the limit.

Spoken over raw sockets, as a hostile client would. Each test crosses a limit, so each
fails on plain uvicorn (which accepts a head of any size).
"""

from __future__ import annotations

import json
import os
import secrets
import select
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from gateway.errors import ConfigError
from gateway.server import HeadLimitedHttpToolsProtocol, uvicorn_config
from tests.conftest import KEY, PROVIDER_KEY, base_config, wait_until
from tests.fake_upstream import free_socket

DEFAULT_LIMIT = 65536
LIMIT = 4096
MAX_HEADERS = 40
MEMORIES = "/api/v1/memories?subject_id=x"
FLOOD_BYTES = 20 * 1024 * 1024


@pytest.fixture
def limited(start_gateway, storage_sqlite):
    """A gateway with small limits, so tests can cross them cheaply."""
    return start_gateway(storage_sqlite, server={"max_header_bytes": LIMIT, "max_headers": MAX_HEADERS})


def request_head(target: str = "/health", *, size: int | None = None,
                 headers: Sequence[tuple[str, str]] = (), method: str = "GET") -> bytes:
    """A request head; given ``size``, an X-Pad header brings it to exactly that many bytes."""
    head = "".join(f"{line}\r\n" for line in [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1",
                                               *(f"{name}: {value}" for name, value in headers)])
    if size is not None:
        padding = size - len(head) - len("X-Pad: \r\n") - len("\r\n")
        assert padding >= 0
        head += f"X-Pad: {'a' * padding}\r\n"
    data = (head + "\r\n").encode()
    assert size is None or len(data) == size
    return data


def long_url_head(size: int) -> bytes:
    """``GET /health?q=aaa...``: a head of exactly ``size`` bytes, nearly all of it URL."""
    base = len(request_head("/health?q="))
    return request_head("/health?q=" + "a" * (size - base))


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    """One TCP connection to a gateway, reading responses that carry a Content-Length."""

    def __init__(self, url: str, timeout: float = 10) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buffer = b""

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _receive(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self) -> Response:
        while b"\r\n\r\n" not in self.buffer:
            assert self._receive(), f"connection closed before a response: {self.buffer!r}"
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            assert self._receive(), "connection closed mid-body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Response(int(status_line.split()[1]), headers, body)

    def closed_by_server(self) -> bool:
        """True once the server has closed the connection (EOF, nothing more to read)."""
        return not self.buffer and not self._receive()


def exchange(url: str, head: bytes) -> Response:
    with RawConnection(url) as connection:
        connection.send(head)
        return connection.response()


def assert_refused_431(connection: RawConnection, what: str) -> None:
    response = connection.response()
    assert response.status == 431, response
    assert response.headers["connection"] == "close"
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "request_header_fields_too_large"
    assert what in response.json()["message"]
    assert connection.closed_by_server()


# --- the byte limit --------------------------------------------------------------------------

def test_a_head_of_exactly_the_default_limit_is_served_and_one_byte_more_gets_431(gateway):
    assert exchange(gateway.url, request_head(size=DEFAULT_LIMIT)).status == 200
    authenticated = request_head(MEMORIES, size=DEFAULT_LIMIT, headers=[("x-mnexium-key", KEY)])
    assert exchange(gateway.url, authenticated).status == 200
    with RawConnection(gateway.url) as connection:
        connection.send(request_head(size=DEFAULT_LIMIT + 1))
        assert_refused_431(connection, f"exceed {DEFAULT_LIMIT} bytes")


def test_an_oversized_head_is_refused_before_authentication(limited):
    wrong_key = [("x-mnexium-key", "mnx_live_wrong")]
    # Within the limit, authentication runs and refuses the key...
    assert exchange(limited.url, request_head(MEMORIES, size=LIMIT, headers=wrong_key)).status == 401
    # ...one byte past it, the request never reaches the application: no 401, a 431.
    with RawConnection(limited.url) as connection:
        connection.send(request_head(MEMORIES, size=LIMIT + 1, headers=wrong_key))
        assert_refused_431(connection, f"exceed {LIMIT} bytes")


def test_a_huge_url_counts_against_the_same_budget(limited):
    assert exchange(limited.url, long_url_head(LIMIT)).status == 200
    with RawConnection(limited.url) as connection:
        connection.send(long_url_head(LIMIT + 1))
        assert_refused_431(connection, f"exceed {LIMIT} bytes")
    with RawConnection(limited.url) as connection:
        connection.send(long_url_head(1024 * 1024))
        assert_refused_431(connection, f"exceed {LIMIT} bytes")


# --- the header count ----------------------------------------------------------------------

def test_too_many_header_fields_get_431(limited):
    def with_fields(count: int) -> bytes:  # Host is the first field
        return request_head(headers=[(f"X-Field-{i}", "v") for i in range(count - 1)])

    assert exchange(limited.url, with_fields(MAX_HEADERS)).status == 200
    with RawConnection(limited.url) as connection:
        connection.send(with_fields(MAX_HEADERS + 1))
        assert_refused_431(connection, f"more than {MAX_HEADERS} header fields")


# --- unterminated streams: cut at the limit, not buffered ------------------------------------

def traced_peak_growth(run) -> tuple[Any, int]:
    """Run ``run()`` and return its result and the peak growth of Python's heap meanwhile.

    The gateway runs in this process (a server thread), so this measures what it
    buffered: httptools and uvicorn keep a head's bytes as Python bytes objects.
    """
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = run()
        return result, tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("opening", [
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Flood: ",  # one header that never ends
    b"GET /health?q=",  # a request line that never ends
], ids=["header", "url"])
def test_an_unterminated_head_is_cut_at_the_limit_without_being_buffered(gateway, opening):
    chunk = b"a" * 65536

    def flood() -> tuple[int, Response, bool, float]:
        started = time.monotonic()
        sent = 0
        with RawConnection(gateway.url) as connection:
            connection.send(opening)
            while sent < FLOOD_BYTES:
                connection.send(chunk)
                sent += len(chunk)
                # A millisecond's wait lets the gateway's thread run, and shows its answer.
                if select.select([connection.sock], [], [], 0.001)[0]:
                    break
            response = connection.response()
            closed = connection.closed_by_server()
        return sent, response, closed, time.monotonic() - started

    (sent, response, closed, elapsed), peak_growth = traced_peak_growth(flood)
    assert response.status == 431 and closed
    # Answered long before the 20 MB were out (the socket buffers on either side hold a few MB)...
    assert sent < FLOOD_BYTES / 4 and elapsed < 10
    # ...and the gateway buffered about the limit: plain uvicorn's peak here is over 20 MB.
    assert peak_growth < 4 * 1024 * 1024, peak_growth


def test_an_unterminated_trailer_field_is_cut_too(gateway):
    """A chunked body's trailer fields are buffered like headers; past the limit the connection is closed."""
    chunk = b"a" * 65536

    def flood() -> int:
        sent = 0
        with RawConnection(gateway.url) as connection:
            connection.send(request_head("/api/v1/memories", method="POST",
                                         headers=[("Transfer-Encoding", "chunked")]))
            connection.send(b"5\r\nhello\r\n0\r\nX-Trailer: ")
            try:
                while sent < FLOOD_BYTES:
                    connection.send(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
        return sent

    sent, peak_growth = traced_peak_growth(flood)
    assert sent < FLOOD_BYTES / 4
    assert peak_growth < 4 * 1024 * 1024, peak_growth


def test_a_body_sent_with_a_head_of_the_full_size_is_read_whole(limited):
    """The head ends exactly at the limit, in the middle of a read that goes on with the body."""
    text = "b" * 200_000
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}).encode()

    def chat_head(size: int) -> bytes:
        return request_head("/v1/chat/completions", method="POST", size=size, headers=[
            ("authorization", f"Bearer {KEY}"), ("x-openai-key", PROVIDER_KEY),
            ("content-type", "application/json"), ("content-length", str(len(body)))])

    with RawConnection(limited.url) as connection:
        connection.send(chat_head(LIMIT) + body)
        response = connection.response()
        assert response.status == 200
        assert response.json()["choices"][0]["message"]["content"] == "echo: " + text
    with RawConnection(limited.url) as connection:
        connection.send(chat_head(LIMIT + 1) + body)
        assert_refused_431(connection, f"exceed {LIMIT} bytes")


# --- keep-alive and pipelining ---------------------------------------------------------------

def test_each_request_on_a_kept_alive_connection_gets_the_whole_budget(limited):
    with RawConnection(limited.url) as connection:
        for _ in range(2):
            connection.send(request_head(size=LIMIT))
            response = connection.response()
            assert response.status == 200 and response.headers.get("connection") != "close"
        connection.send(request_head(size=LIMIT + 1))
        assert_refused_431(connection, f"exceed {LIMIT} bytes")


@pytest.mark.parametrize("first_size", [None, LIMIT], ids=["short-first", "full-first"])
def test_pipelined_requests_are_each_held_to_the_limit_and_answered_in_order(limited, first_size):
    first = request_head(headers=[("x-order", "first")], size=first_size)
    with RawConnection(limited.url) as connection:
        # Sent in one write, so the second head starts in the middle of a read.
        connection.send(first + request_head(size=LIMIT))
        assert [connection.response().status for _ in range(2)] == [200, 200]
    with RawConnection(limited.url) as connection:
        connection.send(first + request_head(size=LIMIT + 100))
        assert connection.response().status == 200  # the earlier request is answered first
        assert_refused_431(connection, f"exceed {LIMIT} bytes")


# --- configuration and the production server setup ------------------------------------------

def test_the_limits_have_defaults_and_floors(provider):
    config = base_config(provider.url, {"backend": "sqlite"})
    assert (config.server.max_header_bytes, config.server.max_headers) == (DEFAULT_LIMIT, 100)
    for setting, too_low in [("max_header_bytes", 1023), ("max_headers", 31), ("max_headers", 0)]:
        with pytest.raises(ConfigError, match=f"server.{setting}"):
            base_config(provider.url, {"backend": "sqlite"}, server={setting: too_low})


def test_the_production_server_config_carries_the_limits(provider):
    config = base_config(provider.url, {"backend": "sqlite"}, server={"max_header_bytes": 2048, "max_headers": 50})
    served = uvicorn_config(object(), config)
    assert issubclass(served.http, HeadLimitedHttpToolsProtocol)
    assert (served.http.max_header_bytes, served.http.max_headers) == (2048, 50)
    assert served.h11_max_incomplete_event_size == 2048  # should http="h11" ever be chosen
    assert (served.loop, served.host, served.port) == ("uvloop", "127.0.0.1", 8787)
    assert uvicorn_config(object(), config, host="0.0.0.0", port=9).port == 9


def _serves(url: str, head: bytes) -> bool:
    try:
        return exchange(url, head).status == 200
    except OSError:
        return False


def test_mnx_gateway_serve_enforces_the_configured_limit(provider, tmp_path):
    # A key only this gateway knows: the port is free when picked, but another test's gateway
    # (running in parallel) may take it before this process binds it, and answer /health too.
    own_key = f"mnx_live_header_limits_{secrets.token_hex(6)}"
    probe = request_head(MEMORIES, headers=[("x-mnexium-key", own_key)])
    for _attempt in range(3):
        sock = free_socket()
        port = sock.getsockname()[1]
        sock.close()
        config = {
            "server": {"port": port, "max_header_bytes": 2048, "max_headers": 32, "log_level": "warning"},
            "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "gateway.db")}},
            "memory": {"vectors": {"edge": {"path": str(tmp_path / "memories")}}},
            "projects": [{"id": "default", "keys": [{"key": own_key}]}],
            "providers": {"openai": {"api_base": provider.url + "/v1"}},
        }
        (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
        process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config",
                                    str(tmp_path / "gateway.yaml")],
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: _serves(url, probe) or process.poll() is not None,  # noqa: B023 (called now)
                          timeout=60), "gateway did not start"
        if process.poll() is None:
            break
        # It exited: the port was taken meanwhile. Another one.
    else:
        raise AssertionError("three free ports were taken before the gateway could bind them")
    try:
        assert exchange(url, request_head(size=2048)).status == 200
        with RawConnection(url) as connection:
            connection.send(request_head(size=2049))
            assert_refused_431(connection, "exceed 2048 bytes")
    finally:
        process.terminate()
        process.wait(timeout=20)
