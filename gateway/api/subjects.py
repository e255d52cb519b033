"""``DELETE /subjects/{subject_id}``: erase everything stored about one subject of a project.

Not part of the Mnexium contract: a self-hosted gateway has to answer right-to-erasure
requests, and one call that removes memories, their vectors and claims, recall
events, chat history and agent state is the only way to be sure nothing is left.
Unlike DELETE /memories/{id} this is not a soft delete.
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response

from gateway.routing import Call


async def erase_subject(call: Call) -> Response:
    subject_id = call.request.path_params["subject_id"]
    services, project_id = call.services, call.project_id
    erased = await services.memories.erase_subject(project_id, subject_id)
    erased["recall_events"] = await services.recalls.delete_subject(project_id, subject_id)
    erased["messages"] = await services.history.delete_subject(project_id, subject_id)
    erased["state_keys"] = await services.state.delete_subject(project_id, subject_id)
    erased["prompts"] = await services.prompts.delete_subject_scoped(project_id, subject_id)
    erased["memory_policies"] = await services.policies.delete_subject_scoped(project_id, subject_id)
    return JSONResponse({"ok": True, "subject_id": subject_id, "erased": erased})
