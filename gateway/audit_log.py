"""The audit log (contract §15, ``audit:`` in gateway.yaml): what each proxied turn asked, what
context the gateway injected into it (by id, not only as text), and what the provider answered.

Off by default, because it keeps what the privacy promise keeps least of: whole prompts and
answers, for ``retention_days``. An operator who needs the trail turns it on knowing that.

One document per turn, written once the turn has an outcome (gateway/proxy/surface.py hands it
over where it records history), behind the answer: queued for this process's one audit writer, so
the client does not wait for it, and written in the order the turns were answered (newest first in
a listing means answered last, which independent tasks racing to the store would not keep), inside
the erasure fence with the turn's start as ``since``: a subject erased while
its turn ran gets no record, and erasing a subject deletes its records (gateway/erasure.py). The
document holds both of the turn's records, ``request`` and ``response``, which ``GET
/audit/requests`` lists as two rows sharing the turn's ``audit_id``; one document keeps the write
to one ``put`` (with the retention as its TTL, so old records vanish on both backends).

What that costs in durability: records still queued (a millisecond's worth or so) when the
process is killed are lost; a clean shutdown writes them first, and a listing waits for this
process's pending records, so a client reads its own turns. A record that cannot be written
(storage down) is logged, and the turn's answer stands.

What a record holds:

* request: the body as the client sent it (``mnx`` included), the ``mnx`` options as resolved,
  provider and model, and ``injected``: per context stage, the ids it put in (memory ids, claim
  ids, record ids, prompt ids, the state key, profile fields, history message count and summary
  range);
* response: the HTTP status, the provider's answer as returned (a streamed turn: the message the
  gateway rebuilt from the stream), the usage tokens the provider reported, or the error a failed
  turn was answered with.

Provider and project keys travel in headers, which are never stored; the stored text is also
passed through gateway/redaction.py (anything credential-shaped, the call's own keys by value),
and a body larger than ``max_payload_bytes`` is kept as a cut JSON text, marked ``truncated``.

Not recorded: an ``mnx.explain`` turn (nothing reached a provider), a turn whose client left
before the answer, and a stream the provider broke off (their history is not recorded either).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack


from gateway.clock import from_timestamp
from gateway.config import AuditConfig
from gateway.errors import GatewayError
from gateway.ids import ordered_id
from gateway.options import MnxOptions
from gateway.proxy.sse import JsonEventStream
from gateway.redaction import redact
from gateway.store import DocumentStore, codec
from gateway.store.base import Collection

log = logging.getLogger("gateway.audit")

DIRECTIONS = ("request", "response")
REQUEST_TYPES = ("chat", "responses", "messages", "gemini")

# Every combination of the listing's filters is one declared index (the store reads by index only).
AUDIT = Collection("audit_turns", expiring=True, indexes=(
    ("subject_id",), ("chat_id",), ("request_type",), ("subject_id", "chat_id"), ("subject_id", "request_type"),
    ("chat_id", "request_type"), ("subject_id", "chat_id", "request_type")))

_SECONDS_PER_DAY = 86_400.0
# Records queued behind their answers, at most; past it a turn waits for its own record.
MAX_PENDING = 1000
# Records written in one store write, at most.
WRITE_BATCH = 256


def resolved_options(options: MnxOptions) -> dict[str, Any]:
    """The turn's ``mnx`` options after defaults, headers and scopes: what the gateway acted on."""
    return {"subject_id": options.subject_id, "chat_id": options.chat_id, "history": options.history,
            "log": options.log, "learn": options.learn, "recall": options.recall, "profile": options.profile,
            "system_prompt": options.system_prompt, "memory_policy": options.memory_policy, "cache": options.cache,
            "state": {"load": options.state.load, "key": options.state.key} if options.state else None,
            "records": bool(options.records), "metadata": options.metadata,
            "summarize": options.summarize.to_payload() if options.summarize else False}


