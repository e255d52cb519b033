"""The worker that runs queued jobs in the gateway process, off the request path.

It wakes when a job is enqueued here (no polling delay for the common case) and
polls otherwise, so jobs enqueued by other gateways, retries coming due and jobs
abandoned by a crashed process are picked up too. A failing job is rescheduled
with exponential backoff (capped) and its error kept; it is never dropped.

Jobs handed over (``submit``, a turn's learn job): while the worker runs and has room, a job
queued through it is written already claimed by it (``JobQueue.enqueue_claimed``) and kept in
memory until its turn, so it costs one write instead of an enqueue, a claim and the claim's
read. It is as durable as any queued job: the store holds it, leased; if this worker never
runs it (stopped, killed), the lease runs out and any worker claims it (an embedded gateway
releases its leases when it starts again), as with a claimed batch the worker did not finish.

Leases (gateway/jobs/queue.py): a claim leases a whole batch until one deadline, but the
worker runs its jobs one after another, so it keeps each job's lease alive itself:

* a job whose lease is already a third spent when its turn comes (the jobs before it in the
  batch were slow) is renewed before it starts; if the renewal fails, the lease ran out and
  another worker claimed the job meanwhile: it is skipped, not run a second time here;
* while a handler runs, a heartbeat renews its job's lease each time a third of it has passed,
  so a job that takes longer than the lease is not claimed by another worker while it is alive;
* the job is completed or rescheduled with its claim's token: a worker that lost the lease
  (it stalled a whole lease without renewing, and the job ran elsewhere) changes nothing.

Why renew only once a third of the lease has passed, rather than before every job: a renewal
is a write (an UPDATE on SQLite, a script on Redis), and the learn worker shares the event loop
with the requests. At low load a batch of quick jobs ends long before a third of its lease has
passed, so it makes no renewal at all, and a quick job's heartbeat is a timer cancelled
before it fires (about a microsecond). Only slow batches and slow jobs pay, one
write per job per third of a lease.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gateway import metrics, tracing
from gateway.jobs.queue import Job, JobError, JobQueue
from gateway.redaction import redact

log = logging.getLogger("gateway.jobs")

Handler = Callable[[Job], Awaitable[None]]

# A job runs on the event loop (the embedded stores are synchronous), so waking the worker
# at once would run it before the answer that enqueued it has left. A few milliseconds'
# grace lets that answer go first.
WAKE_DELAY_SECONDS = 0.005

# A lease is renewed once this share of it has passed: with the default 120 s lease, every 40 s,
# which leaves 80 s for a renewal to get through (a store slow or briefly unreachable) before
# the job would be due again. Early enough to be safe, late enough that a quick job never renews.
RENEW_AFTER_SHARE = 1 / 3
# After a renewal that failed with an error (not a lost lease), try again this much sooner.
RENEW_RETRY_SHARE = 1 / 12


class JobWorker:
    def __init__(self, queue: JobQueue, handler: Handler, *, batch: int = 16, lease_seconds: float = 120.0,
                 poll_seconds: float = 1.0, retry_base_seconds: float = 2.0, retry_max_seconds: float = 3600.0) -> None:
        self._queue = queue
        self._handler = handler
        self._batch = batch
        self._lease = lease_seconds
        # A lease with less than this left is renewed (see RENEW_AFTER_SHARE).
        self._renew_below = lease_seconds * (1 - RENEW_AFTER_SHARE)
        self._poll = poll_seconds
        self._retry_base = retry_base_seconds
        self._retry_max = retry_max_seconds
        self._wake = asyncio.Event()
        # Jobs handed over by ``submit``, claimed already, not started yet.
        self._handed: collections.deque[Job] = collections.deque()
        # Whether the next round claims from the queue: after a wake (a job was queued for any
        # worker) or a poll, not when woken only for handed jobs (a claim would find nothing).
        self._claim_wanted = True
        self._task: asyncio.Task[None] | None = None
        # Set by stop() besides cancelling the task: a cancellation that lands while a Redis
        # command is in flight can be swallowed by redis-py (see _Heartbeat), and the worker
        # must stop all the same, after the job in hand.
        self._stopping = False

    def backoff(self, attempts: int) -> float:
        return min(self._retry_max, self._retry_base * 2 ** max(0, attempts - 1))

    def wake(self) -> None:
        """A job was queued for claiming: claim soon."""
        self._claim_wanted = True
        self._wake_soon()

    def _wake_soon(self) -> None:
        if self._task is not None and not self._wake.is_set():
            asyncio.get_running_loop().call_later(WAKE_DELAY_SECONDS, self._wake.set)

    async def submit(self, project_id: str, kind: str, payload: dict[str, Any]) -> str:
        """Queue a job to run soon, here if this worker is running and has room for it (handed
        over, claimed as it is written: see the module docstring), else for any worker's claim
        (and this one is woken). Returns the job's id."""
        if self._task is None or self._stopping or len(self._handed) >= self._batch:
            job_id = await self._queue.enqueue(project_id, kind, payload)
            self.wake()
            return job_id
        job = await self._queue.enqueue_claimed(project_id, kind, payload, self._lease)
        self._handed.append(job)
        self._wake_soon()
        return job.id

    def start(self) -> None:
        self._stopping = False
        self._claim_wanted = True  # jobs may be waiting from before
        self._task = asyncio.create_task(self._run(), name="job-worker")

    async def stop(self) -> None:
        """Stop after the job in hand; an interrupted job is simply due again later (idempotent)."""
        if self._task is not None:
            self._stopping = True
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
            # Jobs handed over and not started stay leased in the queue until their lease runs out,
            # then any worker runs them: not this one from memory, after a restart, a second time.
            self._handed.clear()

    async def run_once(self) -> int:
        """Claim and run one batch; returns how many jobs it claimed (each of them run here,
        unless its lease ran out before its turn and another worker has it)."""
        jobs = await self._queue.claim(self._batch, self._lease)
        await self._run_claimed(jobs)
        return len(jobs)

    async def _run_handed(self) -> None:
        """Run the jobs handed over so far (``submit``), in the order they came."""
        while self._handed and not self._stopping:
            jobs = list(self._handed)
            self._handed.clear()
            await self._run_claimed(jobs)

    async def _run_claimed(self, jobs: list[Job]) -> None:
        """Run jobs this worker holds the lease of, one after another."""
        for job in jobs:
            # Let requests that arrived meanwhile run between jobs: a batch never holds the loop.
            await asyncio.sleep(0)
            if self._stopping:
                break  # the rest of the batch is due again once its lease runs out
            assert job.lease is not None  # a claimed job
            lease_end = job.due_at
            # Its lease is already a third spent (the jobs before it were slow): make it whole
            # again before starting, or skip the job if it is no longer ours.
            if lease_end - time.time() < self._renew_below:
                renewed_at = time.time()
                if not await self._queue.renew(job.id, job.lease, self._lease):
                    log.info("job %s (%s) waited in its batch until its lease ran out and another worker has "
                             "it now: not run here", job.id, job.kind)
                    continue
                lease_end = renewed_at + self._lease
            await self._run_job(job, lease_end)

    async def _run_job(self, job: Job, lease_end: float) -> None:
        assert job.lease is not None  # a claimed job
        tracer = tracing.active()
        # A span of its own, linked to the turn that queued the job (gateway/tracing.py).
        job_trace = tracer.begin_job(job) if tracer is not None else None
        heartbeat = _Heartbeat(self._queue, job, self._lease, renew_at=lease_end - self._renew_below)
        try:
            await self._handler(job)
        except asyncio.CancelledError:
            if job_trace is not None:
                job_trace.end(asyncio.CancelledError())
            raise
        except Exception as error:
            if job_trace is not None:
                job_trace.end(error)
            await heartbeat.stop()
            delay = self.backoff(job.attempts)
            # Stored (readable through GET /jobs) and logged: never with a key in it.
            description = redact(str(error) if isinstance(error, JobError) else f"{type(error).__name__}: {error}")
            log.warning("job %s (%s) failed on attempt %d, retrying in %.0f s: %s", job.id, job.kind,
                        job.attempts, delay, description)
            if await self._queue.retry_later(job.id, description, delay, lease=job.lease):
                metrics.job_finished(job.kind, failed=True)
            else:
                _lost(job)
        else:
            if job_trace is not None:
                job_trace.end()
            await heartbeat.stop()
            if await self._queue.complete(job.id, job.lease):
                metrics.job_finished(job.kind, failed=False)
            else:
                _lost(job)
        finally:
            # Cancelled (the worker stops): no more renewals, so the job is due again once the
            # lease runs out, and another worker (or this one, restarted) runs it.
            heartbeat.cancel()

    async def _run(self) -> None:
        while not self._stopping:
            # Cleared before running anything: a job queued or handed over meanwhile sets it
            # again, so the wait below returns at once for it.
            self._wake.clear()
            try:
                await self._run_handed()
                if self._claim_wanted:
                    self._claim_wanted = False
                    if await self.run_once() >= self._batch:
                        self._claim_wanted = True  # a full batch: more may be due
            except asyncio.CancelledError:
                raise
            except Exception:
                # Tried again after the poll's wait (a store that failed may be restarting).
                log.exception("the job queue failed; retrying")
                self._claim_wanted = True
            else:
                if self._claim_wanted or self._handed:
                    continue
            # A part batch took every job that was due: claiming again at once would only find
            # none (a write transaction per job at low load), so wait for a wake or the poll.
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll)
            except TimeoutError:
                self._claim_wanted = True


