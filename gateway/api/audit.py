"""``GET /audit/requests`` (contract §15): the audit log of proxied turns (gateway/audit_log.py)."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.audit_log import DIRECTIONS, REQUEST_TYPES
from gateway.routing import Call, endpoint
from gateway.validation import Query, invalid


def _one_of(query: Query, name: str, allowed: tuple[str, ...]) -> str | None:
    value = query.string(name)
    if value is not None and value not in allowed:
        raise invalid(name, " or ".join(allowed))
    return value


async def list_records(call: Call) -> Response:
    query = Query(call.request)
    rows = await call.services.audit.list(
        call.project_id, audit_id=query.string("audit_id"), subject_id=query.string("subject_id"),
        chat_id=query.string("chat_id"), direction=_one_of(query, "direction", DIRECTIONS),
        request_type=_one_of(query, "request_type", REQUEST_TYPES),
        limit=query.integer("limit", default=100, minimum=1, maximum=1000),
        offset=query.integer("offset", default=0, minimum=0, maximum=1_000_000))
    # "count": the rows of this page (as the history reads count theirs); a full count would
    # read every record of the project.
    return JSONResponse({"data": rows, "count": len(rows), "enabled": call.services.audit.config.enabled})


# Relative to the /api/v1 mount.
routes = [
    Route("/audit/requests", endpoint(list_records, scope="audit:read"), methods=["GET"]),
]
