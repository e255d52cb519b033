"""The worker that runs queued jobs in the gateway process, off the request path.

It wakes when a job is enqueued here (no polling delay for the common case) and
polls otherwise, so jobs enqueued by other gateways, retries coming due and jobs
abandoned by a crashed process are picked up too. A failing job is rescheduled
with exponential backoff (capped) and its error kept; it is never dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway import metrics, tracing
from gateway.jobs.queue import Job, JobError, JobQueue
from gateway.redaction import redact

log = logging.getLogger("gateway.jobs")

Handler = Callable[[Job], Awaitable[None]]

# A job runs on the event loop (the embedded stores are synchronous), so waking the worker
# at once would run it before the answer that enqueued it has left. A few milliseconds'
# grace lets that answer go first.
WAKE_DELAY_SECONDS = 0.005


class JobWorker:
    def __init__(self, queue: JobQueue, handler: Handler, *, batch: int = 16, lease_seconds: float = 120.0,
                 poll_seconds: float = 1.0, retry_base_seconds: float = 2.0, retry_max_seconds: float = 3600.0) -> None:
        self._queue = queue
        self._handler = handler
        self._batch = batch
        self._lease = lease_seconds
        self._poll = poll_seconds
        self._retry_base = retry_base_seconds
        self._retry_max = retry_max_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def backoff(self, attempts: int) -> float:
        return min(self._retry_max, self._retry_base * 2 ** max(0, attempts - 1))

    def wake(self) -> None:
        if self._task is not None and not self._wake.is_set():
            asyncio.get_running_loop().call_later(WAKE_DELAY_SECONDS, self._wake.set)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="job-worker")

    async def stop(self) -> None:
        """Stop after the job in hand; an interrupted job is simply due again later (idempotent)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def run_once(self) -> int:
        """Claim and run one batch; returns how many jobs it ran."""
        jobs = await self._queue.claim(self._batch, self._lease)
        tracer = tracing.active()
        for job in jobs:
            # Let requests that arrived meanwhile run between jobs: a batch never holds the loop.
            await asyncio.sleep(0)
            # A span of its own, linked to the turn that queued the job (gateway/tracing.py).
            job_trace = tracer.begin_job(job) if tracer is not None else None
            try:
                await self._handler(job)
            except asyncio.CancelledError:
                if job_trace is not None:
                    job_trace.end(asyncio.CancelledError())
                raise
            except Exception as error:
                if job_trace is not None:
                    job_trace.end(error)
                delay = self.backoff(job.attempts)
                # Stored (readable through GET /jobs) and logged: never with a key in it.
                description = redact(str(error) if isinstance(error, JobError) else f"{type(error).__name__}: {error}")
                log.warning("job %s (%s) failed on attempt %d, retrying in %.0f s: %s", job.id, job.kind,
                            job.attempts, delay, description)
                await self._queue.retry_later(job.id, description, delay)
                metrics.job_finished(job.kind, failed=True)
            else:
                if job_trace is not None:
                    job_trace.end()
                await self._queue.complete(job.id)
                metrics.job_finished(job.kind, failed=False)
        return len(jobs)

    async def _run(self) -> None:
        while True:
            # Cleared before claiming: a job enqueued while this batch runs sets it again, so
            # the wait below returns at once for it.
            self._wake.clear()
            try:
                ran = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the job queue failed; retrying")
                ran = 0
            if ran >= self._batch:
                continue  # a full batch: more may be due
            # A part batch took every job that was due: claiming again at once would only find
            # none (a write transaction per job at low load), so wait for a wake or the poll.
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll)
            except TimeoutError:
                pass
