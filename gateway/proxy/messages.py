"""``POST /messages``: the Anthropic Messages surface (contract §4.3), and Anthropic's error shape.

Apps built on the Anthropic SDK change only its base URL and add the project key
(``x-mnexium-key`` or ``Authorization: Bearer``); ``x-api-key`` stays their
Anthropic key. The gateway's context goes into the top-level ``system``, replayed
history in front of the request's messages. Claude models are forwarded to
Anthropic untranslated; any other model is translated by LiteLLM, and the answer
comes back in the Messages shape either way. ``mnx`` comes from the body (the SDK's
``extra_body``) or ``x-mnx-*`` headers. Served under /api/v1 and /v1, where the Anthropic
SDK's base_url leads.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from gateway.errors import BadRequest, ErrorShape, GatewayError
from gateway.pipeline.context import AssembledContext, with_volatile_first
from gateway.proxy.anthropic_format import (
    MESSAGES_FORMAT, MessagesStreamAccumulator, assistant_to_openai, merge_messages, to_anthropic_messages,
    to_openai_messages, with_system,
)
from gateway.proxy.cache_breakpoints import messages_breakpoints
from gateway.proxy.request_fields import INTEGER, NAME, NUMBER, OBJECT, STRING, STRINGS, check_each, check_fields
from gateway.proxy.surface import SurfaceSpec, proxy_turn
from gateway.routing import Call, PathOwner, endpoint


_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large",
                    429: "rate_limit_error", 529: "overloaded_error"}


def _anthropic_error(error: GatewayError) -> dict[str, Any]:
    # "code" is ours (Anthropic has none); the SDK keeps unknown keys in the error body.
    # A usage limit's "current" and "limit" go beside it, as the SDK keeps them too.
    limits = {name: error.extra[name] for name in ("current", "limit") if name in error.extra}
    return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(error.status, "api_error"),
                                       "message": error.message, "code": error.code, **limits}}


ANTHROPIC_ERRORS = ErrorShape("anthropic", _anthropic_error)


def _error_frame(code: str, message: str) -> bytes:
    """Anthropic's in-stream error event (its SDK raises on it); ``code`` is ours, as in error bodies."""
    return ("event: error\ndata: " + json.dumps({"type": "error", "error": {
        "type": "api_error", "message": message, "code": code}}) + "\n\n").encode()


# The generation parameters LiteLLM reads when it translates for another provider (request_fields).
_PARAMETERS = {"temperature": NUMBER, "top_p": NUMBER, "top_k": INTEGER, "stop_sequences": STRINGS,
               "tool_choice": OBJECT, "metadata": OBJECT, "thinking": OBJECT, "service_tier": STRING}
_TOOL = {"name": NAME, "type": STRING, "description": STRING, "input_schema": OBJECT}


def _bad(message: str, param: str, code: str = "invalid_request") -> BadRequest:
    return BadRequest(message, code=code, param=param)


def _require_string(block: dict[str, Any], field: str, where: str, *, optional: bool = False) -> None:
    if not isinstance(block.get(field), str) and not (optional and block.get(field) is None):
        raise _bad(f"{where}.{field} must be a string", f"{where}.{field}", "invalid_messages")


def _validate_block(block: dict[str, Any], where: str) -> None:
    """A content block, as far as the conversion to history reads it; other block types pass untouched."""
    if block["type"] != "tool_result":
        _validate_inner_block(block, where)
        return
    _require_string(block, "tool_use_id", where)
    inner = block.get("content")
    for number, part in enumerate(inner if isinstance(inner, list) else []):
        part_where = f"{where}.content[{number}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _bad(f"{part_where} must be a content block", part_where, "invalid_messages")
        _validate_inner_block(part, part_where)


