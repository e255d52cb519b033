"""The one place the gateway's HTTP server is configured, and the header limits it enforces.

Why: uvicorn's httptools protocol puts no bound on a request head. httptools keeps a
header field to itself until the next one starts, joining every piece that arrives;
uvicorn keeps the URL and each finished header in memory; and nothing reaches the
application before the blank line that ends the head. So a client that never sends
that line makes the gateway buffer whatever it sends, before any gateway code (and so
before authentication) runs. In a security review one unauthenticated 50 MB header was
accepted, and eight unterminated 100 MB ones took the process from 427 MB to 1 GB.

``HeadLimitedHttpToolsProtocol`` is uvicorn's protocol with two limits per request,
``server.max_header_bytes`` (request line + header lines) and ``server.max_headers``:

* it counts the bytes of a request head as they are received and never hands the
  parser more of them than the limit, and it counts header fields as the parser
  finishes them (a pipelined head that starts in the middle of a read is measured
  once complete, and meanwhile held to the limit plus that one read);
* past either limit the client gets ``431 Request Header Fields Too Large`` (a small
  JSON body, ``Connection: close``) and the connection is closed. The application
  never sees the request.

The trailer fields that may end a chunked body are parsed and buffered just like
headers, so they get the same budget; a response may already be under way by then,
so crossing it there closes the connection without a 431.

It re-implements uvicorn's data_received and on_header and reads its per-request
state (url, headers, cycle): re-check it when upgrading uvicorn (written against 0.54;
tests/faults/test_header_limits.py exercises every path).

Everything that serves the gateway (``mnx-gateway serve``, the test suite) builds its
``uvicorn.Config`` with :func:`uvicorn_config`, and runs it with :class:`GatewayServer`, so
the tests run what production runs.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, NoReturn

import httptools
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.config import GatewayConfig
from gateway.errors import ConfigError

# After a 431 the server still reads (and drops) what the client sends, for this long,
# before closing. Closing a socket that has unread data in it makes the kernel answer
# with a TCP reset, which can destroy the 431 before the client has read it. Go's
# net/http waits the same 500 ms after its own 431 (rstAvoidanceDelay), for that reason.
REFUSAL_LINGER_SECONDS = 0.5


class HeaderLimitExceeded(Exception):
    """Raised from a parser callback, once the refusal is under way, to stop httptools at once."""


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded request heads (see the module docstring).

    Its cost is a len() and a few integer operations per read, a length check per
    header field and a few attribute writes per request: nothing scans the bytes in
    Python.
    """

    # Set by head_limited_protocol() on a subclass, from the gateway's config.
    max_header_bytes = 64 * 1024
    max_headers = 100

    def __init__(self, config: uvicorn.Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # The limits as instance attributes: read on every header field, and an instance
        # attribute is the fastest to read.
        self.max_header_bytes = self.max_header_bytes
        self.max_headers = self.max_headers
        # The bytes received since the parser last handed anything over (a complete head,
        # body data, the end of a message): it and uvicorn may be holding all of them, so
        # this is the count that is capped. While a head is being received, it is exactly
        # the size of that head so far, unless the head began in the middle of a read.
        self._bytes_without_progress = 0
        self._parser_progressed = False
        # Whether the next bytes belong to a request head, or to a body and its trailers.
        self._reading_head = True
        # A pipelined head that began in the middle of a read, after the end of the
        # request before it: the count above can't see that read's share of it (at most
        # one read, 256 KB), so its size is checked again once it is complete.
        self._head_began_mid_read = False
        # Once a limit is crossed, the rest of the stream is read and dropped, never parsed.
        self._refused = False
        # A 431 waiting for the responses to earlier pipelined requests, which go first.
        self._waiting_refusal: str | None = None
        self._linger_timer: asyncio.TimerHandle | None = None

    # Reading

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        unparsed = memoryview(data)  # sliced below without copying
        budget = self.max_header_bytes - self._bytes_without_progress
        while self._reading_head and len(unparsed) > budget:
            # This read takes the head past the limit unless the head ends within the
            # budget: parse only the budget, and if the parser has nothing to show for it
            # (no end of head), the head is too large. Otherwise the rest of the read is
            # body or the next request, parsed with a fresh budget. (The budget is 0 when
            # earlier reads brought an unfinished head to exactly the limit.)
            if budget > 0 and not self._feed(unparsed[:budget]):
                return
            if budget == 0 or not self._parser_progressed:
                self._refuse(self._too_many_bytes())
                return
            unparsed = unparsed[budget:]
            budget = self.max_header_bytes - self._bytes_without_progress
        if unparsed and self._feed(unparsed) and self._bytes_without_progress > self.max_header_bytes:
            # Past the head, only trailer fields (or a chunk-size line that never ends) can
            # get here. Reads there are parsed whole, so that a large body isn't split up:
            # this is caught at most one read (256 KB) late.
            self._refuse(self._too_many_bytes())

    def _feed(self, data: memoryview) -> bool:
        """Parse ``data`` and count it; False when parsing stopped (bad request, upgrade, refusal)."""
        self._parser_progressed = False
        self._bytes_without_progress += len(data)
        # What uvicorn's own data_received does, with a limit crossed in a callback told
        # apart from a malformed request.
        self._unset_keepalive_if_required()
        keep_parsing = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if not self._refused:
                message = "Invalid HTTP request received."
                self.logger.warning(message)
                self.send_400_response(message)
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            keep_parsing = False
        if self._parser_progressed:
            self._bytes_without_progress = 0
        return keep_parsing

    # Parser callbacks

    def on_message_begin(self) -> None:
        self._head_began_mid_read = self._parser_progressed
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        # self.headers holds the request's header fields so far, and then its trailer fields.
        if len(self.headers) >= self.max_headers:
            self._stop(f"The request has more than {self.max_headers} header fields.")
        # uvicorn's on_header, inlined rather than called: this runs for every header field.
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._head_began_mid_read and self._parsed_head_size() > self.max_header_bytes:
            self._stop(self._too_many_bytes())
        self._reading_head = False
        self._parser_progressed = True
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._parser_progressed = True
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._reading_head = True
        self._parser_progressed = True
        super().on_message_complete()

    def _parsed_head_size(self) -> int:
        """The head's size from what the parser reported: never more than the bytes it took,
        as the optional whitespace around header values is left out."""
        request_line = len(self.parser.get_method()) + len(b" ") + len(self.url) + len(b" HTTP/1.1\r\n")
        header_lines = sum(len(name) + len(b":") + len(value) + len(b"\r\n") for name, value in self.headers)
        return request_line + header_lines + len(b"\r\n")

    def _stop(self, message: str) -> NoReturn:
        self._refuse(message)
        raise HeaderLimitExceeded(message)

    def _too_many_bytes(self) -> str:
        if self._reading_head:
            return f"The request line and headers exceed {self.max_header_bytes} bytes."
        return f"The trailer fields of the chunked body exceed {self.max_header_bytes} bytes."

    # Refusing

    def _refuse(self, message: str) -> None:
        self._refused = True
        client = f"{self.client[0]}:{self.client[1]:d}" if self.client else "a client"
        self.logger.warning("%s - request refused: %s", client, message)
        if not self._reading_head:
            # Trailer fields: the application has the request and may be answering it,
            # so a 431 can't be sent cleanly; the connection is closed.
            self.transport.close()
        elif self.cycle is None or self.cycle.response_complete:
            self._send_431(message)
        else:
            # Pipelining: an earlier request is still being answered, and responses go out
            # in order. on_response_complete sends the 431 after the last of them.
            self._waiting_refusal = message
            self.flow.pause_reading()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if (self._waiting_refusal is not None and self.cycle.response_complete
                and not self.transport.is_closing()):
            self._send_431(self._waiting_refusal)

    def _send_431(self, message: str) -> None:
        self._waiting_refusal = None
        self._unset_keepalive_if_required()
        body = json.dumps({"error": "request_header_fields_too_large", "message": message}).encode()
        response = [STATUS_LINE[431]]
        for name, value in self.server_state.default_headers:
            response += [name, b": ", value, b"\r\n"]
        response += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
                     b"connection: close\r\n\r\n", body]
        self.transport.write(b"".join(response))
        if not self.transport.can_write_eof():  # TLS
            self.transport.close()
            return
        # The 431, then a FIN; what the client still sends is dropped (see REFUSAL_LINGER_SECONDS).
        # A client that reads the answer and hangs up ends the connection sooner.
        self.transport.write_eof()
        self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(REFUSAL_LINGER_SECONDS, self.transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)


