"""``/integrations`` (contract §16): definitions, pulls (``test``, ``sync``) and signed webhooks.

The webhook route takes the project key like every route (the mnexium SDK sends it) *and*
the integration's HMAC signature; see gateway/integrations/webhook.py.
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.integrations.definitions import to_api
from gateway.routing import Call, endpoint
from gateway.validation import Query, read_body, read_json_object


async def list_integrations(call: Call) -> Response:
    integrations = await call.services.integrations.in_project(
        call.project_id, include_inactive=Query(call.request).flag("include_inactive", default=False))
    # The docs read "data", the SDK "integrations" (or "data"): both, the same list.
    return JSONResponse({"data": integrations, "integrations": integrations})


async def create_integration(call: Call) -> Response:
    body = await read_json_object(call.request, call.services.config.server.max_body_bytes)
    integration = await call.services.integrations.create(call.project_id, body)
    return JSONResponse({"ok": True, "integration": integration})


async def get_integration(call: Call) -> Response:
    integration = await call.services.integrations.get(call.project_id, _id(call))
    return JSONResponse({"integration": to_api(integration)})


async def update_integration(call: Call) -> Response:
    body = await read_json_object(call.request, call.services.config.server.max_body_bytes)
    integration = await call.services.integrations.update(call.project_id, _id(call), body)
    return JSONResponse({"ok": True, "integration": integration})


async def delete_integration(call: Call) -> Response:
    integration = await call.services.integrations.delete(call.project_id, _id(call))
    return JSONResponse({"ok": True, "deleted": True, "integration": integration})


async def test_integration(call: Call) -> Response:
    body = await read_json_object(call.request, call.services.config.server.max_body_bytes, allow_empty=True)
    result = await call.services.integrations.run(call.project_id, _id(call), body, write_cache=False)
    return JSONResponse({"ok": True, "result": result})


async def sync_integration(call: Call) -> Response:
    body = await read_json_object(call.request, call.services.config.server.max_body_bytes, allow_empty=True)
    result = await call.services.integrations.run(call.project_id, _id(call), body, write_cache=True)
    return JSONResponse({"ok": True, "result": result})


async def integration_webhook(call: Call) -> Response:
    # The body exactly as sent: its signature covers these bytes.
    raw = await read_body(call.request, call.services.config.server.max_body_bytes)
    answer = await call.services.integrations.receive(call.project_id, _id(call), call.request.headers, raw)
    return JSONResponse(answer)


def _id(call: Call) -> str:
    return str(call.request.path_params["integration_id"])


# Relative to the /api/v1 mount.
routes = [
    Route("/integrations", endpoint(list_integrations, scope="integrations:read"), methods=["GET"]),
    Route("/integrations", endpoint(create_integration, scope="integrations:write"), methods=["POST"]),
    Route("/integrations/{integration_id}", endpoint(get_integration, scope="integrations:read"), methods=["GET"]),
    Route("/integrations/{integration_id}", endpoint(update_integration, scope="integrations:write"),
          methods=["PATCH"]),
    # DELETE: the contract's integrations:write, or the gateway's <resource>:delete.
    Route("/integrations/{integration_id}",
          endpoint(delete_integration, scope=("integrations:write", "integrations:delete")), methods=["DELETE"]),
    Route("/integrations/{integration_id}/test", endpoint(test_integration, scope="integrations:write"),
          methods=["POST"]),
    Route("/integrations/{integration_id}/sync", endpoint(sync_integration, scope="integrations:write"),
          methods=["POST"]),
    Route("/integrations/{integration_id}/webhook", endpoint(integration_webhook, scope="integrations:write"),
          methods=["POST"]),
]
