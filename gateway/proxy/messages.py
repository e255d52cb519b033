"""``POST /messages``: the Anthropic Messages surface (contract §4.3).

Apps built on the Anthropic SDK change only its base URL and add the project key
(``x-mnexium-key`` or ``Authorization: Bearer``); ``x-api-key`` stays their
Anthropic key. The gateway's context goes into the top-level ``system``, replayed
history in front of the request's messages. Claude models are forwarded to
Anthropic untranslated; any other model is translated by LiteLLM, and the answer
comes back in the Messages shape either way. ``mnx`` comes from the body (the SDK's
``extra_body``) or ``x-mnx-*`` headers.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.errors import BadRequest, GatewayError
from gateway.options import parse_options
from gateway.pipeline.context import TurnContext, assemble
from gateway.pipeline.record import record_turn
from gateway.proxy.anthropic_format import (
    MessagesStreamAccumulator, assistant_to_openai, merge_messages, to_anthropic_messages, to_openai_messages,
    with_system,
)
from gateway.proxy.providers import provider_key, provider_settings, route_model
from gateway.proxy.relay import relay
from gateway.proxy.upstream import UpstreamCall
from gateway.routing import Call
from gateway.validation import read_json_object

# Anthropic request headers a native passthrough keeps (API version and opt-in betas).
_FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")
_INTERRUPTED = ("event: error\ndata: " + json.dumps({"type": "error", "error": {
    "type": "api_error", "message": "the provider's stream ended before the answer was complete"}}) + "\n\n").encode()


def _bad(message: str, param: str, code: str = "invalid_request") -> BadRequest:
    return BadRequest(message, code=code, param=param)


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
    system = body.get("system")
    if system is not None and not isinstance(system, str) and not (
            isinstance(system, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in system)):
        raise _bad("system must be a string or an array of text blocks", "system", "invalid_system")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _bad("stream must be a boolean", "stream", "invalid_stream")
    if body.get("tools") is not None and not isinstance(body["tools"], list):
        raise _bad("tools must be an array", "tools", "invalid_tools")


async def messages(call: Call) -> Response:
    services = call.services
    headers = call.request.headers
    body = await read_json_object(call.request, services.config.server.max_body_bytes)
    options = parse_options(body.pop("mnx", None), headers, services.config.defaults)
    ids = {"X-Mnx-Chat-Id": options.chat_id, "X-Mnx-Subject-Id": options.subject_id}
    try:
        validate_messages_body(body)
        route = route_model(body["model"])
        settings = provider_settings(services.config.providers, route.provider)
        api_key = provider_key(route.provider, headers, call.credentials.provider_bearer, settings,
                               native_header="x-api-key" if route.provider == "anthropic" else None)
        turn = TurnContext(call.project_id, options, to_openai_messages(body["messages"]), body["model"])
        context = await assemble(turn, services.stages)
        upstream_body = {**body, "model": route.model,
                         "messages": merge_messages(to_anthropic_messages(context.history), body["messages"])}
        system = with_system(body.get("system"), context.system_text)
        if system is not None:
            upstream_body["system"] = system
        forwarded = {name: headers[name] for name in _FORWARDED_HEADERS if name in headers}
        upstream_call = UpstreamCall(route, upstream_body, api_key, settings, headers=forwarded)
        if body.get("stream"):
            stream = await services.upstream.open_messages_stream(upstream_call)
            return StreamingResponse(relay(services, turn, stream, MessagesStreamAccumulator(), _INTERRUPTED),
                                     media_type="text/event-stream",
                                     headers={**ids, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        answer = await services.upstream.complete_messages(upstream_call)
    except GatewayError as error:
        error.headers = ids
        raise
    if isinstance(answer.get("content"), list):
        await record_turn(services, turn, assistant_to_openai(answer["content"]))
    answer["mnx"] = {"chat_id": options.chat_id, "subject_id": options.subject_id}
    return JSONResponse(answer, headers=ids)
