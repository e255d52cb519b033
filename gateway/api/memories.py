"""``/memories`` (contract §6, seed 002)."""

from __future__ import annotations

import time
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.api.memory_bodies import memory_edit, new_memory
from gateway.errors import BadRequest
from gateway.memory.memories import SearchHit, to_api
from gateway.memory.scoring import weight_parts
from gateway.routing import Call, endpoint
from gateway.validation import Query, read_json_object

MAX_PAGE = 200


def _embedding_key(call: Call) -> str | None:
    """The caller's own key for a pay-per-call embedding model, when one is configured."""
    embedder = call.services.memories.embedder
    return embedder.key_for(call.credentials.provider_keys) if embedder is not None else None


def _subject(query: Query) -> str:
    subject_id = query.string("subject_id", required=True)
    assert subject_id is not None
    return subject_id


async def list_memories(call: Call) -> Response:
    query = Query(call.request)
    await call.services.recall_log.flush()  # recall counts of turns answered a moment ago
    docs = await call.services.memories.page_for_subject(
        call.project_id, _subject(query), limit=query.integer("limit", default=50, minimum=1, maximum=MAX_PAGE),
        offset=query.integer("offset", default=0, minimum=0, maximum=10**9),
        include_superseded=query.flag("include_superseded", default=False),
        include_deleted=query.flag("include_deleted", default=False))
    return JSONResponse({"data": [to_api(d) for d in docs], "count": len(docs)})


async def create_memory(call: Call) -> Response:
    body = await read_json_object(call.request, call.services.config.server.max_body_bytes)
    result, created = await call.services.memories.create(call.project_id, new_memory(body),
                                                          api_key=_embedding_key(call))
    return JSONResponse(result, status_code=201 if created else 200)


async def get_memory(call: Call) -> Response:
    await call.services.recall_log.flush()  # recall counts of turns answered a moment ago
    doc = await call.services.memories.get(call.project_id, call.request.path_params["memory_id"])
    return JSONResponse({"data": to_api(doc)})


async def update_memory(call: Call) -> Response:
    memory_id = call.request.path_params["memory_id"]
    body = await read_json_object(call.request, call.services.config.server.max_body_bytes)
    await call.services.memories.update(call.project_id, memory_id, memory_edit(body), api_key=_embedding_key(call))
    return JSONResponse({"id": memory_id, "updated": True})


async def delete_memory(call: Call) -> Response:
    deleted = await call.services.memories.delete(call.project_id, call.request.path_params["memory_id"])
    return JSONResponse({"ok": True, "deleted": deleted})


# The Mnexium engine's default (30 on its 0-100 scale).
DEFAULT_MIN_SCORE = 0.3


def _min_score(query: Query) -> float:
    """min_score (alias distance) on either scale: a value above 1 is a percentage."""
    raw = query.string("min_score") or query.string("distance")
    if raw is None:
        return DEFAULT_MIN_SCORE
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest("min_score must be a number", code="invalid_min_score", param="min_score") from None
    if not 0 <= value <= 100:
        raise BadRequest("min_score must be between 0 and 1 (or 0 and 100)", code="invalid_min_score",
                         param="min_score")
    return value / 100 if value > 1 else value


async def search_memories(call: Call) -> Response:
    query = Query(call.request)
    subject_id = _subject(query)
    q = query.string("q", required=True)
    assert q is not None
    hits = await call.services.memories.search(
        call.project_id, subject_id, q, limit=query.integer("limit", default=25, minimum=1, maximum=MAX_PAGE),
        min_score=_min_score(query), context=call.request.query_params.getlist("context"),
        api_key=_embedding_key(call))
    engine = "hybrid" if call.services.memories.embedder is not None else "bm25"
    data = [h.to_api() for h in hits]
    if query.flag("explain", default=False):
        for row, hit in zip(data, hits):
            row["effective_score_parts"] = _score_parts(call, hit)
    return JSONResponse({"data": data, "query": q, "count": len(hits), "engine": engine, "mode": "simple"})


def _score_parts(call: Call, hit: SearchHit) -> dict[str, float]:
    """``effective_score`` = ``relevance`` (the hit's match next to the best hit's) x ``weight`` (the
    memory's own standing: importance, confidence, reinforcement by recalls, freshness), each 0-1
    (gateway/memory/ranking.py, gateway/memory/scoring.py)."""
    parts = weight_parts(hit.fields, time.time(), call.services.config.memory.recall)
    return {"relevance": round(hit.relevance, 4), **{name: round(value, 4) for name, value in parts.items()}}


