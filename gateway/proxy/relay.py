"""Relaying a provider's event stream to the client, whatever its format.

The provider's bytes are forwarded unchanged (nothing lost, nothing re-framed)
while an accumulator for the format rebuilds the answer on the side. The turn is
recorded before the stream's final frame leaves, so history is written even if
the client hangs up at the very end. If the client disconnects earlier, Starlette
cancels this generator and the ``finally`` closes the upstream response, which
cancels the provider's generation; nothing is recorded.

Once the first byte has left, the status line can no longer say anything went wrong,
so a failure is reported in-band with the format's own error event, on which its
SDKs raise: when the provider stops mid-answer, and when the turn cannot be recorded
(storage gone): then the error event replaces the final frame, so a client never
takes an unrecorded turn for a complete one.
"""

from __future__ import annotations

import logging
from typing import Any
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio

from gateway.proxy.sse import JsonEventStream
from gateway.proxy.upstream import UpstreamStream

log = logging.getLogger("gateway.proxy")

INTERRUPTED = ("upstream_stream_interrupted", "the provider's stream ended before the answer was complete")
NOT_RECORDED = ("turn_not_recorded", "the answer could not be stored (the gateway's storage failed), "
                                     "so this turn was not recorded: send it again")


async def _record(answered: Callable[[dict[str, Any]], Awaitable[None]], message: dict[str, Any]) -> bool:
    try:
        await answered(message)
    except Exception:
        log.exception("a streamed turn could not be recorded; the client gets an error event")
        return False
    return True


async def relay(stream: UpstreamStream, accumulator: JsonEventStream, error_frame: Callable[[str, str], bytes],
                answered: Callable[[dict[str, Any]], Awaitable[None]]) -> AsyncIterator[bytes]:
    """Relay ``stream``; ``answered`` records the rebuilt answer once it is complete."""
    recorded = False
    try:
        async for chunk in stream:
            accumulator.feed(chunk)
            if accumulator.done and accumulator.completed and not recorded:
                recorded = True
                if not await _record(answered, accumulator.message()):
                    yield error_frame(*NOT_RECORDED)
                    return
            yield chunk
        if accumulator.completed and not recorded:
            if not await _record(answered, accumulator.message()):
                yield error_frame(*NOT_RECORDED)
        elif not accumulator.completed:
            yield error_frame(*INTERRUPTED)
    finally:
        with anyio.CancelScope(shield=True):
            await stream.aclose()
