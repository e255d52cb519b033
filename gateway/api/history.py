"""``/chat/history/*`` (contract §5)."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.routing import Call, endpoint
from gateway.validation import Query


async def list_chats(call: Call) -> Response:
    query = Query(call.request)
    subject_id = query.string("subject_id", required=True)
    chats = await call.services.history.list_chats(
        call.project_id, subject_id,
        limit=query.integer("limit", default=50, minimum=1, maximum=500),
        offset=query.integer("offset", default=0, minimum=0, maximum=1_000_000))
    return JSONResponse({"chats": chats})


async def read_chat(call: Call) -> Response:
    query = Query(call.request)
    chat_id = query.string("chat_id", required=True)
    subject_id = query.string("subject_id")
    limit = query.integer("limit", default=200, minimum=1, maximum=1000)
    with_summaries = query.flag("include_summaries", default=False)
    history = call.services.history
    messages = await history.read(call.project_id, chat_id, subject_id, limit=limit)
    # The docs read "messages", the mnexium SDK reads "data": both carry the same list.
    answer = {"messages": messages, "data": messages, "count": len(messages), "chat_id": chat_id}
    if with_summaries:
        # The chat's rolling summary (mnx.summarize) and the messages it covers (docs/summaries.md).
        answer["summaries"] = [summary.to_api()
                               for summary in await history.summaries.of_chat(call.project_id, chat_id, subject_id)]
    return JSONResponse(answer)


async def delete_chat(call: Call) -> Response:
    query = Query(call.request)
    chat_id = query.string("chat_id", required=True)
    removed = await call.services.history.delete_chat(call.project_id, chat_id, query.string("subject_id"))
    return JSONResponse({"success": True, "deleted_messages": removed})


# Relative to the /api/v1 mount.
routes = [
    Route("/chat/history/list", endpoint(list_chats, scope="history:read"), methods=["GET"]),
    Route("/chat/history/read", endpoint(read_chat, scope="history:read"), methods=["GET"]),
    Route("/chat/history/delete", endpoint(delete_chat, scope="history:delete"), methods=["DELETE"]),
]
