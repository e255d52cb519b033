"""``POST /api/v1/jobs/{job_id}/retry``: a waiting job runs now instead of after its backoff.

On the queue (SQLite, the real Redis, a real Redis Cluster) and through the gateway (SQLite and
Redis): a failed job waiting out an hour's backoff runs again at once; a job a worker holds is
refused with 409 and its lease token still works; another project's job and an unknown id are
the same 404; a read-only key is refused with 403 and changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from gateway.jobs.queue import JobLeased
from tests.conftest import KEY, KEY_B, PROVIDER_KEY, wait_until

HOUR = 3600.0


# -- the queue ----------------------------------------------------------------------------------

def test_a_failed_job_waiting_out_its_backoff_is_due_at_once_and_keeps_its_history(make_queue):
    async def scenario() -> None:
        queue = make_queue()
        job_id = await queue.enqueue("p1", "learn", {"subject_id": "ann"})
        [job] = await queue.claim(1, lease_seconds=60)
        assert await queue.retry_later(job.id, "UpstreamError: 400", HOUR, lease=job.lease)
        assert await queue.claim(1, 60) == []  # an hour away

        before = time.time()
        retried = await queue.retry_now("p1", job_id)
        assert retried is not None
        assert (retried.id, retried.status, retried.attempts, retried.last_error) == (
            job_id, "failed", 1, "UpstreamError: 400")
        assert before - 1 <= retried.due_at <= time.time()
        [listed] = await queue.unfinished("p1", 10)
        assert listed.due_at == pytest.approx(retried.due_at)
        [again] = await queue.claim(1, 60)
        assert (again.id, again.attempts) == (job_id, 2)
        await queue.close()

    asyncio.run(scenario())


def test_another_projects_job_and_an_unknown_id_are_not_found_and_stay_as_they_were(make_queue):
    async def scenario() -> None:
        queue = make_queue()
        job_id = await queue.enqueue("p1", "learn", {}, delay_seconds=HOUR)
        assert await queue.retry_now("p2", job_id) is None
        assert await queue.retry_now("p1", "job_nothing_has_this_id") is None
        assert await queue.retry_now("p1", "") is None
        assert await queue.claim(1, 60) == []  # still an hour away
        [listed] = await queue.unfinished("p1", 10)
        assert listed.due_at > time.time() + HOUR - 60
        await queue.close()

    asyncio.run(scenario())


def test_a_job_a_worker_holds_is_refused_and_its_lease_token_still_works(make_queue):
    async def scenario() -> None:
        queue = make_queue()
        job_id = await queue.enqueue("p1", "learn", {})
        [held] = await queue.claim(1, lease_seconds=60)
        with pytest.raises(JobLeased):
            await queue.retry_now("p1", job_id)
        assert await queue.claim(1, 60) == []  # not due: nobody else runs it
        assert await queue.renew(job_id, held.lease, 60) is True
        assert await queue.complete(job_id, held.lease) is True
        assert await queue.retry_now("p1", job_id) is None  # done and gone
        await queue.close()

    asyncio.run(scenario())


def test_a_job_whose_lease_ran_out_is_no_longer_held(make_queue):
    async def scenario() -> None:
        queue = make_queue()
        job_id = await queue.enqueue("p1", "learn", {})
        await queue.claim(1, lease_seconds=0.2)
        await asyncio.sleep(0.3)  # its worker died: the job is due again by itself
        retried = await queue.retry_now("p1", job_id)
        assert retried is not None and retried.due_at <= time.time()
        [again] = await queue.claim(1, 60)
        assert (again.id, again.attempts) == (job_id, 2)
        await queue.close()

    asyncio.run(scenario())


# -- through the gateway ------------------------------------------------------------------------

READ_ONLY_KEY = "mnx_live_job_retry_read_only"
PROJECTS = [
    {"id": "project-a", "keys": [{"name": "main", "key": KEY, "scopes": ["*"]},
                                 {"name": "viewer", "key": READ_ONLY_KEY, "scopes": ["read"]}]},
    {"id": "project-b", "keys": [{"name": "main", "key": KEY_B, "scopes": ["*"]}]},
]


def learn_turn(gateway: Any, subject: str) -> None:
    response = httpx.post(gateway.url + "/v1/chat/completions", timeout=30, headers={
        "x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY}, json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "My favorite color is teal"}],
        "mnx": {"subject_id": subject, "chat_id": f"chat-{subject}", "learn": True, "history": False}})
    assert response.status_code == 200, response.text


def jobs_of(gateway: Any, key: str = KEY) -> list[dict[str, Any]]:
    with gateway.rest(key) as rest:
        return rest.get("/jobs").json()["data"]


def test_retry_now_runs_a_failing_job_at_once_and_only_for_its_own_project(start_gateway, storage):
    # Every run fails (the first: the provider's 400 for this model; the next: no configured key, the
    # caller's serves the first run only), and a failed job waits an hour for its next run.
    gateway = start_gateway(storage, projects=PROJECTS, learning={
        "extractor": {"provider": "litellm", "model": "fail-400"}, "retry_base_seconds": HOUR, "poll_seconds": 0.2})
    learn_turn(gateway, "retry-subject")
    assert wait_until(lambda: [j["status"] for j in jobs_of(gateway)] == ["failed"], timeout=20), jobs_of(gateway)
    [failed] = jobs_of(gateway)
    assert failed["attempts"] == 1 and failed["due_at"] > time.time() + HOUR - 60 and failed["last_error"]
    path = f"/jobs/{failed['id']}/retry"

    # Not this key's to do, not this project's job, no such job: refused, and nothing moves.
    with gateway.rest(READ_ONLY_KEY) as rest:
        refused = rest.post(path)
    assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
    assert "jobs:write" in refused.json()["message"]
    with gateway.rest(KEY_B) as rest:
        elsewhere = rest.post(path)
        unknown = rest.post("/jobs/job_nothing_has_this_id/retry")
        assert rest.get("/jobs").json()["data"] == []
    with gateway.rest() as rest:
        missing = rest.post("/jobs/job_nothing_has_this_id/retry")
    for answer in (elsewhere, unknown, missing):
        assert (answer.status_code, answer.json()["error"]) == (404, "not_found"), answer.text
    time.sleep(0.5)  # the worker polls every 0.2 s: a job made due would have run by now
    assert jobs_of(gateway) == [failed]

    with gateway.rest() as rest:
        retried = rest.post(path)
    assert retried.status_code == 200, retried.text
    body = retried.json()
    assert {k: body[k] for k in ("id", "kind", "status", "attempts", "last_error", "subject_id")} == {
        k: failed[k] for k in ("id", "kind", "status", "attempts", "last_error", "subject_id")}
    assert body["due_at"] <= time.time()
    # It ran again at once (and failed again: the provider still refuses), so it waits once more. The
    # second claim shows attempts 2 while the run is still under way (leased: due when the lease
    # ends, minutes away); only its failure puts it an hour out again.
    def ran_and_failed_again() -> bool:
        return [(j["attempts"], j["due_at"] > time.time() + HOUR - 60) for j in jobs_of(gateway)] == [(2, True)]

    assert wait_until(ran_and_failed_again, timeout=20), jobs_of(gateway)
    [after] = jobs_of(gateway)
    assert after["status"] == "failed" and after["last_error"]


def test_a_running_job_is_refused_with_409_and_still_finishes(start_gateway, storage):
    # Each extraction takes 3 s: the job is held by the worker (leased) meanwhile.
    gateway = start_gateway(storage, learning={"extractor": {"provider": "litellm", "model": "extractor-sleep-3"}})
    learn_turn(gateway, "busy-subject")
    assert wait_until(lambda: [j["attempts"] for j in jobs_of(gateway)] == [1], timeout=10), jobs_of(gateway)
    [running] = jobs_of(gateway)
    with gateway.rest() as rest:
        answer = rest.post(f"/jobs/{running['id']}/retry")
    assert (answer.status_code, answer.json()["error"]) == (409, "job_running"), answer.text
    assert "running" in answer.json()["message"]
    # The worker's lease was left alone: its run completes the job.
    assert wait_until(lambda: jobs_of(gateway) == [], timeout=15), jobs_of(gateway)
    with gateway.rest() as rest:
        learned = rest.get("/memories", params={"subject_id": "busy-subject"}).json()["data"]
    assert learned, "the running job's work was lost"
