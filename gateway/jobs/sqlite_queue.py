"""The embedded job queue: a table in the gateway's SQLite file.

Synchronous statements on the event loop, like the document store (one process,
one writer, microseconds per statement). A commit in WAL mode survives the process
being killed, which is what durability has to mean for the embedded default.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.ids import ordered_id
from gateway.jobs.queue import Job
from gateway.store import codec
from gateway.store.sqlite import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    due_at      REAL NOT NULL,
    leased      INTEGER NOT NULL DEFAULT 0,
    created_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_due ON jobs (due_at);
CREATE INDEX IF NOT EXISTS jobs_by_project ON jobs (project_id, created_at);
"""
_COLUMNS = "id, project_id, kind, payload, status, attempts, last_error, due_at, created_at"


def _job(row: tuple[Any, ...]) -> Job:
    job_id, project_id, kind, payload, status, attempts, last_error, due_at, created_at = row
    return Job(id=job_id, project_id=project_id, kind=kind, payload=codec.decode(payload), status=status,
               attempts=attempts, last_error=last_error, due_at=due_at, created_at=created_at)


class SqliteJobQueue:
    def __init__(self, path: str) -> None:
        self._db = connect(path)
        self._db.executescript(_SCHEMA)

    async def enqueue(self, project_id: str, kind: str, payload: dict[str, Any], *,
                      delay_seconds: float = 0.0) -> str:
        job_id = ordered_id("job_")
        now = time.time()
        self._db.execute("INSERT INTO jobs (id, project_id, kind, payload, status, due_at, created_at) "
                         "VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                         (job_id, project_id, kind, codec.encode(payload), now + delay_seconds, now))
        return job_id

    async def claim(self, limit: int, lease_seconds: float) -> list[Job]:
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE due_at <= ? ORDER BY due_at LIMIT ?",
                                    (now, limit)).fetchall()
            self._db.executemany("UPDATE jobs SET attempts = attempts + 1, due_at = ?, leased = 1 WHERE id = ?",
                                 [(now + lease_seconds, row[0]) for row in rows])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return [_job(row[:5] + (row[5] + 1,) + row[6:7] + (now + lease_seconds,) + row[8:]) for row in rows]

    async def complete(self, job_id: str) -> None:
        self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    async def retry_later(self, job_id: str, error: str, delay_seconds: float) -> None:
        self._db.execute("UPDATE jobs SET status = 'failed', last_error = ?, due_at = ?, leased = 0 WHERE id = ?",
                         (error[:2000], time.time() + delay_seconds, job_id))

    async def void_subject(self, project_id: str, subject_id: str) -> list[str]:
        rows = self._db.execute("DELETE FROM jobs WHERE project_id = ? AND json_extract(payload, '$.subject_id') = ? "
                                "RETURNING id", (project_id, subject_id)).fetchall()
        return [row[0] for row in rows]

    async def unfinished(self, project_id: str, limit: int) -> list[Job]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE project_id = ? ORDER BY created_at LIMIT ?",
                                (project_id, limit)).fetchall()
        return [_job(row) for row in rows]

    async def release_leases(self) -> int:
        return self._db.execute("UPDATE jobs SET due_at = ?, leased = 0 WHERE leased = 1", (time.time(),)).rowcount

    async def close(self) -> None:
        self._db.close()
