"""``/claims`` (contract §7): assert and retract claims, read a subject's truths and their history.

The store is the truth graph (gateway/memory/truth_graph.py); assertions and retractions go
through ``Memories`` so that claims and memory versioning stay in agreement. Reads take
``memories:read`` (the contract's scope for claims), writes ``memories:write`` (the
contract's inference for claim writes, §1).

``POST /claims`` takes both of the mnexium SDK's bodies: ``{predicate, object_value,
source_type}`` (``subject.claims.set``) and ``{slot, value, source}`` (``claims.create``),
where ``slot`` then names the predicate and the slot follows the usual rule. Non-string
values are stored JSON-encoded; nulls count as absent.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import orjson
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.json_body import json_body
from gateway.errors import BadRequest, NotFound
from gateway.memory.truth_graph import DEFAULT_RETRACT_REASON, ClaimDoc, NewClaim, truth_row
from gateway.options import MAX_ID_LENGTH
from gateway.routing import Call, endpoint
from gateway.validation import Body, Query, addressable_id, read_json_object

MAX_PREDICATE = 100
MAX_SLOT = 200
MAX_VALUE = 2000
MAX_CLAIM_ID = 200
MAX_LABEL = 100  # claim_type, subject_entity, source_type, each tag
MAX_TAGS = 50
MAX_REASON = 500
MAX_SOURCE_TEXT = 10_000
# "subject" is the next path segment of the /claims/subject/... routes, never a claim's id.
_RESERVED_IDS = ("subject",)


# --- reading the body of POST /claims ------------------------------------------------------


def _text(body: Body, name: str, max_length: int) -> str | None:
    """An optional string field, stripped, printable, at most ``max_length``; "" counts as absent."""
    value = body.string(name, max_length=max_length, strip=True)
    if not value:
        return None
    if not value.isprintable():
        raise body.invalid(name, "printable text without control characters")
    return value


def _object_value(body: Body) -> str:
    """object_value (or value, the first of the two not empty), a string as given, anything
    else JSON-encoded."""
    name, value = "object_value", ""
    for name in ("object_value", "value"):
        raw = body.value(name)
        value = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False) if raw is not None else ""
        if value.strip():
            break
    else:
        raise BadRequest("object_value is required", code="object_value_required", param="object_value")
    if len(value) > MAX_VALUE:
        raise BadRequest(f"object_value must be at most {MAX_VALUE} characters", code="object_value_too_long",
                         param=name, max=MAX_VALUE)
    return value


def _moment(body: Body, name: str) -> str | None:
    """An ISO 8601 date or time, as given."""
    value = _text(body, name, 64)
    if value is not None:
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise body.invalid(name, "an ISO 8601 date or time") from None
    return value


def _tags(body: Body) -> tuple[str, ...]:
    tags = body.strings("tags") or []
    if len(tags) > MAX_TAGS or any(len(tag) > MAX_LABEL for tag in tags):
        raise body.invalid("tags", f"at most {MAX_TAGS} strings of at most {MAX_LABEL} characters")
    return tuple(tags)


def _claim_id(body: Body) -> str | None:
    """The client's claim id, readable back at ``/claims/{id}`` (validation.addressable_id)."""
    try:
        return addressable_id(body.string("claim_id"), MAX_CLAIM_ID, _RESERVED_IDS)
    except BadRequest as error:
        raise BadRequest(error.message.replace("id must", "claim_id must", 1), code="invalid_claim_id",
                         param="claim_id") from None


def new_claim(data: dict[str, Any]) -> NewClaim:
    """The claim a body asks for; a 400 names the first bad field, the contract's three first."""
    body = Body(data)
    subject_id = body.string("subject_id", required=True, max_length=MAX_ID_LENGTH, strip=True)
    if not subject_id.isprintable():
        raise body.invalid("subject_id", "printable text without control characters")
    predicate = _text(body, "predicate", MAX_PREDICATE)
    slot = _text(body, "slot", MAX_SLOT)
    if predicate is None:
        # claims.create() sends the predicate as "slot": the slot then follows the usual rule.
        predicate, slot = slot, None
        if predicate is not None and len(predicate) > MAX_PREDICATE:
            raise BadRequest(f"predicate must be at most {MAX_PREDICATE} characters", code="predicate_too_long",
                             param="slot", max=MAX_PREDICATE)
    if predicate is None:
        raise BadRequest("predicate is required", code="predicate_required", param="predicate")
    object_value = _object_value(body)
    confidence = body.number("confidence", minimum=0, maximum=1)
    importance = body.number("importance", minimum=0, maximum=1)
    return NewClaim(
        subject_id, predicate, object_value, slot=slot,
        claim_type=_text(body, "claim_type", MAX_LABEL),
        confidence=0.8 if confidence is None else confidence,
        importance=0.5 if importance is None else importance,
        tags=_tags(body),
        source_memory_id=_text(body, "source_memory_id", MAX_CLAIM_ID),
        source_observation_id=_text(body, "source_observation_id", MAX_CLAIM_ID),
        subject_entity=_text(body, "subject_entity", MAX_LABEL) or "self",
        valid_from=_moment(body, "valid_from"),
        valid_until=_moment(body, "valid_until"),
        source_type=_text(body, "source_type", MAX_LABEL) or _text(body, "source", MAX_LABEL) or "api",
        source_text=body.string("source_text", max_length=MAX_SOURCE_TEXT) or None,
        claim_id=_claim_id(body),
    )