def head_limited_protocol(max_header_bytes: int, max_headers: int) -> type[HeadLimitedHttpToolsProtocol]:
    """The protocol class with these limits, for uvicorn's ``http`` option (one instance per connection)."""
    return type(HeadLimitedHttpToolsProtocol.__name__, (HeadLimitedHttpToolsProtocol,),
                {"max_header_bytes": max_header_bytes, "max_headers": max_headers})


# The key under which the app's lifespan state holds what to call when the server begins to stop.
BEFORE_SHUTDOWN = "gateway.before_shutdown"


class GatewayServer(uvicorn.Server):
    """uvicorn's server, telling the app when it begins to shut down.

    uvicorn stops accepting connections, then waits for every open response to finish
    before it runs the app's lifespan shutdown, and tells the app nothing meanwhile. A
    memory event stream (GET /events/memories) never finishes by itself, so one open
    subscriber held a stopping gateway until the process was killed. The app's lifespan
    leaves a callable under ``BEFORE_SHUTDOWN`` in its state; it is called first, before
    anything else here can accept a request, and ends the streams.

    A stream whose client stopped reading cannot end, though: its last bytes wait for
    room in the client's full buffers. uvicorn cancels what is still running after
    ``timeout_graceful_shutdown`` (``server.shutdown_timeout_seconds``), but a cancelled
    response's connection still waits to flush those bytes, so the connections left then
    are aborted here: the process stops within the bound whatever its clients do."""

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        before_shutdown = self.lifespan.state.get(BEFORE_SHUTDOWN)
        if before_shutdown is not None:
            before_shutdown()
        await super().shutdown(sockets=sockets)
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()


