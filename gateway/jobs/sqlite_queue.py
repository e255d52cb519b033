"""The embedded job queue: a table in the gateway's SQLite file.

Synchronous statements on the event loop, like the document store (one process,
one writer, microseconds per statement). A commit in WAL mode survives the process
being killed, which is what durability has to mean for the embedded default.

A leased job's ``lease`` column holds the token of the claim that leased it (NULL when it is
not leased); ``due_at`` is then when that lease runs out. Every call that acts on a claim
(renew, complete, retry_later) is one statement whose ``WHERE id = ? AND lease = ?`` makes the
check and the write one atomic step: a worker whose job was claimed again by another worker
finds no row and changes nothing.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from gateway.ids import ordered_id
from gateway.jobs.queue import Job, JobLeased
from gateway.store import codec
from gateway.store.sqlite import connect

# WITHOUT ROWID: a job is written once and deleted once, and each of those touches every
# B-tree of the table. Keyed by its id alone, the table is one B-tree (a rowid table would be
# two: its rows, and the id's own index), plus the two indexes below.
_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    due_at      REAL NOT NULL,
    lease       TEXT,
    created_at  REAL NOT NULL
) WITHOUT ROWID;
"""
_INDEXES = """
CREATE INDEX IF NOT EXISTS jobs_by_due ON jobs (due_at);
CREATE INDEX IF NOT EXISTS jobs_by_project ON jobs (project_id, created_at);
"""
_COLUMNS = "id, project_id, kind, payload, status, attempts, last_error, due_at, created_at"
# A lease taken before leases had tokens (a file written by an older gateway, whose ``leased``
# column said only "leased"): nobody holds this token, so the lease just runs out (or is
# released at startup) like any other.
_UNTOKENED_LEASE = "before-tokens"


def _job(row: tuple[Any, ...], lease: str | None = None) -> Job:
    job_id, project_id, kind, payload, status, attempts, last_error, due_at, created_at = row
    return Job(id=job_id, project_id=project_id, kind=kind, payload=codec.decode(payload), status=status,
               attempts=attempts, last_error=last_error, due_at=due_at, created_at=created_at, lease=lease)


