"""``/subjects``: list a project's subjects, and erase everything stored about one of them.

Not part of the Mnexium contract. ``DELETE /subjects/{subject_id}``: a self-hosted gateway has
to answer right-to-erasure requests, and one call that removes memories, their vectors and
claims, recall events, chat history and agent state is the only way to be sure nothing is left.
Unlike DELETE /memories/{id} this is not a soft delete, and it is final: queued and running
work for the subject cannot write its data back (gateway.erasure).

``GET /subjects``: the subjects active lately, with their counts, for browsing (the dashboard);
how they are found: gateway/subject_directory.py.
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.errors import BadRequest
from gateway.options import MAX_ID_LENGTH
from gateway.routing import Call, endpoint
from gateway.subject_directory import list_subjects
from gateway.validation import Query


async def erase_subject(call: Call) -> Response:
    subject_id = call.request.path_params["subject_id"]
    erased = await call.services.erasure.erase(call.project_id, subject_id)
    return JSONResponse({"ok": True, "subject_id": subject_id, "erased": erased})


async def browse_subjects(call: Call) -> Response:
    query = Query(call.request)
    search = (query.string("q") or "").strip()
    if len(search) > MAX_ID_LENGTH:  # the longest subject id there can be
        raise BadRequest(f"q must be at most {MAX_ID_LENGTH} characters", code="q_too_long", param="q")
    limit = query.integer("limit", default=50, minimum=1, maximum=200)
    subjects, complete = await list_subjects(call.services.store, call.project_id, search=search or None, limit=limit)
    return JSONResponse({"data": [s.to_api() for s in subjects], "count": len(subjects), "complete": complete})


# Relative to the /api/v1 mount.
routes = [
    Route("/subjects", endpoint(browse_subjects, scope="subjects:read"), methods=["GET"]),
    Route("/subjects/{subject_id}", endpoint(erase_subject, scope="subjects:delete"), methods=["DELETE"]),
]