# --- response shapes -------------------------------------------------------------------


def _row(stored: dict[str, Any], *, include_source: bool = True) -> dict[str, Any]:
    """A stored truth row (truth_graph.truth_row plus its subject) as the truth routes show it."""
    return {k: v for k, v in stored.items() if k != "subject_id" and (include_source or k != "source")}


def _assertion(row: dict[str, Any], claim: ClaimDoc) -> dict[str, Any]:
    """A statement of a claim (Mnexium's ClaimAssertion), with the claim's status now."""
    return {"assertion_id": row["id"], "project_id": row["project_id"], "subject_id": row["subject_id"],
            "claim_id": row["claim_id"], "memory_id": row["memory_id"], "observation_id": row["observation_id"],
            "predicate": row["predicate"], "object_type": row["type"], "value_string": row["value"],
            "confidence": row["confidence"], "status": claim["status"], "source_type": row["source_type"],
            "first_seen_at": row["first_seen_at"], "last_seen_at": row["last_seen_at"]}


def _subject(call: Call) -> str:
    subject_id = call.request.path_params["subject_id"]
    if len(subject_id) > MAX_ID_LENGTH or not subject_id.isprintable():
        raise BadRequest(f"subject_id must be at most {MAX_ID_LENGTH} printable characters",
                         code="invalid_subject_id", param="subject_id")
    return subject_id


# --- handlers --------------------------------------------------------------------------


async def create_claim(call: Call) -> Response:
    body = await read_json_object(call.request, call.services.config.server.max_body_bytes)
    asserted, superseded_memories = await call.services.memories.add_claim(call.project_id, new_claim(body))
    claim = asserted.claim
    result = {"claim_id": claim["claim_id"], "subject_id": claim["subject_id"], "predicate": claim["predicate"],
              "object_value": claim["object_value"], "slot": claim["slot"], "claim_type": claim["claim_type"],
              "confidence": claim["confidence"], "observation_id": claim["source_observation_id"],
              "linking_triggered": True, "status": claim["status"], "created": asserted.created,
              "superseded_claim_ids": [old["claim_id"] for old in asserted.superseded],
              "superseded_memory_ids": superseded_memories}
    if not asserted.created:
        # The slot's truth already had this value: one more assertion of that claim.
        result["duplicate_of"] = claim["claim_id"]
    return json_body(result, status_code=201 if asserted.created else 200)


async def get_claim(call: Call) -> Response:
    claim_id = call.request.path_params["claim_id"]
    truth = call.services.memories.truth
    claim = await truth.claim(call.project_id, claim_id)
    if claim is None:
        raise NotFound(f"no claim {claim_id}", code="claim_not_found", claim_id=claim_id)
    edges = await truth.edges(call.project_id, claim_id)
    assertions = [_assertion(row, claim) for row in await truth.assertions(call.project_id, claim_id)]
    return json_body({"claim": claim, "assertions": assertions, "edges": edges,
                      "supersession_chain": [edge for edge in edges if edge["edge_type"] == "supersedes"]})


async def retract_claim(call: Call) -> Response:
    body = Body(await read_json_object(call.request, call.services.config.server.max_body_bytes, allow_empty=True))
    reason = _text(body, "reason", MAX_REASON) or DEFAULT_RETRACT_REASON
    retracted, superseded, restored = await call.services.memories.retract_claim(
        call.project_id, call.request.path_params["claim_id"], reason)
    previous = retracted.restored
    return json_body({"success": True, "claim_id": retracted.claim["claim_id"], "slot": retracted.claim["slot"],
                      "previous_claim_id": previous["claim_id"] if previous is not None else None,
                      "restored_previous": previous is not None, "reason": reason,
                      "superseded_memory_ids": superseded, "restored_memory_ids": restored})


