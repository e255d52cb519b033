"""``DELETE /subjects/{subject_id}``: erase everything stored about one subject of a project.

Not part of the Mnexium contract: a self-hosted gateway has to answer right-to-erasure
requests, and one call that removes memories, their vectors and claims, recall
events, chat history and agent state is the only way to be sure nothing is left.
Unlike DELETE /memories/{id} this is not a soft delete, and it is final: queued and
running work for the subject cannot write its data back (gateway.erasure).
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.routing import Call, endpoint


async def erase_subject(call: Call) -> Response:
    subject_id = call.request.path_params["subject_id"]
    erased = await call.services.erasure.erase(call.project_id, subject_id)
    return JSONResponse({"ok": True, "subject_id": subject_id, "erased": erased})


# Relative to the /api/v1 mount.
routes = [Route("/subjects/{subject_id}", endpoint(erase_subject, scope="subjects:delete"), methods=["DELETE"])]
