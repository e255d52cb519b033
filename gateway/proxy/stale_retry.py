"""Sending a request again, once, when a kept-alive connection turns out to be closed.

A pooled connection the provider closed while it sat idle looks open until a request goes
out on it; then the server disconnects without an answer, or the socket resets. That
request never reached the provider, so sending it again on a new connection is safe, and
not doing it made about 1 request in 3-10k a 502. A request that failed on a connection
opened for it, or after the answer's headers arrived, is not sent again: that failure is
the provider's, and a second call could mean a second generation.

httpcore's trace events tell which case it was: ``connection.connect_tcp.*`` only happens
on a new connection, ``*.receive_response_headers.complete`` once the answer began.

The client LiteLLM's OpenAI calls use sends through it; the native passthrough's client
(provider_http.py) retries the same case itself.
"""

from __future__ import annotations

import logging
from typing import Any
from collections.abc import Awaitable, Callable

import httpx

log = logging.getLogger("gateway.upstream")

_STALE_CONNECTION_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)

Trace = Callable[[str, dict[str, Any]], Awaitable[None]]


class _Attempt:
    """What httpcore's trace events say about one send."""

    def __init__(self, outer: Trace | None) -> None:
        self._outer = outer  # a trace the caller set, still called
        self.reused_connection = True
        self.answered = False

    async def trace(self, event: str, info: dict[str, Any]) -> None:
        if event.startswith("connection.connect_tcp."):
            self.reused_connection = False
        elif event.endswith("receive_response_headers.complete"):
            self.answered = True
        if self._outer is not None:
            await self._outer(event, info)


class StaleConnectionRetry(httpx.AsyncBaseTransport):
    """``inner``, sending a request once more when it went out on a stale kept-alive connection."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        outer = request.extensions.get("trace")
        attempt = _Attempt(outer)
        request.extensions["trace"] = attempt.trace
        try:
            return await self._inner.handle_async_request(request)
        except _STALE_CONNECTION_ERRORS as error:
            if not attempt.reused_connection or attempt.answered:
                raise
            log.info("%s closed an idle connection as a request went out (%s); sending it again",
                     request.url.host, type(error).__name__)
        request.extensions["trace"] = outer
        try:
            return await self._inner.handle_async_request(request)
        except httpx.HTTPError as error:
            error.sent_again = True  # type: ignore[attr-defined]  # for the caller's log line
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()