async def subject_truth(call: Call) -> Response:
    subject_id = _subject(call)
    include_source = Query(call.request).flag("include_source", default=True)
    truth = call.services.memories.truth
    if not include_source:
        rows = await truth.truth(call.project_id, subject_id)
        return json_body({"subject_id": subject_id, "project_id": call.project_id, "slot_count": len(rows),
                          "slots": [_row(row, include_source=False) for row in rows]})
    # The subject's snapshot, already JSON: spliced in as it is, never decoded and encoded again.
    count, slots = await truth.truth_json(call.project_id, subject_id)
    head = orjson.dumps({"subject_id": subject_id, "project_id": call.project_id, "slot_count": count})
    return Response(head[:-1] + b',"slots":' + slots.encode() + b"}", media_type="application/json")


async def subject_slot(call: Call) -> Response:
    subject_id, slot = _subject(call), call.request.path_params["slot"]
    truth = call.services.memories.truth
    # A slot longer than any stored one holds nothing: no need to look.
    row = await truth.slot(call.project_id, subject_id, slot) if len(slot) <= MAX_SLOT else None
    if row is None:
        raise NotFound(f"subject {subject_id} has no truth in slot {slot}", code="slot_not_found",
                       subject_id=subject_id, slot=slot)
    return json_body({"subject_id": subject_id, "project_id": call.project_id, **_row(row)})


async def subject_slots(call: Call) -> Response:
    subject_id = _subject(call)
    limit = Query(call.request).integer("limit", default=100, minimum=1, maximum=500)
    rows = await call.services.memories.truth.slots(call.project_id, subject_id, limit=limit)
    grouped: dict[str, list[dict[str, Any]]] = {"active": [], "superseded": [], "other": []}
    for claim, status in rows:
        grouped[status if status in ("active", "superseded") else "other"].append(
            {**truth_row(claim), "active_claim_id": claim["claim_id"] if status == "active" else None,
             "status": status})
    return json_body({"subject_id": subject_id, "total": len(rows), "active_count": len(grouped["active"]),
                      "slots": grouped})


async def subject_graph(call: Call) -> Response:
    subject_id = _subject(call)
    limit = Query(call.request).integer("limit", default=50, minimum=1, maximum=200)
    claims, edges = await call.services.memories.truth.graph(call.project_id, subject_id, limit=limit)
    by_type: dict[str, int] = {}
    for edge in edges:
        by_type[edge["edge_type"]] = by_type.get(edge["edge_type"], 0) + 1
    return json_body({"subject_id": subject_id, "claims_count": len(claims), "edges_count": len(edges),
                      "edges_by_type": by_type, "claims": claims, "edges": edges})


async def subject_history(call: Call) -> Response:
    subject_id = _subject(call)
    query = Query(call.request)
    slot = query.string("slot")
    limit = query.integer("limit", default=100, minimum=1, maximum=500)
    claims, edges = await call.services.memories.truth.history(call.project_id, subject_id, slot=slot, limit=limit)
    by_slot: dict[str, list[ClaimDoc]] = {}
    for claim in claims:
        by_slot.setdefault(claim["slot"], []).append(claim)
    # The core engine's shape, and the flat newest-first list the SDK's history() reads ("data").
    return json_body({"subject_id": subject_id, "project_id": call.project_id, "slot_filter": slot,
                      "by_slot": by_slot, "edges": edges, "total_claims": len(claims), "data": claims})


# Relative to the /api/v1 mount. "/claims/subject/..." has more segments than "/claims/{claim_id}",
# so no subject route is taken for a claim id.
routes = [
    Route("/claims", endpoint(create_claim, scope="memories:write"), methods=["POST"]),
    Route("/claims/subject/{subject_id}/truth", endpoint(subject_truth, scope="memories:read"), methods=["GET"]),
    Route("/claims/subject/{subject_id}/slot/{slot:path}", endpoint(subject_slot, scope="memories:read"),
          methods=["GET"]),
    Route("/claims/subject/{subject_id}/slots", endpoint(subject_slots, scope="memories:read"), methods=["GET"]),
    Route("/claims/subject/{subject_id}/graph", endpoint(subject_graph, scope="memories:read"), methods=["GET"]),
    Route("/claims/subject/{subject_id}/history", endpoint(subject_history, scope="memories:read"),
          methods=["GET"]),
    Route("/claims/{claim_id}", endpoint(get_claim, scope="memories:read"), methods=["GET"]),
    Route("/claims/{claim_id}/retract", endpoint(retract_claim, scope="memories:write"), methods=["POST"]),
]