def _validate_inner_block(block: dict[str, Any], where: str) -> None:
    kind = block["type"]
    if kind == "text":
        _require_string(block, "text", where)
    elif kind == "image":
        source = block.get("source")
        if not isinstance(source, dict):
            raise _bad(f"{where}.source must be an object", f"{where}.source", "invalid_messages")
        if source.get("type") == "url":
            _require_string(source, "url", f"{where}.source")
        elif source.get("type") == "base64":
            _require_string(source, "data", f"{where}.source")
            _require_string(source, "media_type", f"{where}.source", optional=True)
    elif kind == "tool_use":
        check_fields(block, {"id": STRING, "name": NAME, "input": OBJECT}, where=where, code="invalid_messages",
                     required=("id", "name", "input"))


def validate_messages_body(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _bad("model is required and must be a non-empty string", "model", "model_required")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _bad("max_tokens is required", "max_tokens", "max_tokens_required")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _bad("max_tokens must be a positive integer", "max_tokens", "invalid_max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty array", "messages", "invalid_messages")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _bad(f"{where}.role must be user or assistant", f"{where}.role", "invalid_messages")
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list) or not all(isinstance(b, dict) and isinstance(b.get("type"), str)
                                                    for b in content):
            raise _bad(f"{where}.content must be a string or an array of content blocks", f"{where}.content",
                       "invalid_messages")
        for number, block in enumerate(content):
            _validate_block(block, f"{where}.content[{number}]")
    system = body.get("system")
    if system is not None and not isinstance(system, str) and not (
            isinstance(system, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in system)):
        raise _bad("system must be a string or an array of text blocks", "system", "invalid_system")
    for number, block in enumerate(system if isinstance(system, list) else []):
        if not isinstance(block.get("text"), str):
            raise _bad(f"system[{number}].text must be a string", f"system[{number}].text", "invalid_system")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _bad("stream must be a boolean", "stream", "invalid_stream")
    check_fields(body, _PARAMETERS)
    check_each(body, "tools", lambda tool, where: check_fields(tool, _TOOL, where=where, code="invalid_tools",
                                                               required=("name",)))
    choice = body.get("tool_choice")
    if choice is not None:
        check_fields(choice, {"type": STRING}, where="tool_choice", code="invalid_tool_choice", required=("type",))
        if choice["type"] == "tool":
            check_fields(choice, {"name": NAME}, where="tool_choice", code="invalid_tool_choice", required=("name",))


def _with_context(body: dict[str, Any], context: AssembledContext) -> dict[str, Any]:
    request = with_volatile_first(body["messages"], context.volatile_text, "text")
    forwarded = {**body, "messages": merge_messages(to_anthropic_messages(context.history), request)}
    system = with_system(body.get("system"), context.system_text)
    if system is not None:
        forwarded["system"] = system
    return forwarded


def _recordable(answer: dict[str, Any]) -> dict[str, Any] | None:
    return assistant_to_openai(answer["content"]) if isinstance(answer.get("content"), list) else None


MESSAGES = SurfaceSpec(
    request_type="messages",
    validate=validate_messages_body,
    request_messages=lambda body: to_openai_messages(body["messages"]),
    with_context=_with_context,
    wire=MESSAGES_FORMAT,
    answer_message=_recordable,
    new_accumulator=MessagesStreamAccumulator,
    error_frame=_error_frame,
    # On /messages, x-api-key is always the caller's Anthropic key (contract §1).
    native_key_header=lambda route: "x-api-key" if route.provider == "anthropic" else None,
    forwarded_headers=("anthropic-version", "anthropic-beta"),
    cache_breakpoints=messages_breakpoints,
)


async def messages(call: Call) -> Response:
    return await proxy_turn(call, MESSAGES)


# Relative to the /api/v1 and /v1 mounts; every path under /messages answers in Anthropic's shape.
routes = [PathOwner("/messages", ANTHROPIC_ERRORS, [
    Route("/messages", endpoint(messages, scope="chat:write", surface=ANTHROPIC_ERRORS, trial=True),
          methods=["POST"]),
])]
