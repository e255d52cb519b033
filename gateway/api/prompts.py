"""``/prompts`` (contract §11)."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.prompts import combined_text
from gateway.routing import Call, endpoint
from gateway.validation import Query, read_json_object


async def list_prompts(call: Call) -> Response:
    scope = Query(call.request).string("scope")
    return JSONResponse({"prompts": await call.services.prompts.in_project(call.project_id, scope)})


async def create_prompt(call: Call) -> Response:
    body = await read_json_object(call.request, call.services.config.server.max_body_bytes)
    prompt, created = await call.services.prompts.create(call.project_id, body)
    return JSONResponse({"ok": True, "id": prompt["id"], "prompt": prompt}, status_code=201 if created else 200)


async def get_prompt(call: Call) -> Response:
    prompt = await call.services.prompts.get(call.project_id, call.request.path_params["prompt_id"])
    return JSONResponse({"prompt": prompt})


async def update_prompt(call: Call) -> Response:
    body = await read_json_object(call.request, call.services.config.server.max_body_bytes)
    prompt = await call.services.prompts.update(call.project_id, call.request.path_params["prompt_id"], body)
    return JSONResponse({"ok": True, "prompt": prompt})


async def delete_prompt(call: Call) -> Response:
    deleted = await call.services.prompts.delete(call.project_id, call.request.path_params["prompt_id"])
    return JSONResponse({"ok": True, "deleted": deleted})


async def resolve_prompts(call: Call) -> Response:
    query = Query(call.request)
    prompts = await call.services.prompts.resolve(
        call.project_id, query.string("subject_id"), query.string("chat_id"),
        default_only=query.flag("default_only", default=True))
    combined = query.flag("combined", default=False)
    body = {"prompt_text": combined_text(prompts), "count": len(prompts), "combined": combined}
    if not combined:
        body["prompts"] = prompts
    else:
        body["prompt_ids"] = [p["id"] for p in prompts]
    return JSONResponse(body)


# Relative to the /api/v1 mount. /prompts/resolve before /prompts/{prompt_id}, so "resolve" is never taken for an id.
routes = [
    Route("/prompts", endpoint(list_prompts, scope="prompts:read"), methods=["GET"]),
    Route("/prompts", endpoint(create_prompt, scope="prompts:write"), methods=["POST"]),
    Route("/prompts/resolve", endpoint(resolve_prompts, scope="prompts:read"), methods=["GET"]),
    Route("/prompts/{prompt_id}", endpoint(get_prompt, scope="prompts:read"), methods=["GET"]),
    Route("/prompts/{prompt_id}", endpoint(update_prompt, scope="prompts:write"), methods=["PATCH"]),
    Route("/prompts/{prompt_id}", endpoint(delete_prompt, scope="prompts:write"), methods=["DELETE"]),
]
