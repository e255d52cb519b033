"""HTTP/1.1 to providers over pooled keep-alive connections: the native passthrough's client.

Why not httpx here: a passthrough turn's provider call through httpx.AsyncClient cost about
600 us of CPU on this project's 2-core benchmark machine (client, auth and redirect
layers, httpcore's pool bookkeeping, anyio scopes around every read and write, h11, five
nested byte streams), the largest single cost of a recall-only turn (py-spy: 40% of its
GIL time). The same call here costs about 150 us (bench/README.md, issue 23). It does only what a
provider call needs:
- POST with a body of known length; the request written with one system call;
- answers with a length, chunked or until close, parsed by httptools (the C parser uvicorn
  already uses for the gateway's own requests), read whole or relayed as they arrive
  (a slow reader pauses the socket beyond ``_PAUSE_READING_AT`` buffered bytes);
- keep-alive pools per origin (``max_idle_per_origin``, idle ones dropped after
  ``idle_seconds``), at most ``max_connections`` requests in flight (others wait up to
  the pool timeout);
- plain TCP and TLS (httpx's default trust store, built once per process);
- a request that went out on a kept-alive connection the provider had just closed, with
  not a byte of answer, is sent again once on a new connection (the provider never got
  it); any other failure is the provider's and is not repeated;
- httpx's exception types (ConnectError, ReadTimeout, ...), so callers map failures once.

It asks for no compression (``accept-encoding: identity``), keeps and sends no cookies and
follows no redirects. It does not speak HTTP/2, and it does not go through a proxy named by
the environment (HTTPS_PROXY): neither did the httpx client it replaces, which ignores the
environment when given its own transport, as the gateway's was.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import cast

import httptools
import httpx

from gateway import __version__

log = logging.getLogger("gateway.upstream")

_PAUSE_READING_AT = 1 << 20
_RESUME_READING_AT = 1 << 18
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSAFE_IN_VALUE = re.compile(r"[\x00\r\n]")


@functools.cache
def default_tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CA bundle), built once per process: building one
    loads the bundle (~60 ms of CPU), and every gateway a process starts (the test suite starts
    hundreds) verifies providers the same way."""
    return httpx.create_ssl_context()


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: httpx.URL) -> _Origin:
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"a provider URL must be http or https, not {url.scheme!r}")
        return cls(url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


async def _wait(waiter: asyncio.Future[None], timeout: float | None) -> None:
    """``waiter``, or TimeoutError after ``timeout`` seconds (a timer, not a task)."""
    timer = asyncio.get_running_loop().call_later(timeout, _expire, waiter) if timeout is not None else None
    try:
        await waiter
    finally:
        if timer is not None:
            timer.cancel()


class _Connection(asyncio.Protocol):
    """One socket to a provider, and the answer being read on it."""

    def __init__(self, origin: _Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.error: BaseException | None = None
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._in_exchange = False
        self._begin_answer()

    def _begin_answer(self) -> None:
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.answered = False  # a byte of the answer arrived
        self.headers_done = False
        self.complete = False
        self.keep_alive = False

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's don't derive from asyncio's

    def data_received(self, data: bytes) -> None:
        if not self._in_exchange:  # a provider talking on an idle connection: it is not reusable
            self.close()
            return
        self.answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self.error = httpx.RemoteProtocolError(f"malformed answer: {error}")
            self.close()
        if self.buffered >= _PAUSE_READING_AT and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.error is None and exc is not None:
            self.error = exc
        self._wake()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake()

    # -- httptools callbacks -----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.headers_done = self.status >= 200

    def on_body(self, body: bytes) -> None:
        self.chunks.append(bytes(body))
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self.status < 200:  # 100 Continue and friends: the real answer follows
            self.raw_headers = []
            return
        self.complete = True
        # Asked now: once the callback returns, the parser is ready for the next message and forgets.
        self.keep_alive = self._parser.should_keep_alive()

    # -- used by the pool and the response ----------------------------------------------

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, timeout: float | None) -> None:
        """Until something arrives (or the socket ends, or writing may go on)."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await _wait(self._waiter, timeout)
        finally:
            self._waiter = None

    async def send(self, data: bytes, write_timeout: float | None) -> None:
        assert self.transport is not None
        self._in_exchange = True
        self._begin_answer()
        self.transport.write(data)
        while self._writing_paused and not self.closed:
            try:
                await self.wait(write_timeout)
            except TimeoutError:
                raise httpx.WriteTimeout(f"could not send the request within {write_timeout} s") from None

    def take(self) -> bytes:
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self._reading_paused and self.buffered <= _RESUME_READING_AT and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return chunk

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed

    def end_exchange(self) -> None:
        self._in_exchange = False
        self.idle_since = time.monotonic()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _read_error(connection: _Connection) -> httpx.HTTPError:
    if isinstance(connection.error, httpx.HTTPError):
        return connection.error
    reason = f": {connection.error}" if connection.error else ""
    if not connection.answered:
        return httpx.RemoteProtocolError(f"the server closed the connection without answering{reason}")
    return httpx.ReadError(f"the server closed the connection mid-answer{reason}")


class _Stale(Exception):
    """A kept-alive connection turned out closed before any answer: the request never arrived."""


class ProviderResponse:
    """An answer's status and headers; its body read whole (``read``) or as it comes (``chunks``).
    ``aclose`` gives the connection back (or closes it, if the answer was not read to the end)."""

    def __init__(self, pool: ProviderHTTP, connection: _Connection, read_timeout: float | None) -> None:
        self._pool = pool
        self._connection = connection
        self._read_timeout = read_timeout
        self._released = False
        self.status_code = connection.status
        headers: dict[str, str] = {}
        for raw_name, raw_value in connection.raw_headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers = headers
        # An answer with neither a length nor chunks ends when the server closes the connection.
        self._ends_at_close = "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "")

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        connection = self._connection
        try:
            while True:
                if connection.chunks:
                    yield connection.take()
                elif connection.complete:
                    break
                elif connection.closed:
                    if self._ends_at_close and connection.error is None:
                        break
                    raise _read_error(connection)
                else:
                    try:
                        await connection.wait(self._read_timeout)
                    except TimeoutError:
                        raise httpx.ReadTimeout(f"no answer within {self._read_timeout} s") from None
        finally:
            await self.aclose()

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self._connection)


class ProviderHTTP:
    def __init__(self, *, max_connections: int = 250, max_idle_per_origin: int = 32, idle_seconds: float = 5.0,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self._max_in_flight = max_connections
        self._max_idle = max_idle_per_origin
        self._idle_seconds = idle_seconds
        self._tls_context = tls_context
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._in_flight = 0
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._user_agent = f"mnx-gateway/{__version__}"

    async def post(self, url: httpx.URL, headers: Mapping[str, str], body: bytes,
                   timeout: httpx.Timeout) -> ProviderResponse:
        """Send ``body`` to ``url``; returns once the answer's headers are in."""
        origin = _Origin.of(url)
        request = self._request_bytes(origin, url, headers, body)
        await self._take_slot(timeout.pool)
        try:
            try:
                return await self._exchange(origin, request, timeout, fresh=False)
            except _Stale as stale:
                log.info("%s closed an idle connection as a request went out (%s); sending it again",
                         origin.host, stale)
            try:
                return await self._exchange(origin, request, timeout, fresh=True)
            except httpx.HTTPError as error:
                error.sent_again = True  # type: ignore[attr-defined]  # for the caller's log line
                raise
        except BaseException:
            self._give_slot_back()
            raise

    def release(self, connection: _Connection) -> None:
        """The exchange on ``connection`` is over: keep it for the next request or close it."""
        connection.end_exchange()
        idle = self._idle.setdefault(connection.origin, [])
        if connection.reusable() and len(idle) < self._max_idle:
            idle.append(connection)
        else:
            connection.close()
        self._give_slot_back()

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    # -- internals ---------------------------------------------------------------------

    def _request_bytes(self, origin: _Origin, url: httpx.URL, headers: Mapping[str, str], body: bytes) -> bytes:
        lines = [f"POST {url.raw_path.decode('ascii')} HTTP/1.1", f"host: {origin.host_header}",
                 f"user-agent: {self._user_agent}", "accept: */*", "accept-encoding: identity",
                 f"content-length: {len(body)}"]
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name) or _UNSAFE_IN_VALUE.search(value):
                # Header values come from callers (their provider keys): never let one end a line.
                raise httpx.LocalProtocolError(f"illegal header {name!r}")
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def _exchange(self, origin: _Origin, request: bytes, timeout: httpx.Timeout, *,
                        fresh: bool) -> ProviderResponse:
        connection = None if fresh else self._idle_connection(origin)
        reused = connection is not None
        if connection is None:
            connection = await self._connect(origin, timeout.connect)
        try:
            await connection.send(request, timeout.write)
            while not connection.headers_done:
                if connection.closed:
                    if reused and not connection.answered:
                        raise _Stale(type(connection.error).__name__ if connection.error else "closed")
                    raise _read_error(connection)
                try:
                    await connection.wait(timeout.read)
                except TimeoutError:
                    raise httpx.ReadTimeout(f"no answer within {timeout.read} s") from None
        except BaseException:
            connection.close()
            raise
        return ProviderResponse(self, connection, timeout.read)

    def _idle_connection(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        oldest_kept = time.monotonic() - self._idle_seconds
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be closed by now
            if not connection.closed and connection.idle_since >= oldest_kept:
                return connection
            connection.close()
        return None

    async def _connect(self, origin: _Origin, timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = None
        if origin.scheme == "https":
            tls = self._tls_context or default_tls_context()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(origin), origin.host, origin.port, ssl=tls,
                                       server_hostname=origin.host if tls else None), timeout)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {origin.host} within {timeout} s") from None
        except (OSError, ssl.SSLError) as error:
            raise httpx.ConnectError(str(error) or type(error).__name__) from None
        return connection

    async def _take_slot(self, timeout: float | None) -> None:
        if self._in_flight < self._max_in_flight and not self._slot_waiters:
            self._in_flight += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._slot_waiters.append(waiter)
        try:
            await _wait(waiter, timeout)  # a slot handed over by _give_slot_back
        except BaseException as error:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._give_slot_back()  # handed over just as this waiter gave up: pass it on
            elif waiter in self._slot_waiters:
                self._slot_waiters.remove(waiter)
            if isinstance(error, TimeoutError):
                raise httpx.PoolTimeout(f"{self._max_in_flight} provider requests in flight") from None
            raise

    def _give_slot_back(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on; the in-flight count stays
                return
        self._in_flight -= 1

