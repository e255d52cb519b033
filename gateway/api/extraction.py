"""``POST /memories/extract`` (contract §6): run the configured extractor on a text.

Without ``learn`` it only answers what the extractor found (after the memory policy), and
stores nothing. With ``learn: true`` what it found is stored exactly as a chat turn's
learning stores it (gateway/memory/learning.py: same policy, versioning, duplicates,
claims and profile fields), synchronously, and the answer names what was stored.
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.api.memory_bodies import MAX_TEXT
from gateway.errors import BadRequest
from gateway.options import MAX_ID_LENGTH
from gateway.routing import Call, endpoint
from gateway.validation import Body, Query, bool_from_text, read_json_object

# The last lines of conversation the extractor sees beside the text (as a chat turn's context).
MAX_CONTEXT_LINES = 20


def _query_flag(query: Query, body: Body, name: str) -> bool:
    """A flag from the body, else from the query string (``?learn=true``), default false."""
    if body.value(name) is not None:
        return body.flag(name, default=False)
    raw = query.string(name)
    if raw is None:
        return False
    parsed = bool_from_text(raw)
    if parsed is None:
        raise BadRequest(f"{name} must be true or false", code=f"invalid_{name}", param=name)
    return parsed


async def extract_memories(call: Call) -> Response:
    raw = await read_json_object(call.request, call.services.config.server.max_body_bytes)
    body, query = Body(raw), Query(call.request)
    # Checked as the proxy checks mnx.subject_id: the id is stored, and filters event streams.
    subject_id = body.identifier("subject_id", max_length=MAX_ID_LENGTH)
    if subject_id is None:
        raise BadRequest("subject_id is required", code="subject_id_required", param="subject_id")
    text = body.string("text", required=True, max_length=MAX_TEXT, strip=True)
    assert text is not None
    context = body.strings("conversation_context") or []
    if len(context) > MAX_CONTEXT_LINES:
        raise BadRequest(f"conversation_context holds at most {MAX_CONTEXT_LINES} lines (the latest ones)",
                         code="invalid_conversation_context", param="conversation_context")
    if any(len(line) > MAX_TEXT for line in context):
        raise BadRequest(f"each conversation_context line is at most {MAX_TEXT} characters",
                         code="invalid_conversation_context", param="conversation_context")
    learn = _query_flag(query, body, "learn")
    force = _query_flag(query, body, "force")
    memory_policy = body.flag_or_id("memory_policy", default=True)
    learner = call.services.learner
    result = await learner.extract_text(
        call.project_id, subject_id, text, context=context, force=force,
        memory_policy=memory_policy, store=learn, caller_keys=call.credentials.provider_keys)
    return JSONResponse(result)


# Relative to the /api/v1 mount.
routes = [
    Route("/memories/extract", endpoint(extract_memories, scope="memories:write"), methods=["POST"]),
]