async def list_superseded(call: Call) -> Response:
    query = Query(call.request)
    await call.services.recall_log.flush()  # recall counts of turns answered a moment ago
    docs = await call.services.memories.superseded(
        call.project_id, _subject(query), limit=query.integer("limit", default=50, minimum=1, maximum=MAX_PAGE),
        offset=query.integer("offset", default=0, minimum=0, maximum=10**9))
    answer: dict[str, Any] = {"data": [to_api(d) for d in docs], "count": len(docs)}
    if query.flag("include_successors", default=False):
        answer["successors"] = await _successors(call, docs)
    return JSONResponse(answer)


async def _successors(call: Call, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The memories that replaced ``docs`` and are not among them (a timeline shows each chain up
    to the memory in use): read here, beside the page, rather than by one request each."""
    listed = {doc["id"] for doc in docs}
    wanted = dict.fromkeys(doc["superseded_by"] for doc in docs
                           if doc.get("superseded_by") and doc["superseded_by"] not in listed)
    # One deleted since, or erased, is left out: the chain ends at what is left.
    return [to_api(doc) for doc in await call.services.memories.get_many(call.project_id, list(wanted))]


async def restore_memory(call: Call) -> Response:
    doc, restored = await call.services.memories.restore(call.project_id, call.request.path_params["memory_id"])
    if not restored:
        return JSONResponse({"ok": True, "restored": False, "message": "Memory is already active"})
    return JSONResponse({"ok": True, "restored": True, "id": doc["id"], "subject_id": doc["subject_id"],
                         "text": doc["text"]})


async def list_recalls(call: Call) -> Response:
    query = Query(call.request)
    chat_id, memory_id = query.string("chat_id"), query.string("memory_id")
    limit = query.integer("limit", default=100, minimum=1, maximum=1000)
    recalls = call.services.recalls
    await call.services.recall_log.flush()  # the events of turns answered a moment ago
    if chat_id:
        events = await recalls.for_chat(call.project_id, chat_id, limit)
        return JSONResponse({"data": events, "count": len(events), "chat_id": chat_id})
    if not memory_id:
        raise BadRequest("give chat_id or memory_id", code="missing_parameter")
    if query.flag("stats", default=False):
        return JSONResponse({"memory_id": memory_id, "stats": await recalls.stats(call.project_id, memory_id)})
    events = await recalls.for_memory(call.project_id, memory_id, limit)
    return JSONResponse({"data": events, "count": len(events), "memory_id": memory_id})


async def memory_claims(call: Call) -> Response:
    rows = await call.services.memories.claims(call.project_id, call.request.path_params["memory_id"])
    # The contract's assertion fields, and the claim each asserts (none for a memory stored
    # before the truth graph).
    data = [{**{k: row[k] for k in ("id", "predicate", "type", "value", "confidence", "status", "first_seen_at",
                                    "last_seen_at")}, "claim_id": row.get("claim_id"), "slot": row.get("slot")}
            for row in rows]
    return JSONResponse({"data": data, "count": len(data)})


# Relative to the /api/v1 mount. Fixed paths before /memories/{memory_id}, so "search" is never taken for an id.
routes = [
    Route("/memories", endpoint(list_memories, scope="memories:read"), methods=["GET"]),
    Route("/memories", endpoint(create_memory, scope="memories:write"), methods=["POST"]),
    Route("/memories/search", endpoint(search_memories, scope="memories:search"), methods=["GET"]),
    Route("/memories/superseded", endpoint(list_superseded, scope="memories:read"), methods=["GET"]),
    Route("/memories/recalls", endpoint(list_recalls, scope="memories:read"), methods=["GET"]),
    Route("/memories/{memory_id}", endpoint(get_memory, scope="memories:read"), methods=["GET"]),
    Route("/memories/{memory_id}", endpoint(update_memory, scope="memories:write"), methods=["PATCH"]),
    Route("/memories/{memory_id}", endpoint(delete_memory, scope="memories:delete"), methods=["DELETE"]),
    Route("/memories/{memory_id}/restore", endpoint(restore_memory, scope="memories:write"), methods=["POST"]),
    Route("/memories/{memory_id}/claims", endpoint(memory_claims, scope="memories:read"), methods=["GET"]),
]
