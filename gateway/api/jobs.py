"""``/jobs``: a project's unfinished background jobs (learning), with attempts and last error,
and ``POST /jobs/{job_id}/retry`` to run a waiting one now.

Not in the Mnexium contract: a self-hosted gateway has to show what is queued and
what keeps failing, since failing jobs are retried, never dropped. An operator who fixed
the cause (a provider key, a model name) should not have to wait out an hour's backoff.
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.errors import Conflict, NotFound
from gateway.jobs.queue import JobLeased
from gateway.routing import Call, endpoint
from gateway.validation import Query

# Job ids are "job_" and an ordered id; anything much longer names no job (and is no store key).
_MAX_JOB_ID_LENGTH = 100


async def list_jobs(call: Call) -> Response:
    limit = Query(call.request).integer("limit", default=100, minimum=1, maximum=1000)
    jobs = await call.services.jobs.unfinished(call.project_id, limit)
    return JSONResponse({"data": [job.to_api() for job in jobs], "count": len(jobs)})


async def retry_job(call: Call) -> Response:
    """Make a waiting job due now and wake this gateway's worker; the job keeps its attempts
    (the run it triggers counts one more) and its last error until that run ends."""
    job_id = call.request.path_params["job_id"]
    # Another project's job is answered like a missing one: ids must not tell what exists elsewhere.
    not_found = NotFound(f"no job {job_id[:_MAX_JOB_ID_LENGTH]!r} in this project", code="not_found")
    if len(job_id) > _MAX_JOB_ID_LENGTH:
        raise not_found
    try:
        job = await call.services.jobs.retry_now(call.project_id, job_id)
    except JobLeased:
        raise Conflict(f"job {job_id!r} is running now (a worker holds it); it cannot be retried until that "
                       "run ends", code="job_running") from None
    if job is None:
        raise not_found
    call.services.worker.wake()
    return JSONResponse(job.to_api())


# Relative to the /api/v1 mount.
routes = [
    Route("/jobs", endpoint(list_jobs, scope="jobs:read"), methods=["GET"]),
    Route("/jobs/{job_id}/retry", endpoint(retry_job, scope="jobs:write"), methods=["POST"]),
]
