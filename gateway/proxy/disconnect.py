"""Noticing a client that hung up while a non-streamed answer is still being generated.

Starlette cancels a streamed response when its client disconnects (the relay then closes
the provider's stream), but a plain request handler runs to the end: without this, a
client that gave up kept the provider connection open until the read timeout (600 s by
default) and its turn was still recorded and learned from. ``unless_client_leaves`` races
the provider call against the client's ``http.disconnect``: whichever comes first wins,
and the provider call is cancelled (closing its connection, so the provider stops too).
"""

from __future__ import annotations

import asyncio
from typing import TypeVar
from collections.abc import Awaitable

from starlette.requests import Request

T = TypeVar("T")


class ClientLeft(Exception):
    """The client disconnected before the answer was ready; nothing was sent or recorded."""


async def _disconnected(request: Request) -> None:
    # The body has been read in full, so the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(request: Request, pending: Awaitable[T]) -> T:
    """``pending``'s result, or ClientLeft (``pending`` cancelled) if the client hangs up first."""
    answer = asyncio.ensure_future(pending)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((answer, watcher), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        answer.cancel()
        raise
    finally:
        watcher.cancel()
    client_left = watcher.done() and not watcher.cancelled() and watcher.exception() is None
    if answer.done() or not client_left:
        return await answer
    answer.cancel()
    try:
        await answer
    except (asyncio.CancelledError, Exception):  # the cancellation itself, or an error no one will read
        pass
    raise ClientLeft()
