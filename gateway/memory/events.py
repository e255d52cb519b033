"""Memory events (contract §13): what ``GET /events/memories`` streams to subscribers.

Writers (gateway/memory/memories.py, the profiles) call ``publish(project, subject, type,
data)`` for every change: ``memory.created``, ``.updated``, ``.deleted``, ``.superseded``,
``profile.updated``. ``publish`` is synchronous and never waits: a subscriber that is slow,
stuck or gone costs a writer nothing. (On Redis the caller of a write waits for Redis to
hold its events, never for a subscriber: see "A write's events outlive a crash" below.)

Each event gets an id, ``"<milliseconds>-<sequence>"`` (the format of Redis stream ids),
ordered within a project: the SSE route sends it as the frame's ``id:``, and a client that
reconnects sends the last one back as ``Last-Event-ID`` to receive what it missed.

Bounds (the ``events`` section of gateway.yaml), so that memory never grows with a
subscriber that does not read:

* every subscriber has a queue of at most ``queue_size`` events. When it is full the
  **oldest** event is dropped for the new one, and the next thing the subscriber receives
  is a ``dropped`` event, ``{"count": n, "reason": "queue_full"}``, then the events that
  remain: it knows it lost ``n`` and can re-read ``GET /memories``;
* each project keeps its latest ``replay_size`` events for ``Last-Event-ID``. A client whose
  id is older than what is kept gets what is kept, after a ``dropped`` event with
  ``{"count": null, "reason": "resume_gap"}``;
* on Redis, events waiting to be sent to Redis (while it is down) are capped too
  (``OUTGOING_LIMIT``, oldest dropped, logged);
* and so is each event's size, ``max_event_bytes`` of JSON data: a larger one (a memory with
  many tags, a long text) goes out without its lists and maps (``tags``, a profile's
  ``fields``) and with its text cut to fit, marked ``"truncated": true``; the client reads
  the whole memory or profile through the REST API. So the buffers above hold a bounded
  number of bytes, not only of events.

Two implementations of one interface, chosen by ``storage.backend`` (gateway/services.py):

* ``MemoryEvents``, in-process (the embedded backend: one gateway process). ``publish``
  puts the event in the project's replay buffer and in each matching subscriber's queue.
* ``RedisMemoryEvents`` (the Redis backend: any number of gateway processes). ``publish``
  puts the event in an outgoing queue; a task sends it to Redis, where one Lua script
  appends it to the project's **stream** (``P{project}:memory_events``, capped at
  ``replay_size`` entries: the replay buffer, shared by every gateway, its entry id the
  event id) and **publishes** it on the pub/sub channel ``Pmemory_events``. Every gateway
  process runs one listener task subscribed to that channel, which hands each event to
  its own subscribers. Why both: pub/sub pushes an event to every gateway at once, on one
  connection per process whatever the number of projects or subscribers, with nothing
  kept in Redis per consumer; but it keeps nothing, so the stream holds the short history
  that ``Last-Event-ID`` needs (a client may reconnect to a different gateway) and that a
  listener reads to catch up after a lost connection to Redis. A stream alone would need a
  blocking ``XREAD`` over every project's stream, re-issued whenever the set of projects
  with subscribers changes; pub/sub alone could not resume.

On a Redis Cluster the same design holds, with classic pub/sub: a PUBLISH on any master
reaches the subscribers of every node (the cluster bus carries it), so each gateway keeps one
subscription, on whichever node redis-py picks for the channel, and the script that appends an
event to its project's stream (in the project's slot) publishes it in the same atomic step.
Sharded pub/sub (SPUBLISH) would spare the cluster bus that broadcast, but a sharded channel
belongs to a slot: publishing from the project's script would need a channel per project
(``{p}``-tagged), and each gateway would have to subscribe, per master, to the channels of the
projects it has subscribers for, re-subscribing as those come and go and as slots move. Memory
events are a few per turn, so the broadcast costs less than that machinery.

A write's events outlive a crash (on Redis). ``publish`` never waits, so a write's events
are still in this process's outgoing queue for a moment after the write is stored; a gateway
SIGKILLed then would lose them for good, though the write stands. So the caller of a write is
answered only once Redis holds its events: every REST call runs inside ``acknowledged()``
(gateway/routing.py), which, once the handler is done, waits for the events it published
to be in their streams (the sender resolves a future per event when its round trip returns);
a learn job likewise completes only then (gateway/memory/learning.py). A writer never waits
for a subscriber: the acknowledgement is Redis's, and pub/sub fans out without holding
anyone. The cost is the sender's round trip after the write's own, shared by every writer
whose events are in that batch (the sender takes all that are waiting, 64 a round trip).
A gateway SIGKILLed after the answer has sent the events; one killed before it has answered
nothing, and the caller cannot tell the write happened but by reading it (as with any write
cut short). A learn job killed before it completed runs again; its re-run finds the memories
the killed run stored (their ids derive from the job's) and announces again what the stream
lacks of them (gateway/memory/reannounce.py). Redis failing between a write and its events:
the events wait in the outgoing queue as before (capped, retried), the waiting writer is
answered 503 ``storage_unavailable`` after ``_ACKNOWLEDGE_WAIT_SECONDS`` as a write that met
a Redis failure half-way is (the write may stand; its events go once Redis is back), and a
learn job fails and is retried. Events are doubled only when a send's reply is lost after
Redis ran it (the sender sends the batch again), or when a re-run announces an event of its
killed run that the stream has trimmed since. Redis's own durability (AOF, replicas) is the
operator's: a write and its events are in Redis's memory alike.

Options weighed: appending the event in the same Lua script as the memory's document (both
keys carry the ``{project}`` tag, so a cluster would take it) saves that round trip, but a
memory write is a dozen store calls through the generic DocumentStore (document, claims,
index, neighbours, the versions it supersedes), each event would have to ride on the right
one in every writer (memories, profiles, records) and both stores, and ``memory.created``
would go out before the memory is searchable. It would spare a learn job's re-run its
announcement (the events would be stored with the writes), at the price of all that.
Waiting on the sender keeps one path for every event and every writer, unchanged.

The listener PINGs Redis when its connection has been silent for a while, and takes a
connection that does not answer for lost (a half-open TCP connection raises nothing): it
subscribes again and catches up from the streams, as after any lost connection.

Subject erasure (gateway/erasure.py) calls ``forget_subject``: the subject's events leave
the replay buffer and every subscriber's queue (on Redis: the stream entries are deleted
and a control message on the channel makes every gateway drop them from its queues and
from what it has yet to send, the batch its sender holds or retries included; a gateway
whose send of the subject's events may have reached Redis after the deletion, being on the
wire then or shortly before it heard of the erasure, deletes the entries again).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import redis.exceptions

from gateway.clock import now_iso
from gateway.config import EventsConfig
from gateway.errors import GatewayError
from gateway.store.errors import STORAGE_ERRORS
from gateway.store.redis_client import is_cluster, queue_script

log = logging.getLogger("gateway.events")

# (milliseconds, sequence): an event id as a value that sorts.
EventOrder = tuple[int, int]

# What a subscriber receives in place of events it lost (see the module docstring).
DROPPED = "dropped"
QUEUE_FULL = "queue_full"
RESUME_GAP = "resume_gap"

_MAX_ID_LENGTH = 41  # two 20-digit numbers (the largest 64-bit ones) and the dash
# Both parts of a Redis stream id are 64-bit unsigned: a larger one is no id (Redis refuses it).
_ID_PART_LIMIT = 1 << 64


def parse_event_id(text: str) -> EventOrder | None:
    """The order of an event id (``"1700000000000-3"``), or None if ``text`` is not one."""
    ms, dash, seq = text.partition("-")
    if (not dash or len(text) > _MAX_ID_LENGTH or not (ms.isascii() and ms.isdigit())
            or not (seq.isascii() and seq.isdigit())):
        return None
    order = int(ms), int(seq)
    return order if order[0] < _ID_PART_LIMIT and order[1] < _ID_PART_LIMIT else None


def format_event_id(order: EventOrder) -> str:
    return f"{order[0]}-{order[1]}"


def _json_size(data: dict[str, Any]) -> int:
    return len(json.dumps(data, separators=(",", ":")))  # ASCII, as the SSE frame has it


def within_budget(data: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """``data``, or if its JSON is larger than ``max_bytes``, a shortened copy marked ``truncated``
    (see the module docstring): lists and maps left out, then the longest strings cut."""
    if _json_size(data) <= max_bytes:
        return data
    shortened: dict[str, Any] = {key: value for key, value in data.items() if not isinstance(value, (list, dict))}
    shortened["truncated"] = True
    while (excess := _json_size(shortened) - max_bytes) > 0:
        longest = max((key for key, value in shortened.items() if isinstance(value, str)),
                      key=lambda key: len(shortened[key]), default=None)
        if longest is None or not shortened[longest]:
            break  # nothing left to cut (max_bytes is far above what ids and numbers take)
        text = shortened[longest]
        shortened[longest] = text[:max(0, len(text) - max(excess, 1))]
    return shortened


@dataclass(frozen=True)
class Event:
    order: EventOrder
    project_id: str
    subject_id: str | None
    type: str
    data: dict[str, Any]
    # A stream's own notice (``dropped``): it has no id and takes no place in the order.
    notice: bool = False

    @property
    def id(self) -> str | None:
        return None if self.notice else format_event_id(self.order)


class Subscription:
    """One subscriber: the events of a project (of one subject, if ``subject_id``), in a bounded queue.

    A context manager: leaving it (or ``close``) unsubscribes. ``next`` waits for the next
    event; ``take_nowait`` takes one if there is one. All of it runs on the event loop."""

    def __init__(self, project_id: str, subject_id: str | None, capacity: int,
                 on_close: Callable[[Subscription], None]) -> None:
        self.project_id = project_id
        self.subject_id = subject_id
        self.closed = False
        self._capacity = capacity
        self._on_close = on_close
        self._queue: deque[Event] = deque()
        # Events dropped for newer ones since the subscriber last took one.
        self._dropped = 0
        # Events for it were lost where no replay reaches (a Last-Event-ID older than the
        # replay buffer; on Redis, an outage longer than the buffer).
        self._resume_gap = False
        # The newest event queued: an event that arrives twice (by replay and live) is skipped.
        self._newest: EventOrder = (0, 0)
        self._ready = asyncio.Event()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def wants(self, event: Event) -> bool:
        return event.project_id == self.project_id and (self.subject_id is None or event.subject_id == self.subject_id)

    @property
    def pending(self) -> int:
        """Events queued and not yet taken."""
        return len(self._queue)

    def offer(self, event: Event) -> None:
        """Queue ``event`` (one the subscriber ``wants``); never waits. A full queue drops its oldest."""
        order = event.order
        if self.closed or order <= self._newest:
            return
        self._newest = order
        if len(self._queue) >= self._capacity:
            self._queue.popleft()
            self._dropped += 1
        self._queue.append(event)
        self._ready.set()

    def resume(self, replayed: Iterable[Event], gap: bool, after: EventOrder) -> None:
        """Put the events a reconnecting client missed (those after ``after``, oldest first) before
        those queued since it subscribed; drop what it had received already."""
        missed = [event for event in replayed if self.wants(event) and event.order > after]
        seen = max(after, missed[-1].order) if missed else after
        live = [event for event in self._queue if event.order > seen]
        self._queue = deque(missed + live)
        while len(self._queue) > self._capacity:
            self._queue.popleft()
            self._dropped += 1
        self._newest = max(self._newest, seen)
        if gap:
            self.mark_gap()
        elif self._queue:
            self._ready.set()

    def mark_gap(self) -> None:
        """Events for this subscriber may have been lost (and cannot be replayed): tell it next."""
        self._resume_gap = True
        self._ready.set()

    def forget_subject(self, subject_id: str) -> None:
        if any(event.subject_id == subject_id for event in self._queue):
            self._queue = deque(event for event in self._queue if event.subject_id != subject_id)

    def take_nowait(self) -> Event | None:
        """The next event, or a ``dropped`` notice first if events were lost; None if none is waiting."""
        if self._resume_gap:
            self._resume_gap = False
            return self._notice(None, RESUME_GAP)
        if self._dropped:
            count, self._dropped = self._dropped, 0
            return self._notice(count, QUEUE_FULL)
        return self._queue.popleft() if self._queue else None

    async def next(self, timeout: float) -> Event | None:
        """The next event; None if none came within ``timeout`` seconds, or once the subscription is closed."""
        event = self.take_nowait()
        if event is not None or self.closed:
            return event
        self._ready.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        return None if self.closed else self.take_nowait()

    def close(self) -> None:
        """Unsubscribe; a ``next`` waiting returns None at once."""
        if not self.closed:
            self.closed = True
            self._queue.clear()
            self._ready.set()
            self._on_close(self)

    def _notice(self, count: int | None, reason: str) -> Event:
        return Event((0, 0), self.project_id, self.subject_id, DROPPED,
                     {"count": count, "reason": reason, "timestamp": now_iso()}, notice=True)


class _IdClock:
    """Event ids in publish order: the time in milliseconds, then a sequence within the millisecond."""

    def __init__(self) -> None:
        self.last: EventOrder = (time.time_ns() // 1_000_000, 0)

    def next(self) -> EventOrder:
        ms = time.time_ns() // 1_000_000
        last_ms, seq = self.last
        self.last = (ms, 0) if ms > last_ms else (last_ms, seq + 1)
        return self.last


@dataclass
class _ReplayAfter:
    """What a replay buffer holds after an id."""

    events: list[Event]  # the kept events after it, oldest first
    gap: bool  # some events after it are no longer kept
    unissued: bool  # it is newer than any id issued: not an id of this project's events


@dataclass
class _Replay:
    """A project's latest events, and the newest one no longer kept (older ids may have missed events)."""

    events: deque[Event]
    horizon: EventOrder


