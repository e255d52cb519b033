"""``/records`` (contract §10): schemas, records, query and search.

Every body is read field by field before anything is stored: a bad field is a 400 naming
it (``data.<field>`` for a record's own fields), and nothing of the request is written.
The query language and what runs on indexes are in gateway/records/query.py and docs/records.md.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from gateway.api.json_body import json_body
from gateway.errors import BadRequest
from gateway.options import MAX_ID_LENGTH
from gateway.records.records import (MAX_COLLABORATORS, MAX_OFFSET, VISIBILITIES, NewRecord, Provenance, decode_cursor,
                                     encode_cursor, query_fingerprint)
from gateway.routing import Call, endpoint
from gateway.validation import Body, Query, read_json_object

MAX_PAGE = 250
MAX_SEARCH_RESULTS = 100
MAX_QUERY_TEXT = 2000
# Records one POST /records/{type}/batch inserts.
MAX_BATCH = 500
# "/records/schemas" is the schemas' own path: no type may take that name.
RESERVED_TYPE_NAMES = ("schemas",)


def _embedding_key(call: Call) -> str | None:
    """The caller's own key for a pay-per-call embedding model, when one is configured."""
    embedder = call.services.records.index.embedder
    return embedder.key_for(call.credentials.provider_keys) if embedder is not None else None


def _provenance(call: Call) -> Provenance:
    return Provenance("api", key_name=call.credentials.principal.key_name)


def _subject_id(value: Any, param: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"{param} must be a non-empty string of at most {MAX_ID_LENGTH} characters",
                         code="invalid_subject_id", param=param)
    return value


def _owner_from_body(body: dict[str, Any]) -> str | None:
    """owner_id, or subject_id as the legacy clients send it."""
    return _subject_id(body.get("owner_id"), "owner_id") or _subject_id(body.get("subject_id"), "subject_id")


def _owner_from_query(call: Call) -> str | None:
    query = Query(call.request)
    return (_subject_id(query.string("owner_id"), "owner_id") or _subject_id(query.string("subject_id"), "subject_id")
            or _subject_id(call.request.headers.get("x-subject-id"), "x-subject-id"))


def _type_name(call: Call) -> str:
    return str(call.request.path_params["type_name"])


def _record_id(call: Call) -> str:
    record_id = str(call.request.path_params["record_id"])
    if len(record_id) > MAX_ID_LENGTH:
        raise BadRequest(f"record_id must be at most {MAX_ID_LENGTH} characters", code="invalid_record_id",
                         param="record_id")
    return record_id


# --- schemas -------------------------------------------------------------------------------

async def define_schema(call: Call) -> Response:
    body = await read_json_object(call.request, call.services.config.server.max_body_bytes)
    if body.get("type_name") in RESERVED_TYPE_NAMES:
        raise BadRequest(f"'{body['type_name']}' is reserved", code="invalid_type_name", param="type_name")
    schema, created = await call.services.records.define_schema(call.project_id, body)
    return json_body(schema, status_code=201 if created else 200)


async def list_schemas(call: Call) -> Response:
    return json_body({"schemas": await call.services.records.schema_docs(call.project_id)})


async def get_schema(call: Call) -> Response:
    return json_body(await call.services.records.schema_doc(call.project_id, _type_name(call)))


# --- records -------------------------------------------------------------------------------

async def list_records(call: Call) -> Response:
    query = Query(call.request)
    limit = query.integer("limit", default=50, minimum=1, maximum=MAX_PAGE)
    offset = query.integer("offset", default=0, minimum=0, maximum=MAX_OFFSET)
    records, total = await call.services.records.page(call.project_id, _type_name(call),
                                                      owner_id=_owner_from_query(call), limit=limit, offset=offset)
    return json_body({"records": records, "data": records, "count": len(records), "total": total})


def _new_record(body: dict[str, Any], prefix: str = "") -> NewRecord:
    """One record to insert, as POST /records/{type} takes it (``prefix``: its place in a batch)."""
    read = Body(body, prefix=prefix)
    if "data" not in body or body["data"] is None:
        raise BadRequest("data is required: an object of the type's fields", code="data_required",
                         param=prefix + "data")
    collaborators = read.strings("collaborators") or []
    if len(collaborators) > MAX_COLLABORATORS:
        raise BadRequest(f"collaborators holds at most {MAX_COLLABORATORS} subject ids", code="invalid_collaborators",
                         param=prefix + "collaborators")
    for collaborator in collaborators:
        _subject_id(collaborator, prefix + "collaborators")
    owner_id = (_subject_id(body.get("owner_id"), prefix + "owner_id")
                or _subject_id(body.get("subject_id"), prefix + "subject_id"))
    return NewRecord(body["data"], owner_id=owner_id, visibility=read.choice("visibility", VISIBILITIES),
                     collaborators=collaborators)


async def insert_record(call: Call) -> Response:
    body = await read_json_object(call.request, call.services.config.server.max_body_bytes)
    record = await call.services.records.insert(call.project_id, _type_name(call), _new_record(body),
                                                provenance=_provenance(call), api_key=_embedding_key(call))
    return json_body(record, status_code=201)


