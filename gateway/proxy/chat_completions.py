"""``POST /chat/completions``: the OpenAI-compatible surface (contract §4.1).

Any OpenAI Chat Completions body plus ``mnx`` (or ``x-mnx-*`` headers). The request
is validated completely before anything is read from storage or sent upstream, so
bad input is a 4xx that stores and forwards nothing.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.errors import BadRequest, GatewayError
from gateway.options import parse_options
from gateway.pipeline.context import TurnContext, assemble
from gateway.pipeline.record import record_turn
from gateway.proxy.providers import provider_key, provider_settings, route_model
from gateway.proxy.relay import relay
from gateway.proxy.sse import ChatStreamAccumulator, sse_frame
from gateway.proxy.upstream import UpstreamCall
from gateway.routing import Call
from gateway.validation import read_json_object

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
# OpenAI clients raise on a stream event carrying "error".
_INTERRUPTED = sse_frame({"error": {"message": "the provider's stream ended before the answer was complete",
                                    "type": "api_error", "code": "upstream_stream_interrupted"}})


def validate_chat_body(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("model is required and must be a non-empty string", code="model_required", param="model")
    messages = body.get("messages")
    if messages is None:
        raise BadRequest("messages is required", code="messages_required", param="messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty array", code="invalid_messages", param="messages")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise BadRequest(f"{where} must be an object", code="invalid_messages", param=where)
        if message.get("role") not in _ROLES:
            raise BadRequest(f"{where}.role must be one of {', '.join(sorted(_ROLES))}",
                             code="invalid_messages", param=f"{where}.role")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise BadRequest(f"{where}.content must be a string, an array of parts or null",
                             code="invalid_messages", param=f"{where}.content")
        if content is None and message["role"] == "user":
            raise BadRequest(f"{where}.content is required for a user message",
                             code="invalid_messages", param=f"{where}.content")
        if message["role"] == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise BadRequest(f"{where}.tool_call_id is required for a tool message",
                             code="invalid_messages", param=f"{where}.tool_call_id")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise BadRequest("stream must be a boolean", code="invalid_stream", param="stream")
    if "tools" in body and body["tools"] is not None and not isinstance(body["tools"], list):
        raise BadRequest("tools must be an array", code="invalid_tools", param="tools")


def _assistant_message(answer: dict[str, Any]) -> dict[str, Any] | None:
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    return message if isinstance(message, dict) else None


async def chat_completions(call: Call) -> Response:
    services = call.services
    body = await read_json_object(call.request, services.config.server.max_body_bytes)
    options = parse_options(body.pop("mnx", None), call.request.headers, services.config.defaults)
    ids = {"X-Mnx-Chat-Id": options.chat_id, "X-Mnx-Subject-Id": options.subject_id}
    try:
        validate_chat_body(body)
        route = route_model(body["model"])
        settings = provider_settings(services.config.providers, route.provider)
        api_key = provider_key(route.provider, call.request.headers, call.credentials.provider_bearer, settings)
        turn = TurnContext(call.project_id, options, body["messages"], body["model"])
        context = await assemble(turn, services.stages)
        upstream_call = UpstreamCall(route, {**body, "model": route.model,
                                             "messages": context.chat_messages(body["messages"])}, api_key, settings)
        if body.get("stream"):
            stream = await services.upstream.open_stream(upstream_call)
            return StreamingResponse(relay(services, turn, stream, ChatStreamAccumulator(), _INTERRUPTED),
                                     media_type="text/event-stream",
                                     headers={**ids, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        answer = await services.upstream.complete(upstream_call)
    except GatewayError as error:
        error.headers = ids
        raise
    message = _assistant_message(answer)
    if message is not None:
        if message.get("content") is None:
            # The mnexium SDK turns a null content into the text "None"; "" is what it expects.
            message["content"] = ""
        await record_turn(services, turn, message)
    answer["mnx"] = {"chat_id": options.chat_id, "subject_id": options.subject_id}
    return JSONResponse(answer, headers=ids)
