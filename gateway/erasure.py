"""Erasing a subject so that it stays erased (``DELETE /subjects/{id}``).

Deleting a subject's documents is the easy part. What makes an erasure final is that
nothing started before it can write the data back afterwards: a learn job still in the
queue, one already running, an index repair, a turn answered while the erasure ran.
``erase`` therefore, in order (see gateway.erasure_fence for why this order is enough):

1. writes a tombstone, after which such work stores nothing for the subject;
2. deletes the subject's queued jobs (learn jobs and index repairs: their payloads hold the
   subject's words) and forgets the caller keys held in memory for them;
3. waits for writers already inside a write section for the subject;
4. deletes every document, vector and claim of the subject, and drops its memory events
   not yet delivered to subscribers;
5. asks the store to make the deleted rows unrecoverable from its files (SQLite: zeroed
   pages, write-ahead log truncated).

``writing`` is the section that deferred work writes in (``writing_many``: for a batch of subjects).
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Any
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from gateway.erasure_fence import WRITERS_WAIT_SECONDS, ErasureFence, SubjectErased
from gateway.jobs.queue import JobQueue
from gateway.store import DocumentStore

log = logging.getLogger("gateway.erasure")

# A section shorter than this cannot have outlived an eraser's wait for it.
_RECHECK_AFTER_SECONDS = WRITERS_WAIT_SECONDS * 0.8

__all__ = ["SubjectErased", "SubjectErasure"]


class SubjectErasure:
    def __init__(self, fence: ErasureFence, store: DocumentStore, jobs: JobQueue, *, memories: Any, recalls: Any,
                 history: Any, state: Any, prompts: Any, policies: Any, profiles: Any = None,
                 records: Any = None, integration_values: Any = None, audit: Any = None) -> None:
        self._fence = fence
        self._store = store
        self._jobs = jobs
        self._memories = memories
        self._recalls = recalls
        self._history = history
        self._state = state
        self._prompts = prompts
        self._policies = policies
        self._profiles = profiles
        self._records = records
        # Integration values cached for the subject (gateway/integrations/cache.py).
        self._integration_values = integration_values
        # The audit log's records of the subject's turns (gateway/audit_log.py).
        self._audit = audit
        # Called with the ids of the jobs an erasure deleted (the learner forgets their keys).
        self.on_jobs_voided: list[Callable[[Sequence[str]], None]] = []

    @asynccontextmanager
    async def writing(self, project_id: str, subject_id: str, since: float) -> AsyncIterator[None]:
        """Write ``subject_id``'s data for work that began at ``since`` (epoch seconds).

        Raises SubjectErased, before anything is written, if the subject was erased since.
        In the rare case the section ran so long that an erasure stopped waiting for it, its
        writes are erased again on the way out (and SubjectErased raised)."""
        started = time.monotonic()
        token = await self._fence.enter(project_id, subject_id, since)
        try:
            yield
        finally:
            await self._fence.leave(project_id, subject_id, token)
        if time.monotonic() - started >= _RECHECK_AFTER_SECONDS and await self._erased_again(
                project_id, subject_id, since):
            raise SubjectErased(subject_id)

    @asynccontextmanager
    async def writing_many(self, project_id: str, sinces: Mapping[str, float]) -> AsyncIterator[set[str]]:
        """``writing`` for several subjects at once (one fence round trip in, one out), for work
        that writes them in one batch: yields the subjects it may write (those not erased since
        their ``sinces``). A section that outlasted an erasure's wait erases that subject again."""
        started = time.monotonic()
        tokens = await self._fence.enter_many(project_id, sinces)
        try:
            yield set(tokens)
        finally:
            await self._fence.leave_many(project_id, tokens)
        if time.monotonic() - started >= _RECHECK_AFTER_SECONDS:
            for subject_id in tokens:
                await self._erased_again(project_id, subject_id, sinces[subject_id])

    async def _erased_again(self, project_id: str, subject_id: str, since: float) -> bool:
        """Erase the subject again if it was erased since ``since`` (by an erasure that stopped
        waiting for a section still writing); returns whether it did."""
        if not await self._fence.erased_after(project_id, subject_id, since):
            return False
        log.warning("a write for an erased subject outlasted the erasure's wait: erasing it again")
        await self._delete_data(project_id, subject_id)
        return True

    async def erase(self, project_id: str, subject_id: str) -> dict[str, int]:
        """Erase everything stored for ``subject_id`` in the project; returns what was removed."""
        await self._fence.mark_erased(project_id, subject_id)
        voided = await self._jobs.void_subject(project_id, subject_id)
        for forget in self.on_jobs_voided:
            forget(voided)
        if not await self._fence.wait_for_writers(project_id, subject_id, WRITERS_WAIT_SECONDS):
            log.warning("erasing a subject while a write for it is still running after %.0f s; "
                        "that write erases it again when it ends", WRITERS_WAIT_SECONDS)
        erased = await self._delete_data(project_id, subject_id)
        erased["jobs"] = len(voided)
        await self._store.scrub()
        return erased

    async def _delete_data(self, project_id: str, subject_id: str) -> dict[str, int]:
        erased = await self._memories.erase_subject(project_id, subject_id)
        erased["recall_events"] = await self._recalls.delete_subject(project_id, subject_id)
        erased["messages"] = await self._history.delete_subject(project_id, subject_id)
        erased["state_keys"] = await self._state.delete_subject(project_id, subject_id)
        erased["prompts"] = await self._prompts.delete_subject_scoped(project_id, subject_id)
        erased["memory_policies"] = await self._policies.delete_subject_scoped(project_id, subject_id)
        if self._profiles is not None:
            erased["profile_fields"] = await self._profiles.delete_subject(project_id, subject_id)
        if self._records is not None:
            erased["records"] = await self._records.erase_subject(project_id, subject_id)
        if self._integration_values is not None:
            erased["integration_values"] = await self._integration_values.delete_subject(project_id, subject_id)
        if self._audit is not None:
            erased["audit_records"] = await self._audit.delete_subject(project_id, subject_id)
        # Last, after anything above that announced a change: the subject's events not yet
        # delivered leave the replay buffer and the subscribers' queues (every gateway's, on Redis).
        await self._memories.events.forget_subject(project_id, subject_id)
        return erased
