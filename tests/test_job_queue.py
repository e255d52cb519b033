"""The job-queue contract, on SQLite, on the real Redis and on a real three-master Redis Cluster:
durable, leased per job (a lease token, renewed while a job runs), retried, per project."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


from gateway.jobs.sqlite_queue import SqliteJobQueue
from gateway.jobs.worker import JobWorker
from gateway.store.sqlite import connect


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
        await queue.retry_later(job.id, "UpstreamError: 503", delay_seconds=0.3, lease=job.lease)
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


# --- leases: a token per claim, renewed while a job runs ----------------------------------------

def test_a_worker_that_lost_its_lease_cannot_complete_retry_or_renew_the_new_holders_run(make_queue):
    """Worker A's lease ran out and worker B claimed the job: A's late complete, failure report
    and renewal change nothing (B's run stays queued and leased to B), and B's complete works."""
    async def scenario() -> None:
        worker_a, worker_b = make_queue(), make_queue()
        job_id = await worker_a.enqueue("p", "learn", {"n": 1})
        [held_by_a] = await worker_a.claim(1, lease_seconds=0.2)
        await asyncio.sleep(0.3)  # A stalled past its lease
        [held_by_b] = await worker_b.claim(1, lease_seconds=60)
        assert held_by_b.id == job_id and held_by_b.lease != held_by_a.lease and held_by_b.attempts == 2
        assert await worker_a.complete(job_id, held_by_a.lease) is False
        assert await worker_a.retry_later(job_id, "RuntimeError: late", 0, lease=held_by_a.lease) is False
        assert await worker_a.renew(job_id, held_by_a.lease, 60) is False
        [waiting] = await worker_b.unfinished("p", 10)
        assert (waiting.id, waiting.status, waiting.last_error, waiting.lease) == (job_id, "pending", None, None)
        assert await worker_a.claim(1, 60) == []  # still B's: neither done nor due again
        assert await worker_b.renew(job_id, held_by_b.lease, 60) is True
        assert await worker_b.complete(job_id, held_by_b.lease) is True
        assert await worker_b.unfinished("p", 10) == []
        # A late report about a job that is gone does not bring it back either.
        assert await worker_a.retry_later(job_id, "RuntimeError: late", 0, lease=held_by_b.lease) is False
        assert await worker_a.unfinished("p", 10) == [] and await worker_a.claim(1, 60) == []
        await worker_a.close()
        await worker_b.close()

    asyncio.run(scenario())


def test_a_renewed_lease_keeps_the_job_from_other_claims_and_an_enqueuer_can_still_withdraw_its_job(make_queue):
    async def scenario() -> None:
        queue = make_queue()
        job_id = await queue.enqueue("p", "learn", {})
        [job] = await queue.claim(1, lease_seconds=0.3)
        assert job.lease and job.due_at > time.time()
        for _ in range(3):  # 0.6 s in all, twice the lease
            await asyncio.sleep(0.2)
            assert await queue.renew(job_id, job.lease, 0.3) is True
            assert await queue.claim(1, 60) == []
        # Renewing a lease that ran out is fine as long as nobody claimed the job since: it is still ours.
        await asyncio.sleep(0.4)
        assert await queue.renew(job_id, job.lease, 60) is True and await queue.claim(1, 60) == []
        # A job queued as a safety net (an index repair) is withdrawn by its enqueuer without a lease.
        assert await queue.complete(job_id) is True
        assert await queue.complete(job_id) is False and await queue.unfinished("p", 10) == []
        await queue.close()

    asyncio.run(scenario())


async def _until(condition: Callable[[], Awaitable[bool]], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_a_job_running_longer_than_its_lease_is_never_claimed_by_a_second_worker(make_queue):
    """The heartbeat: a handler alive for over three leases keeps its job; a second worker polling
    all along never gets it, and the job runs once."""
    lease = 0.6

    async def scenario() -> None:
        queue_a, queue_b = make_queue(), make_queue()
        calls: list[str] = []

        async def slow(job: Any) -> None:
            calls.append(job.id)
            await asyncio.sleep(3.5 * lease)

        workers = [JobWorker(queue, slow, lease_seconds=lease, poll_seconds=0.02) for queue in (queue_a, queue_b)]
        job_id = await queue_a.enqueue("p", "learn", {})
        for worker in workers:
            worker.start()

        async def running() -> bool:
            return bool(calls)

        await _until(running, 5)
        # While the handler runs, a third party polling the queue never finds the job due.
        while len(await queue_b.unfinished("p", 10)) == 1:
            assert await queue_b.claim(10, lease_seconds=60) == []
            await asyncio.sleep(0.05)
        for worker in workers:
            await worker.stop()
        assert calls == [job_id]
        await queue_a.close()
        await queue_b.close()

    asyncio.run(scenario())


def test_a_batch_longer_than_its_lease_runs_each_job_once_with_two_workers_competing(make_queue):
    """Worker A claims all eight jobs at once under one lease, but running them takes three leases:
    the jobs still waiting in A's hands when their lease runs out go to worker B, and A skips them
    (its renewal fails) instead of running them a second time."""
    lease, jobs, seconds_per_job = 0.8, 8, 0.3

    async def scenario() -> dict[str, list[str]]:
        queue_a, queue_b = make_queue(), make_queue()
        calls: dict[str, list[str]] = {}

        def handler(name: str) -> Any:
            async def run(job: Any) -> None:
                calls.setdefault(job.id, []).append(name)
                await asyncio.sleep(seconds_per_job)
            return run

        ids = [await queue_a.enqueue("p", "learn", {"n": n}) for n in range(jobs)]
        worker_a = JobWorker(queue_a, handler("a"), batch=16, lease_seconds=lease, poll_seconds=0.02)
        worker_b = JobWorker(queue_b, handler("b"), batch=16, lease_seconds=lease, poll_seconds=0.02)

        async def running() -> bool:
            return bool(calls)

        async def all_done() -> bool:
            return not await queue_a.unfinished("p", 100)

        worker_a.start()
        await _until(running, 5)  # A holds the whole batch before B starts polling
        worker_b.start()
        await _until(all_done, 20)
        await worker_a.stop()
        await worker_b.stop()
        await queue_a.close()
        await queue_b.close()
        assert sorted(calls) == sorted(ids)
        return calls

    calls = asyncio.run(scenario())
    assert all(len(runs) == 1 for runs in calls.values()), calls
    # The batch did outlive its lease: B took over what A had not started in time.
    assert {runs[0] for runs in calls.values()} == {"a", "b"}, calls


def test_a_worker_cancelled_mid_job_leaves_it_due_again_after_the_lease(make_queue):
    """A crash: the worker's task is cancelled while the handler runs, without completing the job.
    No heartbeat outlives it: the job is due again once the lease runs out, with one attempt more."""
    lease = 0.5

    async def scenario() -> None:
        queue = make_queue()
        started = asyncio.Event()

        async def hangs(job: Any) -> None:
            started.set()
            await asyncio.Event().wait()

        worker = JobWorker(queue, hangs, lease_seconds=lease, poll_seconds=0.02)
        job_id = await queue.enqueue("p", "learn", {})
        worker.start()
        await asyncio.wait_for(started.wait(), 5)
        await worker.stop()
        assert await queue.claim(1, 60) == []  # the lease still holds
        await asyncio.sleep(lease + 0.2)
        [again] = await queue.claim(1, 60)
        assert (again.id, again.attempts) == (job_id, 2)
        await queue.close()

    asyncio.run(scenario())


def test_a_jobs_table_from_before_lease_tokens_is_upgraded_and_its_leases_released(tmp_path):
    path = str(tmp_path / "jobs.db")
    old = connect(path)
    old.executescript("""
        CREATE TABLE jobs (id TEXT PRIMARY KEY, project_id TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
                           status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
                           due_at REAL NOT NULL, leased INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL);
        INSERT INTO jobs VALUES ('job_old', 'p', 'learn', '{}', 'pending', 1, NULL, 9999999999, 1, 1);
    """)
    old.close()

    async def scenario() -> None:
        queue = SqliteJobQueue(path)
        assert await queue.claim(1, 60) == []  # the old lease holds until released
        assert await queue.release_leases() == 1
        [job] = await queue.claim(1, 60)
        assert (job.id, job.attempts) == ("job_old", 2)
        assert await queue.complete(job.id, job.lease) is True
        await queue.enqueue("p", "learn", {})  # inserts need not name the old column
        assert len(await queue.unfinished("p", 10)) == 1
        await queue.close()

    asyncio.run(scenario())


def test_a_jobs_table_from_before_without_rowid_is_rebuilt_with_its_jobs_and_leases(tmp_path):
    """The jobs table as gateways before it wrote it (a rowid table): rebuilt keyed by the job id
    alone, every job kept as it was, a held lease still held by its token."""
    path = str(tmp_path / "jobs.db")
    old = connect(path)
    old.executescript("""
        CREATE TABLE jobs (id TEXT PRIMARY KEY, project_id TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
                           status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
                           due_at REAL NOT NULL, lease TEXT, created_at REAL NOT NULL);
        CREATE INDEX jobs_by_due ON jobs (due_at);
        CREATE INDEX jobs_by_project ON jobs (project_id, created_at);
        INSERT INTO jobs VALUES ('job_due', 'p', 'learn', '{"n": 1}', 'failed', 2, 'boom', 1, NULL, 1);
        INSERT INTO jobs VALUES ('job_leased', 'p', 'learn', '{"n": 2}', 'pending', 1, NULL, 9999999999, 'tok', 2);
    """)
    old.close()

    async def scenario() -> None:
        queue = SqliteJobQueue(path)
        [sql] = queue._db.execute("SELECT sql FROM sqlite_master WHERE name = 'jobs'").fetchone()
        assert "WITHOUT ROWID" in sql
        [due] = await queue.claim(5, 60)  # the leased one is not due
        assert (due.id, due.payload, due.attempts, due.last_error) == ("job_due", {"n": 1}, 3, "boom")
        assert await queue.complete("job_leased", "someone else") is False
        assert await queue.complete("job_leased", "tok") is True
        assert [job.id for job in await queue.unfinished("p", 10)] == ["job_due"]
        await queue.close()
        # Opened again: nothing to rebuild, nothing lost.
        again = SqliteJobQueue(path)
        assert [job.id for job in await again.unfinished("p", 10)] == ["job_due"]
        await again.close()

    asyncio.run(scenario())


def test_a_worker_whose_jobs_end_while_their_lease_is_being_renewed_finishes_them_all(make_queue):
    """A lease of a few milliseconds: the heartbeat renews all the time, so jobs often end while
    a renewal is in flight. Stopping the heartbeat then must not hang the worker (on Redis, the
    cancellation of a command in flight can be swallowed by redis-py), nor leave a job behind."""
    jobs = 60

    async def scenario() -> list[int]:
        queue = make_queue()
        calls: list[int] = []

        async def brief(job: Any) -> None:
            calls.append(job.payload["n"])
            await asyncio.sleep(0.004)

        worker = JobWorker(queue, brief, lease_seconds=0.006, poll_seconds=0.02)
        for n in range(jobs):
            await queue.enqueue("p", "learn", {"n": n})
        worker.start()

        async def all_done() -> bool:
            return not await queue.unfinished("p", jobs)

        await _until(all_done, 30)
        await worker.stop()
        await queue.close()
        return calls

    assert sorted(asyncio.run(scenario())) == list(range(jobs))


def test_a_job_enqueued_claimed_is_leased_to_its_enqueuer_and_due_again_only_when_the_lease_runs_out(make_queue):
    """``enqueue_claimed`` (a worker's handed-over job): one write, the job durable and listed
    at once, leased to whoever wrote it; nobody else claims it until the lease runs out."""
    async def scenario() -> None:
        queue = make_queue()
        job = await queue.enqueue_claimed("p1", "learn", {"subject_id": "ann", "n": (1, 2)}, lease_seconds=0.4)
        assert (job.project_id, job.kind, job.attempts, job.status) == ("p1", "learn", 1, "pending")
        assert job.payload == {"subject_id": "ann", "n": [1, 2]}  # as a claim reads it back: JSON's types
        assert job.lease and job.due_at > time.time() + 0.2
        assert [j.id for j in await queue.unfinished("p1", 10)] == [job.id]
        other = make_queue()  # another worker of the same queue
        assert await other.claim(10, lease_seconds=60) == []
        await asyncio.sleep(0.5)  # the enqueuer "died" before running it
        [again] = await other.claim(10, lease_seconds=60)
        assert (again.id, again.attempts, again.payload) == (job.id, 2, job.payload)
        assert await queue.complete(job.id, job.lease) is False  # the first lease is not the job's any more
        assert await other.complete(again.id, again.lease) is True
        assert await queue.unfinished("p1", 10) == []
        await queue.close()
        await other.close()

    asyncio.run(scenario())


def test_a_job_enqueued_claimed_completes_with_its_token_and_is_voided_by_an_erasure(make_queue):
    async def scenario() -> None:
        queue = make_queue()
        done = await queue.enqueue_claimed("p1", "learn", {"subject_id": "bob"}, lease_seconds=60)
        erased = await queue.enqueue_claimed("p1", "learn", {"subject_id": "ann"}, lease_seconds=60)
        assert await queue.complete(done.id, "not-its-token") is False
        assert await queue.complete(done.id, done.lease) is True
        assert await queue.void_subject("p1", "ann") == [erased.id]
        assert await queue.complete(erased.id, erased.lease) is False  # gone: not brought back
        assert await queue.unfinished("p1", 10) == [] and await queue.claim(10, 60) == []
        await queue.close()

    asyncio.run(scenario())


def _submitting_worker(queue: Any, ran: list[Any], **options: Any) -> JobWorker:
    async def handler(job: Any) -> None:
        ran.append(job)

    return JobWorker(queue, handler, **options)


def test_jobs_submitted_to_a_running_worker_run_there_once_each_even_past_its_room(make_queue):
    """``submit``: while the worker runs, a job goes straight to it (already claimed); beyond its
    room (a batch) jobs are queued for a claim instead. Every job runs once, nothing is left."""
    async def scenario() -> None:
        queue = make_queue()
        ran: list[Any] = []
        # A poll far longer than the test: a job waiting for a poll would never run in time.
        worker = _submitting_worker(queue, ran, batch=4, poll_seconds=30)
        worker.start()
        ids = [await worker.submit("p", "learn", {"n": n}) for n in range(10)]  # 4 handed over, 6 queued

        async def all_done() -> bool:
            return len(ran) == 10 and not await queue.unfinished("p", 100)

        await _until(all_done, 10)
        await worker.stop()
        await queue.close()
        assert sorted(job.id for job in ran) == sorted(ids)
        assert [job.payload["n"] for job in ran[:4]] == [0, 1, 2, 3]  # the handed-over ones first, in order
        assert all(job.attempts == 1 for job in ran)

    asyncio.run(scenario())


def test_a_job_submitted_to_a_worker_that_is_not_running_waits_for_any_workers_claim(make_queue):
    async def scenario() -> None:
        queue = make_queue()
        ran: list[Any] = []
        idle = _submitting_worker(queue, ran)  # never started
        job_id = await idle.submit("p", "learn", {"n": 1})
        [claimed] = await make_queue().claim(10, lease_seconds=60)  # due at once, for anyone
        assert (claimed.id, claimed.attempts) == (job_id, 1)
        assert ran == []
        await queue.close()

    asyncio.run(scenario())


def test_a_job_handed_to_a_worker_that_stops_before_running_it_runs_elsewhere_after_its_lease(make_queue):
    """What a crash or a stop can do to a handed-over job: it is in the store, leased; once the
    lease runs out another worker (another gateway, or this one restarted) runs it."""
    lease = 0.5

    async def scenario() -> None:
        queue = make_queue()
        first: list[Any] = []
        worker = _submitting_worker(queue, first, lease_seconds=lease, poll_seconds=30)
        worker.start()
        job_id = await worker.submit("p", "learn", {"n": 1})
        await worker.stop()  # before the wake that would have run it
        assert first == [] and [j.id for j in await queue.unfinished("p", 10)] == [job_id]
        second: list[Any] = []
        other = _submitting_worker(make_queue(), second, lease_seconds=lease, poll_seconds=0.05)
        other.start()

        async def ran_elsewhere() -> bool:
            return bool(second) and not await queue.unfinished("p", 10)

        await _until(ran_elsewhere, 5)
        await other.stop()
        await queue.close()
        assert [(job.id, job.attempts) for job in second] == [(job_id, 2)]

    asyncio.run(scenario())
