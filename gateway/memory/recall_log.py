"""Recall bookkeeping written behind the answer: recall events and recall counts, in batches.

What a turn recalled is written once the turn is answered (a turn that fails recalled
nothing): a recall event per memory, and the memory's seen tally (gateway/memory/
reinforcement.py). Doing that inside the request cost more than the recall itself, so a
turn only hands its recalls to this log, and the log writes everything handed to it within
``flush_delay_seconds`` in one batch: one atomic store write for every turn's events and the
counts they add (a memory recalled by several turns of the batch is one tally row), then the
few index updates a ranking would notice.

What a crash can lose: the recalls of turns answered in the last ``flush_delay_seconds``
(``memory.recall.events_flush_ms``, 5 ms by default) before a SIGKILL or power loss, which
are in memory only; a clean shutdown writes them first. A longer delay makes fewer, larger
batches (at one turn per 1.5 ms, 20 ms gathers a dozen turns, whose shared memories are one
tally row each) for a longer window a crash can lose. History and learn jobs are not
affected: they are written before the answer leaves (gateway/pipeline/record.py). While the
store is unreachable the log keeps up to ``max_pending`` turns and retries; beyond that it
drops the oldest, saying so in the log.

Reads of recall events and counts through the API call ``flush`` first, so a client reads
its own turns; another gateway sharing the store sees them within the flush delay.

A subject erased after a turn began gets none of that turn's bookkeeping: each batch is
written inside the erasure fence (gateway/erasure.py) with the turn's start as ``since``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Sequence

from gateway.clock import from_timestamp
from gateway.erasure import SubjectErased, SubjectErasure
from gateway.ids import ordered_id
from gateway.memory.memories import Memories
from gateway.memory.ranking import SearchHit
from gateway.memory.recalls import RecallEvents, turn_document
from gateway.memory.reinforcement import seen_increments

log = logging.getLogger("gateway.memory")

MAX_PENDING_TURNS = 20_000
# After a failed write, the next attempt waits this long (the store may be restarting).
RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class RecalledTurn:
    """What one answered turn recalled."""

    project_id: str
    subject_id: str
    # When the turn began (its writes are dropped if the subject is erased after).
    started_at: float
    # When the memories were recalled (epoch seconds).
    recalled_at: float
    hits: Sequence[SearchHit]
    # What its recall events say besides the memories: chat_id, message_index, chat_logged,
    # request_type, model, metadata.
    details: dict[str, Any]
    # Its document's id, fixed here: a batch written again after a failure replaces it, never doubles it.
    turn_id: str = field(default_factory=lambda: ordered_id("rcl_"))

    def document(self) -> tuple[str, dict[str, Any]]:
        return turn_document(self.project_id, self.turn_id, {"subject_id": self.subject_id, **self.details,
                                                             "recalled_at": from_timestamp(self.recalled_at)},
                             [(hit.memory_id, hit.text, round(hit.score * 100, 1)) for hit in self.hits])


class RecallLog:
    def __init__(self, recalls: RecallEvents, memories: Memories, erasure: SubjectErasure, *,
                 flush_delay_seconds: float, max_pending: int = MAX_PENDING_TURNS) -> None:
        # flush_delay_seconds: memory.recall.events_flush_ms (its default is the config's).
        self._recalls = recalls
        self._memories = memories
        self._erasure = erasure
        self._delay = flush_delay_seconds
        self._max_pending = max_pending
        self._pending: list[RecalledTurn] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        # One batch at a time, in order.
        self._lock = asyncio.Lock()

    def add(self, turn: RecalledTurn) -> None:
        """Hand over an answered turn's recalls; they are written within the flush delay."""
        if len(self._pending) >= self._max_pending:
            dropped = self._pending.pop(0)
            log.warning("recall log full (%d turns unwritten: is the store reachable?): the recalls of a turn of "
                        "subject %r are lost", self._max_pending, dropped.subject_id)
        self._pending.append(turn)
        self._schedule(self._delay)

    def _schedule(self, delay: float) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(delay, self._start_flush)

    def _start_flush(self) -> None:
        self._timer = None
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush_in_background(), name="recall-log")
        else:  # a batch is being written: the new turns go in the next one
            self._schedule(self._delay)

    async def _flush_in_background(self) -> None:
        try:
            await self.flush()
        except Exception:
            log.exception("writing recall events failed; retrying in %.0f s", RETRY_SECONDS)
            self._schedule(RETRY_SECONDS)

    async def flush(self) -> None:
        """Write every turn handed over so far (before reading what they wrote)."""
        async with self._lock:
            turns, self._pending = self._pending, []
            by_subject: dict[tuple[str, str], list[RecalledTurn]] = defaultdict(list)
            for turn in turns:
                by_subject[(turn.project_id, turn.subject_id)].append(turn)
            groups = list(by_subject.items())
            for position, ((project_id, subject_id), subject_turns) in enumerate(groups):
                try:
                    await self._write(project_id, subject_id, subject_turns)
                except BaseException:
                    # The subjects not written yet are kept for the next attempt, ahead of newer
                    # turns (and within the bound); those written are not written twice.
                    unwritten = [turn for _, group in groups[position:] for turn in group]
                    self._pending = (unwritten + self._pending)[-self._max_pending:]
                    raise

    async def close(self) -> None:
        """Write what is pending (a clean shutdown loses nothing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        try:
            await self.flush()
        except Exception:
            log.exception("writing recall events at shutdown failed: the recalls of %d turns are lost",
                          len(self._pending))

    async def _write(self, project_id: str, subject_id: str, turns: list[RecalledTurn]) -> None:
        try:
            # Since the earliest turn began: if the subject was erased since, nothing is written...
            async with self._erasure.writing(project_id, subject_id, since=min(turn.started_at for turn in turns)):
                await self._record(project_id, turns)
            return
        except SubjectErased:
            pass
        # ...and then each turn on its own, so those begun after the erasure are still written (rare).
        for turn in turns:
            try:
                async with self._erasure.writing(project_id, subject_id, since=turn.started_at):
                    await self._record(project_id, [turn])
            except SubjectErased:
                pass

    async def _record(self, project_id: str, turns: Sequence[RecalledTurn]) -> None:
        counted = seen_increments((hit.memory_id, turn.recalled_at) for turn in turns for hit in turn.hits)
        # The events and the seen counts they add: one atomic write (one commit on SQLite), so a
        # batch retried after a failure neither loses nor doubles a count.
        await self._recalls.record(project_id, [turn.document() for turn in turns], counted)
        await self._memories.refresh_recall_counts(project_id, {hit.memory_id: hit for turn in turns
                                                                for hit in turn.hits}, counted)
