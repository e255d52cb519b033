"""``GET /events/memories`` (contract §13): a project's memory events as server-sent events.

The stream opens with ``connected`` ``{"project_id", "subject_id", "timestamp"}``, then
carries each event of the caller's project (of ``subject_id`` only, if given) as

    id: <event id>
    event: memory.created
    data: {"id": ..., "subject_id": ..., ...}

with a ``heartbeat`` ``{"timestamp"}`` every ``events.heartbeat_seconds`` (25 by default),
and ``dropped`` ``{"count", "reason"}`` where events were lost (gateway/memory/events.py).
A client that reconnects with ``Last-Event-ID`` first gets the events it missed, as far as
the project's replay buffer reaches.

Requests:

* ``Accept`` must admit ``text/event-stream`` (``text/event-stream``, ``text/*`` or ``*/*``,
  as the mnexium SDK's httpx client sends); a missing or other ``Accept`` is ``406
  not_acceptable``: a client that cannot read an event stream would wait on it forever.
* ``subject_id`` (optional): at most 256 printable characters, else ``400 invalid_subject_id``.
* ``Last-Event-ID`` (optional): an id this stream sent, else ``400 invalid_last_event_id``
  (an id newer than any sent gets a ``resume_gap`` notice, then the live events).
* A project may have ``events.max_subscribers_per_project`` streams open on one gateway
  process; one more is ``429 too_many_subscribers``: each open stream holds a queue.

The stream ends when the client disconnects (Starlette watches for it while streaming)
or when the gateway stops (gateway.server tells the app before waiting for open responses).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator
from typing import Any

from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.clock import now_iso
from gateway.errors import BadRequest, GatewayError
from gateway.memory.events import EventOrder, Subscription, parse_event_id
from gateway.options import MAX_ID_LENGTH
from gateway.routing import Call, endpoint

EVENT_STREAM = "text/event-stream"
# Contract §13. "no-transform" and X-Accel-Buffering keep proxies (nginx) from buffering the stream.
STREAM_HEADERS = {"Cache-Control": "no-cache, no-transform", "Connection": "keep-alive", "X-Accel-Buffering": "no"}


def _accepts_event_stream(accept: str | None) -> bool:
    """Whether an Accept header admits text/event-stream: its most specific matching range has q > 0."""
    best: tuple[int, float] | None = None  # (specificity, q)
    for media_range in (accept or "").split(","):
        media, *parameters = (part.strip() for part in media_range.split(";"))
        specificity = {"text/event-stream": 2, "text/*": 1, "*/*": 0}.get(media.lower())
        if specificity is None:
            continue
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if best is None or specificity > best[0]:
            best = (specificity, quality)
    return best is not None and best[1] > 0


def _subject_filter(call: Call) -> str | None:
    subject_id = call.request.query_params.get("subject_id")
    if subject_id is None:
        return None
    if not subject_id.strip() or len(subject_id) > MAX_ID_LENGTH or not subject_id.isprintable():
        raise BadRequest(f"subject_id must be 1 to {MAX_ID_LENGTH} printable characters", code="invalid_subject_id",
                         param="subject_id")
    return subject_id


def _last_event_id(call: Call) -> EventOrder | None:
    raw = call.request.headers.get("last-event-id")
    if raw is None or not raw.strip():
        return None
    order = parse_event_id(raw.strip())
    if order is None:
        raise BadRequest("Last-Event-ID must be the id of an event this stream sent (e.g. 1767225600000-0)",
                         code="invalid_last_event_id")
    return order


def frame(event: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    """One SSE frame. The JSON is ASCII: the mnexium SDK decodes each network chunk on its own,
    so a multi-byte character split between two chunks would reach it garbled."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def memory_events(call: Call) -> Response:
    subject_id = _subject_filter(call)
    if not _accepts_event_stream(call.request.headers.get("accept")):
        raise GatewayError("this is a server-sent event stream: send Accept: text/event-stream", code="not_acceptable",
                           status=406)
    last_event_id = _last_event_id(call)
    if call.request.method == "HEAD":
        return Response(headers=STREAM_HEADERS, media_type=EVENT_STREAM)
    events = call.services.memories.events
    limit = call.services.config.events.max_subscribers_per_project
    if events.open_streams(call.project_id) >= limit:
        raise GatewayError(f"this project already has {limit} event streams open on this gateway (the most it may); "
                           "close one, or raise events.max_subscribers_per_project", code="too_many_subscribers",
                           status=429)
    subscription = events.subscribe(call.project_id, subject_id)
    try:
        if last_event_id is not None:
            await events.resume(subscription, last_event_id)
    except BaseException:
        subscription.close()
        raise
    return _EventStream(subscription, call.services.config.events.heartbeat_seconds)


class _EventStream(StreamingResponse):
    """The open stream: ``subscription``'s events as frames, until the client leaves or the gateway stops.

    Starlette's streaming response stops (cancelling the frames) when the client disconnects."""

    def __init__(self, subscription: Subscription, heartbeat_seconds: float) -> None:
        self._subscription = subscription
        self._heartbeat_seconds = heartbeat_seconds
        self._frame_source = self._frames()
        super().__init__(self._frame_source, headers=STREAM_HEADERS, media_type=EVENT_STREAM)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # However the response ended (client gone, gateway stopping, an error), the
            # subscription goes: a dead stream must not keep a queue filling.
            self._subscription.close()
            await self._frame_source.aclose()

    async def _frames(self) -> AsyncGenerator[bytes, None]:
        subscription = self._subscription
        yield frame("connected", {"project_id": subscription.project_id, "subject_id": subscription.subject_id,
                                  "timestamp": now_iso()})
        next_heartbeat = time.monotonic() + self._heartbeat_seconds
        while not subscription.closed:
            event = await subscription.next(timeout=max(0.0, next_heartbeat - time.monotonic()))
            if event is not None:
                yield frame(event.type, event.data, event.id)
            if time.monotonic() >= next_heartbeat and not subscription.closed:
                yield frame("heartbeat", {"timestamp": now_iso()})
                next_heartbeat += self._heartbeat_seconds
                if next_heartbeat <= time.monotonic():  # sending stalled: one beat, not one per interval missed
                    next_heartbeat = time.monotonic() + self._heartbeat_seconds


# Relative to the /api/v1 mount.
routes = [
    Route("/events/memories", endpoint(memory_events, scope=("memories:read", "events:read")), methods=["GET"]),
]