def usage_of(answer: Mapping[str, Any]) -> dict[str, Any] | None:
    """The token counts a provider's answer reports, in whichever format's field carries them."""
    usage = answer.get("usage") or answer.get("usageMetadata")
    if isinstance(usage, dict):
        return usage
    nested = answer.get("response") or answer.get("message")  # Responses / Anthropic stream events
    if isinstance(nested, dict):
        usage = nested.get("usage")
        if isinstance(usage, dict):
            return usage
    return None


@dataclass
class AuditTurn:
    """One turn's records in the making: begun when the body is read, written once it has an outcome."""

    project_id: str
    request_type: str
    # The body as the client sent it (a shallow copy: the turn reads, never changes, its values).
    body: dict[str, Any]
    # The caller's keys of this request, redacted by value from everything stored.
    secrets: tuple[str, ...] = ()
    started_at: float = field(default_factory=time.time)
    audit_id: str = field(default_factory=lambda: ordered_id("aud_"))
    # Per context stage, the ids it injected (gateway/pipeline/context.py ContextLayer.audit).
    injected: dict[str, Any] = field(default_factory=dict)
    provider: str | None = None
    model: str | None = None
    # Usage seen in a stream's events (the rebuilt message carries none).
    stream_usage: dict[str, Any] | None = None

    def watching(self, accumulator: JsonEventStream) -> JsonEventStream:
        """``accumulator`` (which rebuilds a streamed answer) also handing each event's usage to
        this turn: the events are parsed once, for both."""
        rebuild = accumulator.on_event

        def on_event(event: dict[str, Any]) -> None:
            usage = usage_of(event)
            if usage is not None:  # the latest report of each count wins (Anthropic sends two)
                self.stream_usage = {**(self.stream_usage or {}), **usage}
            rebuild(event)

        accumulator.on_event = on_event  # type: ignore[method-assign]
        return accumulator


# A turn's record waiting for the writer: the turn, its options, and ``_document``'s keyword arguments.
QueuedRecord = tuple[AuditTurn, MnxOptions, dict[str, Any]]


