"""``/profiles`` (contract §8): read, edit and delete a subject's profile fields, and the schema.

A PATCH is checked in full before anything is written: one bad update (a time zone that is
no IANA name, an email that is none, an object as a value, a field named twice) is a 400
naming it, and none of the request's updates is applied.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.errors import BadRequest
from gateway.options import MAX_ID_LENGTH
from gateway.profiles import MAX_UPDATES, FieldUpdate, InvalidFieldKey, InvalidProfileValue
from gateway.routing import Call, endpoint
from gateway.validation import Body, Query, read_json_object

FORMATS = ("simple", "full")


def _subject(query: Query) -> str:
    subject_id = query.string("subject_id", required=True)
    if len(subject_id) > MAX_ID_LENGTH:
        raise BadRequest(f"subject_id must be at most {MAX_ID_LENGTH} characters", code="invalid_subject_id",
                         param="subject_id")
    return subject_id


async def get_profile(call: Call) -> Response:
    query = Query(call.request)
    subject_id = _subject(query)
    shape = query.string("format") or "simple"
    if shape not in FORMATS:
        raise BadRequest("format must be simple or full", code="invalid_format", param="format")
    include_history = query.flag("include_history", default=False)
    if include_history and shape != "full":
        raise BadRequest("include_history needs format=full", code="invalid_format", param="include_history")
    profiles = call.services.profiles
    if shape == "simple":
        data = await profiles.simple(call.project_id, subject_id)
    else:
        data = await profiles.full(call.project_id, subject_id, include_history=include_history)
    return JSONResponse({"data": data})


def _updates(call: Call, raw: Any) -> list[FieldUpdate]:
    """Every update of the body, checked against the project's schema (the first bad one is the 400)."""
    if raw is None:
        raise BadRequest("updates is required: an array of {field_key, value, confidence?}", code="updates_required",
                         param="updates")
    if not isinstance(raw, list):
        raise BadRequest("updates must be an array of {field_key, value, confidence?}", code="invalid_updates",
                         param="updates")
    if len(raw) > MAX_UPDATES:
        raise BadRequest(f"updates holds at most {MAX_UPDATES} fields", code="invalid_updates", param="updates",
                         max=MAX_UPDATES)
    checked: list[FieldUpdate] = []
    for position, item in enumerate(raw):
        where = f"updates[{position}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object {{field_key, value, confidence?}}", code="invalid_updates",
                             param=where)
        confidence = Body(item, prefix=f"{where}.", code="invalid_updates").number("confidence", minimum=0,
                                                                                   maximum=1)
        try:
            checked.append(call.services.profiles.checked(call.project_id, item.get("field_key"), item.get("value"),
                                                          1.0 if confidence is None else confidence))
        except InvalidFieldKey as error:
            raise BadRequest(f"{where}: {error.message}", code="invalid_field_key", param=f"{where}.field_key",
                             field_key=error.field_key) from None
        except InvalidProfileValue as error:
            raise BadRequest(f"{where}: {error.message}", code="invalid_profile_value", param=f"{where}.value",
                             field_key=error.field_key) from None
        key = checked[-1].field_key
        if key in (update.field_key for update in checked[:-1]):
            # Which of two values the caller meant is not ours to guess.
            raise BadRequest(f"{where}: field_key {key!r} appears more than once; send one update per field",
                             code="duplicate_field_key", param=f"{where}.field_key", field_key=key)
    return checked


async def update_profile(call: Call) -> Response:
    raw = await read_json_object(call.request, call.services.config.server.max_body_bytes)
    body = Body(raw)
    subject_id = body.identifier("subject_id", max_length=MAX_ID_LENGTH)
    if subject_id is None:
        raise BadRequest("subject_id is required", code="subject_id_required", param="subject_id")
    updates = _updates(call, raw.get("updates"))
    try:
        results = await call.services.profiles.update(call.project_id, subject_id, updates)
    except InvalidProfileValue as error:  # the subject's field count is at its bound
        raise BadRequest(error.message, code="too_many_fields", param="updates") from None
    return JSONResponse({"data": {"subject_id": subject_id, "results": results}})


async def delete_profile_field(call: Call) -> Response:
    query = Query(call.request)
    subject_id = _subject(query)
    field_key = query.string("field_key", required=True)
    deleted = await call.services.profiles.delete_field(call.project_id, subject_id, field_key)
    return JSONResponse({"ok": True, "deleted": deleted, "subject_id": subject_id, "field_key": field_key})


async def profile_schema(call: Call) -> Response:
    return JSONResponse({"fields": [field.to_api() for field in call.services.profiles.schema(call.project_id)]})


# Relative to the /api/v1 mount. Deleting a field takes profiles:write (the contract's one write
# scope) or profiles:delete (the gateway's <resource>:delete convention).
routes = [
    Route("/profiles", endpoint(get_profile, scope="profiles:read"), methods=["GET"]),
    Route("/profiles", endpoint(update_profile, scope="profiles:write"), methods=["PATCH"]),
    Route("/profiles", endpoint(delete_profile_field, scope=("profiles:write", "profiles:delete")),
          methods=["DELETE"]),
    Route("/profiles/schema", endpoint(profile_schema, scope="profiles:read"), methods=["GET"]),
]