async def insert_records(call: Call) -> Response:
    """Many records of one type in one call (imports): validated all first, stored all or none."""
    body = await read_json_object(call.request, call.services.config.server.max_body_bytes)
    items = body.get("records")
    if not isinstance(items, list) or not items or len(items) > MAX_BATCH:
        raise BadRequest(f"records must be an array of 1 to {MAX_BATCH} records ({{data, owner_id?, ...}})",
                         code="invalid_records", param="records", max=MAX_BATCH)
    news = []
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"records[{position}] must be an object", code="invalid_records",
                             param=f"records[{position}]")
        news.append(_new_record(item, prefix=f"records[{position}]."))
    records = await call.services.records.insert_many(call.project_id, _type_name(call), news,
                                                      provenance=_provenance(call), api_key=_embedding_key(call))
    return json_body({"records": records, "data": records, "count": len(records)}, status_code=201)


async def get_record(call: Call) -> Response:
    return json_body(await call.services.records.get(call.project_id, _type_name(call), _record_id(call)))


async def update_record(call: Call) -> Response:
    body = await read_json_object(call.request, call.services.config.server.max_body_bytes)
    if not isinstance(body.get("data"), dict):
        raise BadRequest("data is required: an object of the fields to change (null removes one)",
                         code="data_required", param="data")
    record = await call.services.records.update(call.project_id, _type_name(call), _record_id(call), body["data"],
                                                provenance=_provenance(call), api_key=_embedding_key(call))
    return json_body(record)


async def delete_record(call: Call) -> Response:
    record_id = _record_id(call)
    await call.services.records.delete(call.project_id, _type_name(call), record_id, provenance=_provenance(call))
    return json_body({"ok": True, "deleted": True, "record_id": record_id})


async def record_history(call: Call) -> Response:
    entries, dropped = await call.services.records.history(call.project_id, _type_name(call), _record_id(call))
    return json_body({"data": entries, "count": len(entries), "dropped": dropped})


# --- query and search ----------------------------------------------------------------------

async def query_records(call: Call) -> Response:
    body = await read_json_object(call.request, call.services.config.server.max_body_bytes, allow_empty=True)
    read = Body(body)
    limit = read.integer("limit", default=50, minimum=1, maximum=MAX_PAGE)
    assert limit is not None
    owner_id = _owner_from_body(body)
    type_name = _type_name(call)
    where, order_by = body.get("where"), body.get("order_by")
    fingerprint = query_fingerprint(type_name, where, order_by, owner_id)
    cursor = read.string("cursor")
    if cursor is not None and body.get("offset") is not None:
        raise BadRequest("give offset or cursor, not both", code="invalid_cursor", param="cursor")
    offset = decode_cursor(cursor, fingerprint) if cursor else read.integer("offset", default=0, minimum=0,
                                                                             maximum=MAX_OFFSET)
    assert offset is not None
    page = await call.services.records.query(call.project_id, type_name, where=where, order_by=order_by, limit=limit,
                                             offset=offset, owner_id=owner_id)
    next_cursor = encode_cursor(page.next_offset, fingerprint) if page.next_offset is not None else None
    return json_body({"records": page.records, "data": page.records, "count": len(page.records),
                      "next_cursor": next_cursor})


async def search_records(call: Call) -> Response:
    body = await read_json_object(call.request, call.services.config.server.max_body_bytes)
    read = Body(body)
    text = read.string("query", required=True)
    if not text.strip():
        raise BadRequest("query must hold some words", code="invalid_query", param="query")
    if len(text) > MAX_QUERY_TEXT:
        raise BadRequest(f"query must be at most {MAX_QUERY_TEXT} characters", code="invalid_query", param="query")
    limit = read.integer("limit", default=10, minimum=1, maximum=MAX_SEARCH_RESULTS)
    assert limit is not None
    hits = await call.services.records.search(call.project_id, _type_name(call), text, limit=limit,
                                              where=body.get("where"), owner_id=_owner_from_body(body),
                                              api_key=_embedding_key(call))
    found = [{**hit.record, "similarity": hit.similarity} for hit in hits]
    return json_body({"records": found, "data": found, "count": len(found)})


_READ = "records:read"
_WRITE = "records:write"

routes = [
    Route("/records/schemas", endpoint(define_schema, scope=_WRITE), methods=["POST"]),
    Route("/records/schemas", endpoint(list_schemas, scope=_READ), methods=["GET"]),
    Route("/records/schemas/{type_name}", endpoint(get_schema, scope=_READ), methods=["GET"]),
    Route("/records/{type_name}", endpoint(list_records, scope=_READ), methods=["GET"]),
    Route("/records/{type_name}", endpoint(insert_record, scope=_WRITE), methods=["POST"]),
    Route("/records/{type_name}/batch", endpoint(insert_records, scope=_WRITE), methods=["POST"]),
    Route("/records/{type_name}/query", endpoint(query_records, scope=_READ), methods=["POST"]),
    Route("/records/{type_name}/search", endpoint(search_records, scope=_READ), methods=["POST"]),
    Route("/records/{type_name}/{record_id}", endpoint(get_record, scope=_READ), methods=["GET"]),
    Route("/records/{type_name}/{record_id}", endpoint(update_record, scope=_WRITE), methods=["PUT"]),
    Route("/records/{type_name}/{record_id}", endpoint(delete_record, scope=(_WRITE, "records:delete")),
          methods=["DELETE"]),
    Route("/records/{type_name}/{record_id}/history", endpoint(record_history, scope=_READ), methods=["GET"]),
]
