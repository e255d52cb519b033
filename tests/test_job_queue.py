"""The job-queue contract, on SQLite, on the real Redis and on a real three-master Redis Cluster:
durable, leased, retried, per project."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import pytest

from gateway.jobs.redis_queue import RedisJobQueue
from gateway.jobs.sqlite_queue import SqliteJobQueue
from gateway.jobs.worker import JobWorker
from tests.conftest import REDIS_URL, drop_redis_prefix, require_redis


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
def make_queue(request, tmp_path):
    prefixes: list[str] = []
    cluster = request.getfixturevalue("redis_cluster") if request.param == "redis-cluster" else None

    def make() -> Any:
        if request.param == "sqlite":
            return SqliteJobQueue(str(tmp_path / "jobs.db"))
        if cluster is None:
            require_redis()
        prefix = f"mnxtest:{secrets.token_hex(6)}:" if not prefixes else prefixes[0]
        prefixes.append(prefix)
        if cluster is not None:
            return RedisJobQueue(cluster.url, prefix, cluster=True)
        return RedisJobQueue(REDIS_URL, prefix)

    make.kind = request.param  # type: ignore[attr-defined]
    yield make
    for prefix in set(prefixes):
        if cluster is not None:
            cluster.drop_prefix(prefix)
        else:
            drop_redis_prefix(prefix)


def test_enqueue_claim_complete_and_per_project_lists(make_queue):
    async def scenario() -> None:
        queue = make_queue()
        first = await queue.enqueue("p1", "learn", {"chat_id": "c1", "subject_id": "s"})
        await queue.enqueue("p2", "learn", {"chat_id": "c2"})
        assert [j.id for j in await queue.unfinished("p1", 10)] == [first]
        claimed = await queue.claim(10, lease_seconds=60)
        assert sorted(j.project_id for j in claimed) == ["p1", "p2"]
        assert all(j.attempts == 1 for j in claimed)
        assert await queue.claim(10, lease_seconds=60) == []  # leased: not due again yet
        for job in claimed:
            await queue.complete(job.id)
        assert await queue.unfinished("p1", 10) == [] and await queue.claim(10, 60) == []
        await queue.close()

    asyncio.run(scenario())


def test_voiding_a_subject_removes_its_jobs_only(make_queue):
    """What an erasure does to the queue: the subject's jobs in that project go, others stay."""
    async def scenario() -> None:
        queue = make_queue()
        gone = [await queue.enqueue("p1", "learn", {"subject_id": "ann", "n": n}) for n in range(3)]
        kept = [await queue.enqueue("p1", "learn", {"subject_id": "bob"}),
                await queue.enqueue("p2", "learn", {"subject_id": "ann"})]
        assert sorted(await queue.void_subject("p1", "ann")) == sorted(gone)
        assert [j.id for j in await queue.unfinished("p1", 10)] == kept[:1]
        assert sorted(j.id for j in await queue.claim(10, lease_seconds=60)) == sorted(kept)
        await queue.close()

    asyncio.run(scenario())


def test_an_expired_lease_makes_the_job_due_again(make_queue):
    async def scenario() -> None:
        queue = make_queue()
        job_id = await queue.enqueue("p", "learn", {"n": 1})
        [job] = await queue.claim(1, lease_seconds=0.2)
        await asyncio.sleep(0.3)  # the worker "died" holding it
        [again] = await queue.claim(1, lease_seconds=60)
        assert (again.id, again.attempts, again.payload) == (job_id, 2, {"n": 1})
        await queue.close()

    asyncio.run(scenario())


def test_failed_jobs_wait_keep_their_error_and_survive_a_reopen(make_queue):
    async def scenario() -> None:
        queue = make_queue()
        job_id = await queue.enqueue("p", "learn", {"n": 1})
        [job] = await queue.claim(1, 60)
        await queue.retry_later(job.id, "UpstreamError: 503", delay_seconds=0.3)
        [listed] = await queue.unfinished("p", 10)
        assert (listed.status, listed.last_error, listed.attempts) == ("failed", "UpstreamError: 503", 1)
        assert listed.due_at > time.time()
        assert await queue.claim(1, 60) == []
        await queue.close()
        reopened = make_queue()
        await asyncio.sleep(0.35)
        [retried] = await reopened.claim(1, 60)
        assert (retried.id, retried.attempts) == (job_id, 2)
        await reopened.close()

    asyncio.run(scenario())


def test_the_embedded_queue_releases_leases_of_a_dead_process(tmp_path):
    async def scenario() -> None:
        queue = SqliteJobQueue(str(tmp_path / "jobs.db"))
        await queue.enqueue("p", "learn", {})
        await queue.claim(1, lease_seconds=3600)
        await queue.close()  # the process is killed while holding the lease
        restarted = SqliteJobQueue(str(tmp_path / "jobs.db"))
        assert await restarted.release_leases() == 1
        assert len(await restarted.claim(1, 60)) == 1
        await restarted.close()

    asyncio.run(scenario())


def test_the_worker_retries_with_backoff_then_succeeds(tmp_path):
    async def scenario() -> None:
        queue = SqliteJobQueue(str(tmp_path / "jobs.db"))
        calls: list[int] = []

        async def flaky(job: Any) -> None:
            calls.append(job.attempts)
            if job.attempts < 3:
                raise RuntimeError("provider down")

        worker = JobWorker(queue, flaky, retry_base_seconds=0.05, poll_seconds=0.02)
        assert [worker.backoff(n) for n in (1, 2, 3)] == [0.05, 0.1, 0.2]
        await queue.enqueue("p", "learn", {})
        worker.start()
        for _ in range(200):
            if not await queue.unfinished("p", 10):
                break
            await asyncio.sleep(0.02)
        await worker.stop()
        assert calls == [1, 2, 3] and await queue.unfinished("p", 10) == []
        await queue.close()

    asyncio.run(scenario())


def test_a_job_enqueued_while_the_worker_runs_one_is_run_at_once_not_at_the_next_poll(tmp_path):
    """The worker waits for a wake (or the poll) after a part batch instead of claiming again
    at once; a job enqueued during the batch must still wake it."""
    async def scenario() -> float:
        queue = SqliteJobQueue(str(tmp_path / "jobs.db"))
        ran: dict[str, float] = {}
        worker: JobWorker

        async def handler(job: Any) -> None:
            ran[job.payload["name"]] = time.monotonic()
            if job.payload["name"] == "first":
                await queue.enqueue("p", "learn", {"name": "second"})
                worker.wake()
                await asyncio.sleep(0.05)  # still running when the wake fires

        worker = JobWorker(queue, handler, poll_seconds=30)
        worker.start()
        await queue.enqueue("p", "learn", {"name": "first"})
        worker.wake()
        for _ in range(200):
            if "second" in ran:
                break
            await asyncio.sleep(0.01)
        await worker.stop()
        await queue.close()
        assert set(ran) == {"first", "second"}
        return ran["second"] - ran["first"]

    assert asyncio.run(scenario()) < 1.0