class SqliteJobQueue:
    def __init__(self, path: str) -> None:
        self._db = connect(path)
        self._db.execute(_TABLE.format(name="jobs"))
        self._upgrade_table()
        self._db.executescript(_INDEXES)

    def _upgrade_table(self) -> None:
        """Rebuild a jobs table written by an older gateway (a rowid table; before lease tokens, a
        ``leased`` flag instead of the ``lease`` column) as the one above, its jobs kept. One
        write transaction: another process opening the file meanwhile waits, then finds it done."""
        if self._current_layout():
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if not self._current_layout():
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
                # A lease taken before leases had tokens holds the one nobody has (_UNTOKENED_LEASE).
                lease = "lease" if "lease" in columns else "CASE WHEN leased = 1 THEN ? END"
                self._db.execute(_TABLE.format(name="jobs_upgraded"))
                self._db.execute(f"INSERT INTO jobs_upgraded ({_COLUMNS}, lease) SELECT {_COLUMNS}, {lease} FROM jobs",
                                 () if "lease" in columns else (_UNTOKENED_LEASE,))
                self._db.execute("DROP TABLE jobs")  # its indexes with it
                self._db.execute("ALTER TABLE jobs_upgraded RENAME TO jobs")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _current_layout(self) -> bool:
        (sql,) = self._db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone()
        return "WITHOUT ROWID" in sql.upper()

    async def enqueue(self, project_id: str, kind: str, payload: dict[str, Any], *,
                      delay_seconds: float = 0.0) -> str:
        job_id, _, _ = self._insert(project_id, kind, codec.encode(payload), due_in=delay_seconds, attempts=0,
                                    lease=None)
        return job_id

    async def enqueue_claimed(self, project_id: str, kind: str, payload: dict[str, Any],
                              lease_seconds: float) -> Job:
        lease = secrets.token_hex(8)
        encoded = codec.encode(payload)
        job_id, due_at, now = self._insert(project_id, kind, encoded, due_in=lease_seconds, attempts=1, lease=lease)
        # The payload as a claim would read it back (a copy, in JSON's types), not the caller's dict.
        return _job((job_id, project_id, kind, encoded, "pending", 1, None, due_at, now), lease)

    def _insert(self, project_id: str, kind: str, encoded_payload: str, *, due_in: float, attempts: int,
                lease: str | None) -> tuple[str, float, float]:
        """A new job, due ``due_in`` seconds from now (one statement, its own commit): (its id, when
        it is due, when it was created)."""
        job_id = ordered_id("job_")
        now = time.time()
        self._db.execute("INSERT INTO jobs (id, project_id, kind, payload, status, attempts, due_at, lease, "
                         "created_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                         (job_id, project_id, kind, encoded_payload, attempts, now + due_in, lease, now))
        return job_id, now + due_in, now

    async def claim(self, limit: int, lease_seconds: float) -> list[Job]:
        now = time.time()
        lease_end = now + lease_seconds
        lease = secrets.token_hex(8)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE due_at <= ? ORDER BY due_at LIMIT ?",
                                    (now, limit)).fetchall()
            self._db.executemany("UPDATE jobs SET attempts = attempts + 1, due_at = ?, lease = ? WHERE id = ?",
                                 [(lease_end, lease, row[0]) for row in rows])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return [_job(row[:5] + (row[5] + 1,) + row[6:7] + (lease_end,) + row[8:], lease) for row in rows]

    async def renew(self, job_id: str, lease: str, lease_seconds: float) -> bool:
        return self._db.execute("UPDATE jobs SET due_at = ? WHERE id = ? AND lease = ?",
                                (time.time() + lease_seconds, job_id, lease)).rowcount == 1

    async def complete(self, job_id: str, lease: str | None = None) -> bool:
        if lease is None:
            return self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount == 1
        return self._db.execute("DELETE FROM jobs WHERE id = ? AND lease = ?", (job_id, lease)).rowcount == 1

    async def retry_later(self, job_id: str, error: str, delay_seconds: float, *, lease: str) -> bool:
        return self._db.execute("UPDATE jobs SET status = 'failed', last_error = ?, due_at = ?, lease = NULL "
                                "WHERE id = ? AND lease = ?",
                                (error[:2000], time.time() + delay_seconds, job_id, lease)).rowcount == 1

    async def retry_now(self, project_id: str, job_id: str) -> Job | None:
        now = time.time()
        # One write transaction: the lease is read and the due time set with nothing in between.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute(f"SELECT {_COLUMNS}, lease FROM jobs WHERE id = ? AND project_id = ?",
                                   (job_id, project_id)).fetchone()
            # A lease that ran out is no hold: the job is due already and the next claim takes it.
            leased = row is not None and row[9] is not None and row[7] > now
            if row is not None and not leased and row[7] > now:
                self._db.execute("UPDATE jobs SET due_at = ? WHERE id = ?", (now, job_id))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if row is None:
            return None
        if leased:
            raise JobLeased(job_id)
        return _job(row[:7] + (min(row[7], now),) + row[8:9])

    async def void_subject(self, project_id: str, subject_id: str) -> list[str]:
        rows = self._db.execute("DELETE FROM jobs WHERE project_id = ? AND json_extract(payload, '$.subject_id') = ? "
                                "RETURNING id", (project_id, subject_id)).fetchall()
        return [row[0] for row in rows]

    async def unfinished(self, project_id: str, limit: int) -> list[Job]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE project_id = ? ORDER BY created_at LIMIT ?",
                                (project_id, limit)).fetchall()
        return [_job(row) for row in rows]

    async def release_leases(self) -> int:
        return self._db.execute("UPDATE jobs SET due_at = ?, lease = NULL WHERE lease IS NOT NULL",
                                (time.time(),)).rowcount

    async def close(self) -> None:
        self._db.close()
