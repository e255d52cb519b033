"""An httpx transport that spreads requests over several small connection pools.

Why: httpcore's connection pool re-examines every pooled connection each time a
request enters or leaves it, and for each idle one it counts the idle connections
again, so its bookkeeping grows with the square of the pool size. Measured on the
gateway at 32 concurrent requests it was the largest single cost of a passthrough
call (see bench/README.md). Keeping each pool small keeps that cost flat: a request
goes to the shard with the fewest requests in flight, and the shard count bounds how
many connections any one pool holds.

Everything else (HTTP/1.1, TLS, proxies from the environment, timeouts, the
exception types) is httpx's own transport, unchanged.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any
from collections.abc import AsyncIterator

import httpx


class _CountedStream(httpx.AsyncByteStream):
    """A response body that tells its shard when the request is finished."""

    def __init__(self, inner: httpx.AsyncByteStream, release: Any) -> None:
        self._inner = inner
        self._release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._release()


@functools.cache
def _default_tls_context() -> ssl.SSLContext:
    """httpx's default TLS context, built once per process: building one loads the CA bundle
    (~60 ms of CPU each), and every gateway a process starts (the test suite starts hundreds)
    verifies providers the same way."""
    return httpx.create_ssl_context()


class ShardedTransport(httpx.AsyncBaseTransport):
    def __init__(self, shards: int = 8, **transport_options: Any) -> None:
        # One TLS context for every shard.
        transport_options.setdefault("verify", _default_tls_context())
        self._shards = [httpx.AsyncHTTPTransport(**transport_options) for _ in range(shards)]
        self._in_flight = [0] * shards

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = min(range(len(self._shards)), key=self._in_flight.__getitem__)
        self._in_flight[index] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._in_flight[index] -= 1

        try:
            response = await self._shards[index].handle_async_request(request)
        except BaseException:
            release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _CountedStream(response.stream, release)
        return response

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()
