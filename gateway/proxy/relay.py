"""Relaying a provider's event stream to the client, whatever its format.

The provider's bytes are forwarded unchanged (nothing lost, nothing re-framed)
while an accumulator for the format rebuilds the answer on the side. The turn is
recorded before the stream's final frame leaves, so history is written even if
the client hangs up at the very end. If the client disconnects earlier, Starlette
cancels this generator and the ``finally`` closes the upstream response, which
cancels the provider's generation; nothing is recorded.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable

import anyio

from gateway.proxy.sse import JsonEventStream
from gateway.proxy.upstream import UpstreamStream


async def relay(stream: UpstreamStream, accumulator: JsonEventStream, interrupted_frame: bytes,
                answered: Callable[[dict[str, Any]], Awaitable[None]]) -> AsyncIterator[bytes]:
    """Relay ``stream``; ``answered`` records the rebuilt answer once it is complete."""
    recorded = False
    try:
        async for chunk in stream:
            accumulator.feed(chunk)
            if accumulator.done and accumulator.completed and not recorded:
                recorded = True
                await answered(accumulator.message())
            yield chunk
        if accumulator.completed and not recorded:
            await answered(accumulator.message())
        elif not accumulator.completed:
            # The provider stopped mid-answer. Say so in-band (the status line is long
            # gone) with the format's own error event, on which its SDKs raise.
            yield interrupted_frame
    finally:
        with anyio.CancelScope(shield=True):
            await stream.aclose()
