"""The job-queue protocol: durable, leased per job, retried with backoff, never silently dropped.

A job is written before the response that caused it finishes. A worker *claims* jobs: claiming
leases each job for ``lease_seconds`` and stamps it with a lease token, new for every claim
(``Job.lease``). The token is the ownership: ``complete``, ``retry_later`` and ``renew`` given a
token act only while the job still carries it, in one atomic step (SQLite: one statement of the
write transaction; Redis: one Lua script). A worker that held a job past its lease, while another
worker claimed it (a new token), can therefore neither delete nor reschedule the other's run:
its call returns False and changes nothing.

A lease that is not renewed runs out: the job is due again and the next claim takes it, so a job
whose worker died (crashed, killed, cancelled) runs again. The worker (gateway/jobs/worker.py)
renews the lease of the job it runs while its handler is alive, so a job that merely takes long
is not run by a second worker. The guarantee is at-least-once with one live lease per job: a
job runs twice only when its worker stops renewing for a whole lease without dying (a process
stalled or frozen that long, a store unreachable for that long) or dies mid-run, so handlers
must still be idempotent.

Failed jobs are rescheduled with a delay and keep their attempt count and last error, visible
through ``unfinished``; completed jobs are removed. ``retry_now`` (an operator's "Retry now")
makes a waiting job due at once; it never touches a lease or its token, and refuses a job a
worker holds (``JobLeased``): that run is already under way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Job:
    id: str
    project_id: str
    kind: str
    payload: dict[str, Any]
    # How many times a worker has claimed it (1 on its first run).
    attempts: int
    # "pending" (waiting, or leased to a worker) or "failed" (waiting for a retry).
    status: str
    last_error: str | None
    # When it is next due (epoch seconds); while leased, when the lease runs out (as claimed).
    due_at: float
    created_at: float
    # The token of the claim that returned this job (its proof of ownership for complete,
    # retry_later and renew); None on a job read by ``unfinished``. Never shown by the API.
    lease: str | None = None

    def to_api(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "status": self.status, "attempts": self.attempts,
                "last_error": self.last_error, "due_at": self.due_at, "created_at": self.created_at,
                "chat_id": self.payload.get("chat_id"), "subject_id": self.payload.get("subject_id")}


class JobError(Exception):
    """A job failed with this message as its last error, as it is (already written for a
    reader of GET /jobs, secrets removed); any other exception is described by the worker."""


class JobLeased(Exception):
    """``retry_now`` on a job a worker holds a live lease on: it is running (or about to) now."""


class JobQueue(Protocol):
    async def enqueue(self, project_id: str, kind: str, payload: dict[str, Any], *,
                      delay_seconds: float = 0.0) -> str:
        """Persist a job (durably, before returning) and return its id. It is due after
        ``delay_seconds``: a job that only matters if its enqueuer dies first (an index
        repair) is completed by the enqueuer long before it is due."""

    async def enqueue_claimed(self, project_id: str, kind: str, payload: dict[str, Any],
                              lease_seconds: float) -> Job:
        """``enqueue`` and a ``claim`` of that one job in one write: the job is persisted
        (durably, before returning) already leased to the caller until ``lease_seconds`` from
        now, under a new token, on its first attempt. For a worker that runs it next in this
        process (JobWorker.submit); if it never does (it stopped, its process died), the lease
        runs out and the job is due again for any worker, as a claimed job would be."""

    async def claim(self, limit: int, lease_seconds: float) -> list[Job]:
        """Lease up to ``limit`` due jobs, oldest due first, each until ``lease_seconds`` from
        now, under one new lease token (``Job.lease``)."""

    async def renew(self, job_id: str, lease: str, lease_seconds: float) -> bool:
        """Extend the job's lease to ``lease_seconds`` from now if it is still ours (it carries
        ``lease``), even if the lease ran out meanwhile but nobody claimed it since. False:
        it is not ours any more (claimed again by another worker, completed, voided)."""

    async def complete(self, job_id: str, lease: str | None = None) -> bool:
        """Remove a finished job. With ``lease`` (a worker finishing what it claimed): only if
        the job still carries it; False, and nothing changed, when the lease was lost (another
        claim holds the job now: its run stays queued and leased to it) or the job is gone.
        Without: remove it whoever holds it (the enqueuer withdrawing a job it queued as a
        safety net, an index repair); False if it was already gone."""

    async def retry_later(self, job_id: str, error: str, delay_seconds: float, *, lease: str) -> bool:
        """Reschedule a failed job that still carries ``lease``, keeping its error for whoever
        looks, and release its lease; False, and nothing changed, if the lease was lost or the
        job deleted meanwhile (a deleted job stays deleted). ``error`` must already be free
        of secrets."""

    async def unfinished(self, project_id: str, limit: int) -> list[Job]:
        """A project's unfinished jobs (pending and failed), oldest first."""

    async def retry_now(self, project_id: str, job_id: str) -> Job | None:
        """Make one of ``project_id``'s waiting jobs due now (a failed job waiting out its backoff,
        or a job enqueued with a delay), keeping its attempts and last error, in one atomic step;
        returns the job as it is now. None: the project has no such job (another project's job
        id is answered the same as a missing one). Raises JobLeased when a worker holds the job
        (a lease that has not run out): its lease and token are left as they are."""

    async def void_subject(self, project_id: str, subject_id: str) -> list[str]:
        """Delete every unfinished job of one subject (its payload's ``subject_id``), leased or
        not, so none runs again; returns their ids. A leased job's handler may still be
        running: it must not write (gateway.erasure), and completing, renewing or rescheduling
        a job that is gone must not bring it back."""

    async def release_leases(self) -> int:
        """Make every leased job due now. Only for a queue no other process uses (SQLite),
        at startup: whatever was leased then belonged to a process that is gone."""

    async def close(self) -> None:
        """Release connections."""
