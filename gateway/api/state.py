"""``/state/{key}`` (contract §9), and ``GET /state``: the subject's keys, without their values.
The subject travels in the X-Subject-ID header only."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.errors import BadRequest, NotFound
from gateway.options import MAX_ID_LENGTH
from gateway.routing import Call, endpoint
from gateway.state import MAX_KEY_LENGTH, MAX_TTL_SECONDS, to_api, to_listing
from gateway.validation import Body, Query, read_json_object


def _subject(call: Call) -> str:
    subject_id = (call.request.headers.get("x-subject-id") or "").strip()
    if not subject_id:
        raise BadRequest("the X-Subject-ID header is required", code="missing_subject_id")
    if len(subject_id) > MAX_ID_LENGTH:
        raise BadRequest(f"X-Subject-ID must be at most {MAX_ID_LENGTH} characters", code="invalid_subject_id")
    return subject_id


def _subject_and_key(call: Call) -> tuple[str, str]:
    subject_id = _subject(call)
    key = call.request.path_params["key"]
    if not key.strip():
        raise BadRequest("a state key is required: /state/{key}", code="invalid_key")
    if len(key) > MAX_KEY_LENGTH:
        raise BadRequest(f"state keys are at most {MAX_KEY_LENGTH} characters", code="invalid_key")
    return subject_id, key


async def list_state(call: Call) -> Response:
    subject_id = _subject(call)
    limit = Query(call.request).integer("limit", default=100, minimum=1, maximum=1000)
    docs = await call.services.state.list_keys(call.project_id, subject_id, limit)
    return JSONResponse({"data": [to_listing(doc) for doc in docs], "count": len(docs)})


async def put_state(call: Call) -> Response:
    subject_id, key = _subject_and_key(call)
    raw = await read_json_object(call.request, call.services.config.server.max_body_bytes)
    if "value" not in raw:
        raise BadRequest("value is required (it may be null)", code="value_required", param="value")
    ttl = Body(raw).integer("ttl_seconds", default=None, minimum=1, maximum=MAX_TTL_SECONDS)
    doc = await call.services.state.put(call.project_id, subject_id, key, raw["value"], ttl)
    return JSONResponse({"ok": True, "key": key, "ttl": doc["expires_at"], "updated_at": doc["updated_at"]})


async def get_state(call: Call) -> Response:
    subject_id, key = _subject_and_key(call)
    doc = await call.services.state.get(call.project_id, subject_id, key)
    if doc is None:
        raise NotFound(f"no state {key!r} for this subject", code="not_found")
    return JSONResponse(to_api(doc))


async def delete_state(call: Call) -> Response:
    subject_id, key = _subject_and_key(call)
    deleted = await call.services.state.delete(call.project_id, subject_id, key)
    return JSONResponse({"ok": True, "deleted": deleted})


# Relative to the /api/v1 mount. The key is the rest of the path, slashes included.
routes = [
    Route("/state", endpoint(list_state, scope="state:read"), methods=["GET"]),
    Route("/state/{key:path}", endpoint(get_state, scope="state:read"), methods=["GET"]),
    Route("/state/{key:path}", endpoint(put_state, scope="state:write"), methods=["PUT"]),
    Route("/state/{key:path}", endpoint(delete_state, scope="state:delete"), methods=["DELETE"]),
]