class MemoryEvents:
    """The in-process implementation (embedded backend), and the interface ``RedisMemoryEvents`` keeps."""

    def __init__(self, settings: EventsConfig | None = None) -> None:
        self.settings = settings or EventsConfig()
        self._subscriptions: dict[str, set[Subscription]] = {}
        # Set when the gateway stops: open streams end, new ones end at once.
        self._streams_closed = False
        self._clock = _IdClock()
        # Ids from before this process started may have missed events it never saw.
        self._started = self._clock.last
        self._replays: dict[str, _Replay] = {}

    # --- what writers call ---------------------------------------------------------------

    def publish(self, project_id: str, subject_id: str | None, event: str, data: dict[str, Any]) -> None:
        """Send an event to the project's subscribers; never waits."""
        published = Event(self._clock.next(), project_id, subject_id, event,
                          {**within_budget(data, self.settings.max_event_bytes), "timestamp": now_iso()})
        self._remember(published)
        self._deliver(published)

    def acknowledged(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Run a write whose caller is answered only once its events are stored (see "A write's
        events outlive a crash" in the module docstring). In process there is nothing to wait
        for: ``publish`` has stored the event already, as durably as this backend stores any."""
        return contextlib.nullcontext()

    async def kept_events(self, project_id: str) -> list[Event]:
        """The project's events kept for replay, oldest first: what a re-run of a write looks in
        before announcing again what its killed run wrote."""
        return (await self._replay_after(project_id, (0, 0))).events

    # --- what the SSE route calls --------------------------------------------------------

    def subscribe(self, project_id: str, subject_id: str | None) -> Subscription:
        """A subscription to the project's events (of ``subject_id`` only, if given), registered at once."""
        subscription = Subscription(project_id, subject_id, self.settings.queue_size, self._unsubscribe)
        if self._streams_closed:
            subscription.close()
        else:
            self._subscriptions.setdefault(project_id, set()).add(subscription)
        return subscription

    async def resume(self, subscription: Subscription, last_event_id: EventOrder) -> None:
        """Queue the kept events after ``last_event_id`` ahead of the live ones (``Last-Event-ID``).

        An id newer than any issued (this host's clock was stepped back since, or Redis lost
        its streams) says nothing of what the client missed: it is told events may be lost
        (``resume_gap``) and gets the live events, which taking the id at its word would hide."""
        replay = await self._replay_after(subscription.project_id, last_event_id)
        if replay.unissued:
            subscription.mark_gap()
        else:
            subscription.resume(replay.events, replay.gap, last_event_id)

    def open_streams(self, project_id: str) -> int:
        """The project's subscriptions open in this process."""
        return len(self._subscriptions.get(project_id, ()))

    def close_streams(self) -> None:
        """The gateway is stopping: end every open stream, and any opened from now on."""
        self._streams_closed = True
        for subscriptions in list(self._subscriptions.values()):
            for subscription in list(subscriptions):
                subscription.close()

    # --- subject erasure -----------------------------------------------------------------

    async def forget_subject(self, project_id: str, subject_id: str) -> None:
        """Drop the subject's events not yet delivered: from the replay buffer and every queue."""
        replay = self._replays.get(project_id)
        if replay is not None:
            replay.events = deque((e for e in replay.events if e.subject_id != subject_id),
                                  maxlen=self.settings.replay_size)
        self._forget_locally(project_id, subject_id)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Nothing to start in process."""

    async def aclose(self) -> None:
        self.close_streams()

    # --- shared by both implementations --------------------------------------------------

    def _deliver(self, event: Event) -> None:
        for subscription in list(self._subscriptions.get(event.project_id, ())):
            if subscription.wants(event):
                subscription.offer(event)

    def _forget_locally(self, project_id: str, subject_id: str) -> None:
        for subscription in self._subscriptions.get(project_id, ()):
            subscription.forget_subject(subject_id)

    def _unsubscribe(self, subscription: Subscription) -> None:
        subscriptions = self._subscriptions.get(subscription.project_id)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:
                del self._subscriptions[subscription.project_id]

    async def _replay_after(self, project_id: str, after: EventOrder) -> _ReplayAfter:
        replay = self._replays.get(project_id)
        horizon = replay.horizon if replay is not None else self._started
        events = [event for event in replay.events if event.order > after] if replay is not None else []
        return _ReplayAfter(events, gap=after < horizon, unissued=after > self._clock.last)

    def _remember(self, event: Event) -> None:
        size = self.settings.replay_size
        replay = self._replays.get(event.project_id)
        if replay is None:
            replay = self._replays[event.project_id] = _Replay(deque(maxlen=size), self._started)
        if size == 0:
            replay.horizon = event.order
            return
        if len(replay.events) == size:
            replay.horizon = replay.events[0].order  # about to fall off the buffer
        replay.events.append(event)


# -- Redis -----------------------------------------------------------------------------------

# Events waiting to be sent to Redis (it is slow or down); past it the oldest are dropped.
OUTGOING_LIMIT = 10_000
# Events sent to Redis in one round trip.
_SEND_BATCH = 64
# The listener looks up from its connection this often (well under the socket timeout,
# which would otherwise fail an idle pub/sub connection).
_LISTEN_POLL_SECONDS = 1.0
# A connection that has brought nothing for this long is asked for a PONG; one that brings
# nothing, not even that, for as long again is taken for lost (a half-open TCP connection,
# after a network partition or a Redis host that vanished, otherwise reads nothing forever
# and raises nothing: the listener would go deaf without a word).
_LISTEN_PING_SECONDS = 10.0
# How long the listener waits for Redis to confirm a SUBSCRIBE before trying again.
_SUBSCRIBE_WAIT_SECONDS = 5.0
_RETRY_FIRST_SECONDS = 0.1
_RETRY_MAX_SECONDS = 5.0
# How long start() waits for the listener's first subscription before going on without it.
_START_WAIT_SECONDS = 5.0
# How long aclose() lets the sender finish sending the events already published.
_STOP_WAIT_SECONDS = 1.0
# How long a write acknowledged by ``acknowledged`` waits for Redis to take its events before
# it fails (503): the socket timeout of a send, and a retry of it.
_ACKNOWLEDGE_WAIT_SECONDS = 10.0
# After a subject's erasure, events of it this gateway sent to Redis this recently may have
# landed after the erasure deleted the subject's entries: they are deleted again. (An
# erasure made through another gateway is heard on the channel a little after it ran.)
_ERASE_AGAIN_WINDOW_SECONDS = 30.0

# KEYS: the project's stream, its trim mark. ARGV: entries kept, subject ("" for none), message, channel.
# Appends the event (the stream trims its oldest beyond the cap, and the newest id trimmed
# is noted for resume), then publishes "<id> <message>" on the channel.
_PUBLISH = """
local kept = tonumber(ARGV[1])
local excess = redis.call('XLEN', KEYS[1]) + 1 - kept
if excess > 0 then
  local trimmed = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess)
  if #trimmed > 0 then redis.call('SET', KEYS[2], trimmed[#trimmed][1]) end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', kept, '*', 's', ARGV[2], 'm', ARGV[3])
if kept == 0 then redis.call('SET', KEYS[2], id) end
redis.call('PUBLISH', ARGV[4], id .. ' ' .. ARGV[3])
return id
"""

# KEYS: the project's stream. ARGV: subject, channel, control message ("" to publish none).
# Deletes the subject's entries, then tells every gateway to drop them from its queues.
_ERASE = """
local gone = 0
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 's' and fields[i + 1] == ARGV[1] then
      redis.call('XDEL', KEYS[1], entry[1])
      gone = gone + 1
    end
  end
end
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return gone
"""

# The first word of a channel message that is not an event: "erase <json [project, subject]>".
_ERASE_WORD = "erase"


# What an event's ``stored`` future holds when the event will never be in Redis (a writer waiting
# for it fails); None when it is stored, or when nothing is owed (its subject was erased).
_NOT_STORED_DROPPED = "too many events were waiting for Redis"
_NOT_STORED_REFUSED = "Redis refused it"
_NOT_STORED_STOPPING = "the gateway stopped before sending it"

# The ``stored`` futures of the events published inside the current ``acknowledged`` block
# (a context variable: each request or job has its own, and tasks it starts share its list).
_AWAITED: contextvars.ContextVar[list[asyncio.Future[str | None]] | None] = contextvars.ContextVar(
    "memory_events_awaited", default=None)


@dataclass
class _Outgoing:
    project_id: str
    subject_id: str | None
    message: str  # JSON {"p", "s", "t", "d"}: the event without its id, which Redis gives it
    # Set when a writer waits for the event (``acknowledged``): resolved once Redis has it.
    stored: asyncio.Future[str | None] | None = None

    def settle(self, not_stored: str | None = None) -> None:
        """Tell a waiting writer the event is stored (None) or why it never will be."""
        if self.stored is not None and not self.stored.done():
            self.stored.set_result(not_stored)


@dataclass
class _Listener:
    """What the listener task knows: whether it is subscribed, and the newest event it handed on per project."""

    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    delivered: dict[str, EventOrder] = field(default_factory=dict)
    # Redis's own time when it first subscribed, as an event id (Redis's clock makes the ids,
    # not this host's): a project it has handed nothing on for had no event since.
    first_subscribed_at: EventOrder | None = None


class RedisMemoryEvents(MemoryEvents):
    """Events fanned out across gateway processes through Redis (see the module docstring).

    ``start`` runs two tasks: the sender (outgoing queue -> Redis) and the listener
    (the channel -> this process's subscribers). Both survive a Redis failure: they log
    it and retry, the sender with the same events, the listener by subscribing again and
    catching up from the projects' streams."""

    def __init__(self, redis: Any, key_prefix: str, settings: EventsConfig | None = None) -> None:
        super().__init__(settings)
        self._redis = redis
        self._prefix = key_prefix
        self._channel = f"{key_prefix}memory_events"
        self._outgoing: deque[_Outgoing] = deque()
        self._outgoing_ready = asyncio.Event()
        self._outgoing_dropped = 0
        # True while the sender has a batch to send (on its way to Redis, or waiting to be retried).
        self._sending = False
        # That batch (an erasure takes its subject's events out of it), and whether a send of
        # it is under way (its events may land in Redis at any moment, whatever is taken out).
        self._in_flight: list[_Outgoing] = []
        self._on_the_wire = False
        # (project, subject) -> when this gateway last sent an event of it to Redis (monotonic).
        self._recently_sent: dict[tuple[str, str], float] = {}
        # Erased subjects whose entries the sender deletes again once its current send is over.
        self._erase_again: set[tuple[str, str]] = set()
        # Set when a writer waits for an event: the sender, pausing between retries, tries at once
        # (the writer's own write just reached the store, so Redis is likely back).
        self._writer_waiting = asyncio.Event()
        self._listener = _Listener()
        self._tasks: list[asyncio.Task[None]] = []
        self._publish_script = redis.register_script(_PUBLISH)
        self._erase_script = redis.register_script(_ERASE)

    def _stream_key(self, project_id: str) -> str:
        # {project} is a Redis Cluster hash tag, as in the document store: one slot per project.
        return f"{self._prefix}{{{quote(project_id, safe='')}}}:memory_events"

    def _trim_mark_key(self, project_id: str) -> str:
        return self._stream_key(project_id) + ":trimmed"

    # --- what writers call ---------------------------------------------------------------

    def publish(self, project_id: str, subject_id: str | None, event: str, data: dict[str, Any]) -> None:
        """Queue the event for the sender task; never waits. Redis gives it its id."""
        if len(self._outgoing) >= OUTGOING_LIMIT:
            self._outgoing.popleft().settle(_NOT_STORED_DROPPED)
            self._outgoing_dropped += 1
            if self._outgoing_dropped in (1, 10, 100) or self._outgoing_dropped % 1000 == 0:
                log.warning("memory events: %d event(s) dropped, Redis is not taking them fast enough",
                            self._outgoing_dropped)
        data = {**within_budget(data, self.settings.max_event_bytes), "timestamp": now_iso()}
        message = json.dumps({"p": project_id, "s": subject_id, "t": event, "d": data}, separators=(",", ":"))
        item = _Outgoing(project_id, subject_id, message)
        awaited = _AWAITED.get()
        if awaited is not None:
            item.stored = asyncio.get_running_loop().create_future()
            awaited.append(item.stored)
            self._writer_waiting.set()
        self._outgoing.append(item)
        self._outgoing_ready.set()

    def acknowledged(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._acknowledging()

    @contextlib.asynccontextmanager
    async def _acknowledging(self) -> AsyncIterator[None]:
        """Run a write; once it is done, wait until Redis has every event it published (the sender
        sends them, with any other writer's, in its next round trip). Raises GatewayError 503
        if Redis has not taken them within ``_ACKNOWLEDGE_WAIT_SECONDS`` or never will; they stay
        queued meanwhile (see the module docstring). A write that raises waits for nothing."""
        awaited: list[asyncio.Future[str | None]] = []
        token = _AWAITED.set(awaited)
        try:
            yield
        finally:
            _AWAITED.reset(token)
        if not awaited:
            return
        # asyncio.wait, not gather: a timeout must leave the futures to the sender, not cancel them.
        done, pending = await asyncio.wait(awaited, timeout=_ACKNOWLEDGE_WAIT_SECONDS)
        reasons = [future.result() for future in done if future.result() is not None]
        if pending or reasons:
            why = reasons[0] if reasons else f"Redis did not take it within {_ACKNOWLEDGE_WAIT_SECONDS:g} s"
            raise GatewayError(f"the change was stored but its memory event was not ({why}); retry later",
                               code="storage_unavailable", status=503)

    # --- subject erasure -----------------------------------------------------------------

    async def forget_subject(self, project_id: str, subject_id: str) -> None:
        self._drop_outgoing(project_id, subject_id, heard_late=False)
        self._forget_locally(project_id, subject_id)
        control = f"{_ERASE_WORD} {json.dumps([project_id, subject_id])}"
        await self._erase_script(keys=[self._stream_key(project_id)], args=[subject_id, self._channel, control])

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._send_forever(), name="memory-events-sender"),
                       asyncio.create_task(self._listen_forever(), name="memory-events-listener")]
        # A subscriber that connects once the gateway is up must not miss events for want of a listener.
        try:
            async with asyncio.timeout(_START_WAIT_SECONDS):
                await self._listener.subscribed.wait()
        except TimeoutError:
            log.warning("memory events: not subscribed to Redis after %.0f s; retrying in the background",
                        _START_WAIT_SECONDS)

    async def aclose(self) -> None:
        self.close_streams()
        if self._tasks:  # let the sender send what writers published just before the stop (briefly)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_STOP_WAIT_SECONDS):
                    while self._outgoing or self._sending:
                        await asyncio.sleep(0.005)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for item in [*self._in_flight, *self._outgoing]:
            item.settle(_NOT_STORED_STOPPING)

    # --- the sender ----------------------------------------------------------------------

    async def _send_forever(self) -> None:
        while True:
            await self._outgoing_ready.wait()
            self._outgoing_ready.clear()
            await self._erase_again_now()
            while self._outgoing:
                self._sending = True
                try:
                    await self._send_until_sent(self._take_batch(_SEND_BATCH))
                finally:
                    self._sending = False

    async def _send_until_sent(self, batch: list[_Outgoing]) -> None:
        """Send ``batch``, retrying while Redis is unreachable (the events wait, capped, meanwhile).

        An erasure meanwhile takes its subject's events out of the batch (``_drop_outgoing``)."""
        self._in_flight = batch
        try:
            await self._send_with_retries(batch)
        finally:
            self._in_flight = []

    async def _send_with_retries(self, batch: list[_Outgoing]) -> None:
        delay = _RETRY_FIRST_SECONDS
        while batch:
            failure: BaseException | None = None
            self._on_the_wire = True
            try:
                await self._send(batch)
            except STORAGE_ERRORS as error:
                failure = error
            except Exception:  # Redis refused them (out of memory...): retrying would not help
                log.exception("memory events: Redis refused %d event(s); they are dropped", len(batch))
                for item in batch:
                    item.settle(_NOT_STORED_REFUSED)
                batch.clear()
            finally:
                self._on_the_wire = False
                self._note_sent(batch)  # a failed send may have delivered some of them
            if failure is None:
                for item in batch:
                    item.settle()
            await self._erase_again_now()
            if failure is None:
                return
            log.warning("memory events: sending %d event(s) to Redis failed (%s: %s); retrying in %.1f s",
                        len(batch), type(failure).__name__, failure, delay)
            # A writer waiting for its events cuts the pause short (see _writer_waiting), but
            # never below the first pause: writers on a Redis that keeps failing must not spin it.
            self._writer_waiting.clear()
            await asyncio.sleep(_RETRY_FIRST_SECONDS)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay - _RETRY_FIRST_SECONDS):
                    await self._writer_waiting.wait()
            delay = min(delay * 2, _RETRY_MAX_SECONDS)

    def _take_batch(self, size: int) -> list[_Outgoing]:
        return [self._outgoing.popleft() for _ in range(min(size, len(self._outgoing)))]

    async def _send(self, batch: list[_Outgoing]) -> None:
        kept = self.settings.replay_size
        async with self._redis.pipeline(transaction=False) as pipe:
            for item in list(batch):  # a copy: an erasure may take items out of the batch meanwhile
                # Both keys under the project's tag: one slot (events of several projects in one
                # batch go to their own masters on a cluster; the pipeline is no transaction).
                await queue_script(self._publish_script, pipe,
                                   [self._stream_key(item.project_id), self._trim_mark_key(item.project_id)],
                                   [kept, item.subject_id or "", item.message, self._channel])
            await pipe.execute()

    def _drop_outgoing(self, project_id: str, subject_id: str, *, heard_late: bool) -> None:
        """Take an erased subject's events out of what is waiting to be sent, including the batch
        the sender holds. Those that may have reached Redis after the erasure deleted the subject's
        entries (the batch was on the wire; or, for an erasure heard on the channel, ``heard_late``,
        sent shortly before) are deleted again by the sender."""
        def erased(item: _Outgoing) -> bool:
            if item.project_id == project_id and item.subject_id == subject_id:
                item.settle()  # nothing is owed to its writer: the subject's events are gone by design
                return True
            return False

        self._outgoing = deque(item for item in self._outgoing if not erased(item))
        if any(item.project_id == project_id and item.subject_id == subject_id for item in self._in_flight):
            if self._on_the_wire:
                self._erase_again.add((project_id, subject_id))
            self._in_flight[:] = [item for item in self._in_flight if not erased(item)]
        sent_at = self._recently_sent.get((project_id, subject_id))
        if heard_late and sent_at is not None and time.monotonic() - sent_at < _ERASE_AGAIN_WINDOW_SECONDS:
            self._erase_again.add((project_id, subject_id))
        if self._erase_again and not self._on_the_wire:
            self._outgoing_ready.set()  # the sender deletes them now

    def _note_sent(self, batch: list[_Outgoing]) -> None:
        now = time.monotonic()
        if len(self._recently_sent) > OUTGOING_LIMIT:  # keep it small: forget what is past the window
            self._recently_sent = {pair: at for pair, at in self._recently_sent.items()
                                   if now - at < _ERASE_AGAIN_WINDOW_SECONDS}
        for item in batch:
            if item.subject_id is not None:
                self._recently_sent[(item.project_id, item.subject_id)] = now

    async def _erase_again_now(self) -> None:
        """Delete again the entries of erased subjects whose events may have landed after their erasure
        (no control message: every gateway dropped them from its queues already)."""
        while self._erase_again:
            project_id, subject_id = pair = self._erase_again.pop()
            try:
                await self._erase_script(keys=[self._stream_key(project_id)], args=[subject_id, self._channel, ""])
            except STORAGE_ERRORS:
                self._erase_again.add(pair)  # the next send (or retry) tries again
                return

    # --- the listener --------------------------------------------------------------------

    async def _listen_forever(self) -> None:
        delay = _RETRY_FIRST_SECONDS
        lost_connection = False
        while True:
            pubsub = self._redis.pubsub()
            try:
                if is_cluster(self._redis):
                    # A cluster client learns the slots' masters on its first command; the
                    # subscription looks its channel's master up without one (KeyError before it).
                    await self._redis.initialize()
                await self._subscribe(pubsub)
                if self._listener.first_subscribed_at is None:
                    seconds, microseconds = await self._redis.time()
                    self._listener.first_subscribed_at = (int(seconds) * 1000 + int(microseconds) // 1000, 0)
                if lost_connection:
                    await self._catch_up(self._listener.first_subscribed_at)
                    log.info("memory events: subscribed to Redis again")
                self._listener.subscribed.set()
                delay = _RETRY_FIRST_SECONDS
                await self._hear(pubsub)
            except STORAGE_ERRORS as error:
                lost_connection = True
                log.warning("memory events: lost the Redis subscription (%s: %s); subscribing again in %.1f s",
                            type(error).__name__, error, delay)
            except Exception:
                lost_connection = True
                log.exception("memory events: the listener failed; subscribing again in %.1f s", delay)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_SECONDS)

    async def _subscribe(self, pubsub: Any) -> None:
        """Subscribe to the channel; return once Redis has confirmed it (events are heard from then on)."""
        await pubsub.subscribe(self._channel)
        deadline = time.monotonic() + _SUBSCRIBE_WAIT_SECONDS
        while time.monotonic() < deadline:
            message = await pubsub.get_message(timeout=_LISTEN_POLL_SECONDS)
            if message is not None and message.get("type") == "subscribe":
                return
        raise redis.exceptions.ConnectionError(f"Redis did not confirm the subscription in {_SUBSCRIBE_WAIT_SECONDS} s")

    async def _hear(self, pubsub: Any) -> None:
        """Hand on the channel's messages until the connection fails or stays silent even to a PING."""
        heard_at = time.monotonic()
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=_LISTEN_POLL_SECONDS)
            now = time.monotonic()
            if message is not None:
                heard_at, pinged = now, False
                if message.get("type") == "message":
                    self._receive(message["data"])
            elif now - heard_at >= 2 * _LISTEN_PING_SECONDS:
                raise redis.exceptions.ConnectionError(
                    f"nothing from Redis on the subscription for {now - heard_at:.0f} s, not even a PONG")
            elif now - heard_at >= _LISTEN_PING_SECONDS and not pinged:
                await pubsub.ping()
                pinged = True

    def _receive(self, raw: str) -> None:
        """One message of the channel: an event, or an erasure."""
        head, _, body = raw.partition(" ")
        if head == _ERASE_WORD:
            project_id, subject_id = json.loads(body)
            self._drop_outgoing(project_id, subject_id, heard_late=True)
            self._forget_locally(project_id, subject_id)
            return
        order = parse_event_id(head)
        if order is None:
            log.warning("memory events: ignoring a message on the channel that is not an event")
            return
        self._hand_on(_event_from(order, body))

    def _hand_on(self, event: Event) -> None:
        """Deliver an event once: catching up and the channel may both bring it."""
        if event.order <= self._listener.delivered.get(event.project_id, (0, 0)):
            return
        self._listener.delivered[event.project_id] = event.order
        self._deliver(event)

    async def _catch_up(self, first_subscribed_at: EventOrder) -> None:
        """After a lost subscription: what the projects with subscribers here missed meanwhile."""
        for project_id in list(self._subscriptions):
            since = self._listener.delivered.get(project_id, first_subscribed_at)
            replay = await self._replay_after(project_id, since)
            if replay.gap:
                for subscription in list(self._subscriptions.get(project_id, ())):
                    subscription.mark_gap()
            for event in replay.events:
                self._hand_on(event)

    async def _replay_after(self, project_id: str, after: EventOrder) -> _ReplayAfter:
        stream = self._stream_key(project_id)
        # P{p}:memory_events and P{p}:memory_events:trimmed: one slot, so a cluster takes the MULTI too.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._trim_mark_key(project_id))
            # The newest id the stream ever gave (deletions and trimming leave it); an error if
            # the stream does not exist (no event yet, or Redis lost it).
            pipe.xinfo_stream(stream)
            pipe.xrange(stream, f"({format_event_id(after)}", "+", count=max(self.settings.replay_size, 1))
            trimmed, info, entries = await pipe.execute(raise_on_error=False)
        for result in (trimmed, entries):
            if isinstance(result, STORAGE_ERRORS):
                raise result
        newest = parse_event_id(info["last-generated-id"]) if isinstance(info, dict) else None
        if newest is None or after > newest:
            return _ReplayAfter([], gap=False, unissued=after > (0, 0))
        if isinstance(entries, Exception):
            raise entries
        events = [_event_from(order, fields["m"]) for entry_id, fields in entries
                  if (order := parse_event_id(entry_id)) is not None]
        horizon = parse_event_id(trimmed) if trimmed else None
        return _ReplayAfter(events, gap=horizon is not None and after < horizon, unissued=False)


def _event_from(order: EventOrder, message: str) -> Event:
    """An event as the channel and the stream carry it: JSON ``{"p", "s", "t", "d"}``, the id beside it."""
    fields = json.loads(message)
    return Event(order, fields["p"], fields["s"], fields["t"], fields["d"])
