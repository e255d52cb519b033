"""``/memory/policies`` (seed 001, contract §12.1)."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.memory_policies import combine, to_api
from gateway.routing import Call, endpoint
from gateway.validation import Query, read_json_object


async def list_policies(call: Call) -> Response:
    query = Query(call.request)
    policies = await call.services.policies.in_project(call.project_id, scope=query.string("scope"),
                                                 include_inactive=query.flag("include_inactive", default=False))
    return JSONResponse({"policies": [to_api(p) for p in policies]})


async def create_policy(call: Call) -> Response:
    body = await read_json_object(call.request, call.services.config.server.max_body_bytes)
    policy = await call.services.policies.create(call.project_id, body)
    return JSONResponse({"ok": True, "id": policy["id"], "policy": to_api(policy)}, status_code=201)


async def get_policy(call: Call) -> Response:
    policy = await call.services.policies.get(call.project_id, call.request.path_params["policy_id"])
    return JSONResponse({"policy": to_api(policy)})


async def update_policy(call: Call) -> Response:
    body = await read_json_object(call.request, call.services.config.server.max_body_bytes)
    policy = await call.services.policies.update(call.project_id, call.request.path_params["policy_id"], body)
    return JSONResponse({"ok": True, "id": policy["id"], "projectId": call.project_id, "updated": True,
                         "policy": to_api(policy)})


async def delete_policy(call: Call) -> Response:
    deleted = await call.services.policies.deactivate(call.project_id, call.request.path_params["policy_id"])
    return JSONResponse({"ok": True, "deleted": deleted})


async def resolve_policies(call: Call) -> Response:
    query = Query(call.request)
    policies = await call.services.policies.resolve(
        call.project_id, query.string("subject_id"), query.string("chat_id"),
        default_only=query.flag("default_only", default=False))
    if query.flag("combined", default=False):
        return JSONResponse(combine(policies))
    return JSONResponse({"policies": [to_api(p) for p in policies], "count": len(policies)})


# Relative to the /api/v1 mount. /resolve before /{policy_id}, so "resolve" is never taken for an id.
routes = [
    Route("/memory/policies", endpoint(list_policies, scope="memory_policies:read"), methods=["GET"]),
    Route("/memory/policies", endpoint(create_policy, scope="memory_policies:write"), methods=["POST"]),
    Route("/memory/policies/resolve", endpoint(resolve_policies, scope="memory_policies:read"), methods=["GET"]),
    Route("/memory/policies/{policy_id}", endpoint(get_policy, scope="memory_policies:read"), methods=["GET"]),
    Route("/memory/policies/{policy_id}", endpoint(update_policy, scope="memory_policies:write"),
          methods=["PATCH"]),
    Route("/memory/policies/{policy_id}", endpoint(delete_policy, scope="memory_policies:delete"),
          methods=["DELETE"]),
]