def uvicorn_config(app: Any, config: GatewayConfig, *, host: str | None = None, port: int | None = None,
                   **overrides: Any) -> uvicorn.Config:
    """The uvicorn.Config the gateway is served with.

    ``host`` and ``port`` default to the config's; ``overrides`` are further
    ``uvicorn.Config`` arguments (the tests quiet the log and require the lifespan).
    """
    server = config.server
    options: dict[str, Any] = {
        "host": server.host if host is None else host,
        "port": server.port if port is None else port,
        "loop": "uvloop",
        "http": head_limited_protocol(server.max_header_bytes, server.max_headers),
        # h11's own bound on a request head, should http="h11" ever be selected (it has no
        # bound on the number of header fields).
        "h11_max_incomplete_event_size": server.max_header_bytes,
        "log_level": server.log_level,
        "access_log": server.access_log,
        "timeout_graceful_shutdown": server.shutdown_timeout_seconds,
    }
    return uvicorn.Config(app, **{**options, **overrides})


class _StartupConfigErrorCatcher:
    """The app, keeping a ConfigError raised while it starts for ``serve`` to raise.

    The gateway opens its stores and indexes in the ASGI lifespan, and a failure there is
    reported by Starlette to uvicorn with its full traceback, which uvicorn logs (about 23
    lines for a data directory another gateway holds). A ConfigError is for the operator to
    fix and its message says all there is to say: the report goes without the traceback and
    ``serve`` raises the error, which ``mnx-gateway`` prints as one line (exit status 2).
    Any other startup error keeps its traceback.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.error: ConfigError | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        startup_failed: list[dict[str, Any]] = []

        async def send_holding_startup_failure(message: dict[str, Any]) -> None:
            # Starlette sends "startup failed" with the traceback, then raises the error:
            # the message waits until the error shows whether it should carry the traceback.
            if message["type"] == "lifespan.startup.failed":
                startup_failed.append(message)
            else:
                await send(message)

        try:
            await self.app(scope, receive, send_holding_startup_failure)
        except ConfigError as error:
            if startup_failed:
                self.error = error
                startup_failed[0] = {**startup_failed[0], "message": ""}
            raise
        finally:
            for message in startup_failed:
                await send(message)


def serve(app: Any, config: GatewayConfig, *, host: str | None = None, port: int | None = None,
          sockets: list[Any] | None = None) -> int:
    """Serve ``app`` until stopped, as ``uvicorn.run`` would; returns the exit status.

    ``sockets``: already listening ones to accept on (a worker of ``serve --workers``,
    gateway/workers.py), instead of binding ``host``:``port``.
    Raises the ConfigError that stopped the app from starting, if one did."""
    guarded = _StartupConfigErrorCatcher(app)
    server = GatewayServer(uvicorn_config(guarded, config, host=host, port=port))
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    except SystemExit:
        # uvicorn exits (status 3) when the app fails to start.
        if guarded.error is not None:
            raise guarded.error from None
        raise
    return 0 if server.started else STARTUP_FAILURE
