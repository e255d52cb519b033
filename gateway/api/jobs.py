"""``GET /jobs``: a project's unfinished background jobs (learning), with attempts and last error.

Not in the Mnexium contract: a self-hosted gateway has to show what is queued and
what keeps failing, since failing jobs are retried, never dropped.
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.routing import Call, endpoint
from gateway.validation import Query


async def list_jobs(call: Call) -> Response:
    limit = Query(call.request).integer("limit", default=100, minimum=1, maximum=1000)
    jobs = await call.services.jobs.unfinished(call.project_id, limit)
    return JSONResponse({"data": [job.to_api() for job in jobs], "count": len(jobs)})


# Relative to the /api/v1 mount.
routes = [Route("/jobs", endpoint(list_jobs, scope="jobs:read"), methods=["GET"])]