def _lost(job: Job) -> None:
    log.warning("job %s (%s) ran to its end but was no longer this worker's (voided by an erasure, or claimed "
                "again after this worker went a whole lease without renewing it): left as it is", job.id, job.kind)


class _Heartbeat:
    """Renews one running job's lease each time a third of it has passed, until stopped or the
    lease is lost. Until the first renewal is due it is only a timer (a microsecond to make and
    cancel): a quick job ends before it fires and never has a task or a write for its lease.

    It stops on a flag, not only by having its task cancelled: redis-py can swallow a
    cancellation that lands while a command is in flight (the call returns normally; about one
    cancel in five during a call, measured with redis 8.1, as in redis/redis-py#2028), and a
    heartbeat that outlived its job would keep renewing it: the worker waiting for it would
    hang, or a job whose worker was stopped would never be due again."""

    def __init__(self, queue: JobQueue, job: Job, lease_seconds: float, *, renew_at: float) -> None:
        self._queue = queue
        self._job = job
        self._lease = lease_seconds
        self._stopping = False
        self._renewing = False
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(max(0.0, renew_at - time.time()), self._start)

    def _start(self) -> None:
        self._task = asyncio.create_task(self._beat(), name=f"job-lease-{self._job.id}")

    async def _beat(self) -> None:
        job, lease = self._job, self._job.lease
        assert lease is not None  # a claimed job
        while True:
            renewing_at = time.time()
            self._renewing = True
            try:
                renewed = await self._queue.renew(job.id, lease, self._lease)
            except Exception:
                log.warning("could not renew the lease of job %s (%s); trying again", job.id, job.kind,
                            exc_info=True)
                renewed = None
            finally:
                self._renewing = False
            if self._stopping:
                return
            if renewed is False:
                log.warning("job %s (%s) lost its lease while running (voided by an erasure, or claimed again "
                            "after this worker went a whole lease without renewing it)", job.id, job.kind)
                return
            share = RENEW_AFTER_SHARE if renewed else RENEW_RETRY_SHARE
            await asyncio.sleep(max(0.0, renewing_at + self._lease * share - time.time()))

    async def stop(self) -> None:
        """Stop, and wait until no renewal is in flight: one landing after the job's completion
        would find it gone and report a lost lease."""
        self._stopping = True
        self._timer.cancel()
        if self._task is None:
            return
        if not self._renewing:
            self._task.cancel()  # it sleeps: cut that short
        await asyncio.wait([self._task])

    def cancel(self) -> None:
        """Stop without waiting (the worker itself is being cancelled): no renewal starts after
        this, whether or not the cancellation reaches the task."""
        self._stopping = True
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
