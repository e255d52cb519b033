"""The job-queue protocol: durable, leased, retried with backoff, never silently dropped.

A job is written before the response that caused it finishes. A worker *claims*
jobs: claiming leases a job for ``lease_seconds``, after which, if the worker has
neither completed nor rescheduled it (it crashed, or was killed), the job is due
again and another claim picks it up. Failed jobs are rescheduled with a delay and
keep their attempt count and last error, visible through ``list``; completed jobs
are removed. Handlers must therefore be idempotent: a job can run more than once.
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
    # When it is next due (epoch seconds); while leased, when the lease runs out.
    due_at: float
    created_at: float

    def to_api(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "status": self.status, "attempts": self.attempts,
                "last_error": self.last_error, "due_at": self.due_at, "created_at": self.created_at,
                "chat_id": self.payload.get("chat_id"), "subject_id": self.payload.get("subject_id")}


class JobError(Exception):
    """A job failed with this message as its last error, as it is (already written for a
    reader of GET /jobs, secrets removed); any other exception is described by the worker."""


class JobQueue(Protocol):
    async def enqueue(self, project_id: str, kind: str, payload: dict[str, Any], *,
                      delay_seconds: float = 0.0) -> str:
        """Persist a job (durably, before returning) and return its id. It is due after
        ``delay_seconds``: a job that only matters if its enqueuer dies first (an index
        repair) is completed by the enqueuer long before it is due."""

    async def claim(self, limit: int, lease_seconds: float) -> list[Job]:
        """Lease up to ``limit`` due jobs, oldest due first."""

    async def complete(self, job_id: str) -> None:
        """Remove a finished job."""

    async def retry_later(self, job_id: str, error: str, delay_seconds: float) -> None:
        """Reschedule a failed job, keeping its error for whoever looks (a job deleted
        meanwhile stays deleted). ``error`` must already be free of secrets."""

    async def unfinished(self, project_id: str, limit: int) -> list[Job]:
        """A project's unfinished jobs (pending and failed), oldest first."""

    async def void_subject(self, project_id: str, subject_id: str) -> list[str]:
        """Delete every unfinished job of one subject (its payload's ``subject_id``), leased or
        not, so none runs again; returns their ids. A leased job's handler may still be
        running: it must not write (gateway.erasure), and completing or rescheduling a job
        that is gone must not bring it back."""

    async def release_leases(self) -> int:
        """Make every leased job due now. Only for a queue no other process uses (SQLite),
        at startup: whatever was leased then belonged to a process that is gone."""

    async def close(self) -> None:
        """Release connections."""