class AuditLog:
    def __init__(self, store: DocumentStore, config: AuditConfig) -> None:
        self._store = store
        self.config = config
        self._ttl = config.retention_days * _SECONDS_PER_DAY
        self._surfaces = frozenset(config.surfaces)
        # Erasure's write section for a batch of subjects (gateway/erasure.py ``writing_many``),
        # set once erasure is built.
        self.fence: Callable[[str, Mapping[str, float]], AbstractAsyncContextManager[set[str]]] | None = None
        # Records queued behind their answers, oldest first, and the one task writing them in that order.
        self._backlog: deque[QueuedRecord] = deque()
        self._writer: asyncio.Task[None] | None = None
        # Records ever queued and ever written (or given up on): a record is written once
        # ``_written`` reaches the ``_queued`` it was given; ``_progress`` is notified as it grows.
        self._queued = 0
        self._written = 0
        self._progress = asyncio.Condition()

    def begin(self, project_id: str, request_type: str, body: dict[str, Any],
              secrets: Iterable[str | None] = ()) -> AuditTurn | None:
        """A turn to audit, or None when the log is off (for this surface): then nothing costs."""
        if not self.config.enabled or request_type not in self._surfaces:
            return None
        return AuditTurn(project_id, request_type, dict(body), tuple(s for s in secrets if s))

    def _document(self, turn: AuditTurn, options: MnxOptions, *, answered_at: float, status: int,
                  answer: Any = None, usage: Mapping[str, Any] | None = None,
                  error: Mapping[str, Any] | None = None, stream: bool = False) -> dict[str, Any]:
        """The stored document of the turn: its request and response records."""
        request = {"body": turn.body, "mnx": resolved_options(options), "injected": turn.injected,
                   "provider": turn.provider, "model": turn.model, "stream": stream}
        response: dict[str, Any] = {"status": status, "stream": stream, "usage": usage}
        if error is not None:
            response["error"] = error
        else:
            response["body"] = answer
        return {"audit_id": turn.audit_id, "subject_id": options.subject_id, "chat_id": options.chat_id,
                "request_type": turn.request_type, "status": status,
                "requested_at": from_timestamp(turn.started_at), "answered_at": from_timestamp(answered_at),
                # Kept as text: read back only by the (rare) listing, never parsed on the turn's path.
                "request": self._text(request, "body", turn.secrets),
                "response": self._text(response, "error" if error is not None else "body", turn.secrets)}

    async def answered(self, turn: AuditTurn | None, options: MnxOptions, *, answer: dict[str, Any] | None,
                       message: dict[str, Any] | None) -> None:
        """Record an answered turn (behind the answer): the provider's whole ``answer``, or (None:
        it streamed) the ``message`` rebuilt from the stream, with the usage its events reported."""
        if turn is None:
            return
        if answer is not None:
            await self._behind(turn, options, status=200, answer=answer, usage=usage_of(answer))
        else:
            await self._behind(turn, options, status=200, answer={"message": message}, usage=turn.stream_usage,
                               stream=True)

    async def failed(self, turn: AuditTurn, options: MnxOptions, error: GatewayError) -> None:
        """Record a turn answered with ``error`` (refused, or the provider failed), behind the answer."""
        await self._behind(turn, options, status=error.status,
                           error={"error": error.code, "message": error.message, **error.extra})

    async def _behind(self, turn: AuditTurn, options: MnxOptions, **record: Any) -> None:
        """Queue the turn's record for the writer, so the answer does not wait for it; past
        MAX_PENDING unwritten records (a slow store), the turn waits for its own: back-pressure, not loss."""
        self._backlog.append((turn, options, {**record, "answered_at": time.time()}))
        self._queued += 1
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_backlog(), name="audit-writer")
        if len(self._backlog) > MAX_PENDING:
            await self._written_through(self._queued)

    async def _write_backlog(self) -> None:
        """Write the queued records, oldest first, a batch at a time, until none is left: one batch
        is one store write, so a slow store makes batches larger rather than the backlog longer."""
        while self._backlog:
            batch = [self._backlog.popleft() for _ in range(min(len(self._backlog), WRITE_BATCH))]
            try:
                await self._write_batch(batch)
            finally:
                self._written += len(batch)
                async with self._progress:
                    self._progress.notify_all()

    async def _write_batch(self, batch: list[QueuedRecord]) -> None:
        """Per project: the batch's subjects enter the erasure fence together (as of each one's
        earliest turn), and the records of those let in are written in one ``put_many``, in the
        batch's order. Never raises."""
        by_project: dict[str, list[QueuedRecord]] = {}
        for queued in batch:
            by_project.setdefault(queued[0].project_id, []).append(queued)
        for project_id, records in by_project.items():
            try:
                await self._write_project(project_id, records)
            except Exception:
                log.exception("%d audit records could not be written", len(records))

    async def _write_project(self, project_id: str, records: list[QueuedRecord]) -> None:
        assert self.fence is not None, "gateway/services.py sets the fence"
        sinces: dict[str, float] = {}
        for turn, options, _ in records:
            sinces[options.subject_id] = min(turn.started_at, sinces.get(options.subject_id, turn.started_at))
        async with AsyncExitStack() as sections:
            admitted = await sections.enter_async_context(self.fence(project_id, sinces))
            docs = []
            for turn, options, record in records:
                allowed = options.subject_id in admitted
                if not allowed:
                    # Erased since the subject's earliest turn of the batch began; perhaps not since
                    # this one did (rare): its own section says.
                    allowed = bool(await sections.enter_async_context(
                        self.fence(project_id, {options.subject_id: turn.started_at})))
                    if not allowed:
                        log.info("the subject of a %s turn was erased while it ran: no audit record",
                                 turn.request_type)
                if allowed and (doc := self._made(turn, options, record)) is not None:
                    docs.append((turn.audit_id, doc))
            await self._store.put_many(AUDIT, project_id, docs, ttl_seconds=self._ttl)

    def _made(self, turn: AuditTurn, options: MnxOptions, record: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return self._document(turn, options, **record)
        except Exception:
            log.exception("the audit record of a %s turn could not be made", turn.request_type)
            return None

    async def _written_through(self, target: int) -> None:
        """Return once the first ``target`` records ever queued are written."""
        if self._written < target:
            async with self._progress:
                await self._progress.wait_for(lambda: self._written >= target)

    async def flush(self) -> None:
        """Wait for the records queued when called (a read through the API sees the turns answered
        before it; records of turns answered meanwhile are not waited for, or a steady stream of
        turns could keep a listing waiting forever)."""
        await self._written_through(self._queued)

    async def close(self) -> None:
        """At shutdown: the records of answered turns are written first, every one."""
        if self._writer is not None:
            await self._writer

    def _text(self, record: dict[str, Any], bulk: str, secrets: tuple[str, ...]) -> str:
        """``record`` as stored: its JSON, redacted; when that is over ``max_payload_bytes``, with its
        ``bulk`` field (the body) replaced by the start of that field's JSON, marked truncated."""
        text = codec.encode(record)
        limit = self.config.max_payload_bytes
        if len(text) * 4 > limit and len(text.encode()) > limit:  # (a character is at most 4 bytes)
            # Redacted before the cut too: a key cut in two would no longer match by value.
            body = redact(codec.encode(record[bulk]), secrets).encode()
            record = {**record, bulk: {"truncated": True, "bytes": len(body),
                                       "json_prefix": body[:limit].decode(errors="ignore")}}
            text = codec.encode(record)
        return redact(text, secrets)

    async def list(self, project_id: str, *, audit_id: str | None = None, subject_id: str | None = None,
                   chat_id: str | None = None, direction: str | None = None, request_type: str | None = None,
                   limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Records, newest first (a turn's response before its request), ``limit`` from ``offset``."""
        await self.flush()
        per_turn = 1 if direction else 2
        skip = offset % per_turn
        if audit_id is not None:
            doc = await self._store.get(AUDIT, project_id, audit_id)
            wanted = {"subject_id": subject_id, "chat_id": chat_id, "request_type": request_type}
            docs = [doc] if doc is not None and all(v is None or doc[k] == v for k, v in wanted.items()) else []
            docs = docs[offset // per_turn:]
        else:
            where = {name: value for name, value in
                     (("subject_id", subject_id), ("chat_id", chat_id), ("request_type", request_type)) if value}
            docs = await self._store.find(AUDIT, project_id, where or None, newest_first=True,
                                          offset=offset // per_turn, limit=-(-(skip + limit) // per_turn))
        rows = [row for doc in docs for row in _rows(doc, direction)]
        return rows[skip:skip + limit]

    async def delete_subject(self, project_id: str, subject_id: str) -> int:
        """Erase the subject's records (gateway/erasure.py); returns how many records went."""
        return 2 * await self._store.delete_where(AUDIT, project_id, {"subject_id": subject_id})


def _parsed(text: str) -> Any:
    try:
        return codec.decode(text)
    except ValueError:  # a redaction that cut across a JSON escape (a secret holding a quote): the text
        return {"unparsed": text}


def _rows(doc: Mapping[str, Any], direction: str | None) -> list[dict[str, Any]]:
    common = {"audit_id": doc["audit_id"], "request_type": doc["request_type"], "chat_id": doc["chat_id"],
              "subject_id": doc["subject_id"], "status": doc["status"]}
    rows = []
    for name, at in (("response", "answered_at"), ("request", "requested_at")):
        if direction in (None, name):
            rows.append({**common, "direction": name, "payload": _parsed(doc[name]), "created_at": doc[at]})
    return rows
