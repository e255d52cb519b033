"""``POST /chat/completions``: the OpenAI-compatible surface (contract §4.1).

Any OpenAI Chat Completions body plus ``mnx`` (or ``x-mnx-*`` headers). The request
is validated completely before anything is read from storage or sent upstream, so
bad input is a 4xx that stores and forwards nothing.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from gateway.errors import BadRequest
from gateway.proxy.sse import ChatStreamAccumulator, sse_frame
from gateway.proxy.surface import SurfaceSpec, proxy_turn
from gateway.proxy.upstream import WireFormat
from gateway.routing import Call

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
# OpenAI clients raise on a stream event carrying "error".
_INTERRUPTED = sse_frame({"error": {"message": "the provider's stream ended before the answer was complete",
                                    "type": "api_error", "code": "upstream_stream_interrupted"}})


def _validate_part(part: Any, where: str) -> None:
    """A content part, as far as the history converters read it; other part types pass untouched."""
    if not isinstance(part, dict):
        raise BadRequest(f"{where} must be an object (a content part)", code="invalid_messages", param=where)
    if not isinstance(part.get("type"), str):
        raise BadRequest(f"{where}.type must be a string", code="invalid_messages", param=f"{where}.type")
    if part["type"] == "text" and not isinstance(part.get("text"), str):
        raise BadRequest(f"{where}.text must be a string", code="invalid_messages", param=f"{where}.text")
    if part["type"] == "image_url":
        image = part.get("image_url")
        if not isinstance(image, dict):
            raise BadRequest(f"{where}.image_url must be an object with a url", code="invalid_messages",
                             param=f"{where}.image_url")
        if not isinstance(image.get("url"), str):
            raise BadRequest(f"{where}.image_url.url must be a string", code="invalid_messages",
                             param=f"{where}.image_url.url")


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
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise BadRequest(f"{where}.role must be one of {', '.join(sorted(_ROLES))}",
                             code="invalid_messages", param=f"{where}.role")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise BadRequest(f"{where}.content must be a string, an array of parts or null",
                             code="invalid_messages", param=f"{where}.content")
        if isinstance(content, list):
            for number, part in enumerate(content):
                _validate_part(part, f"{where}.content[{number}]")
        if message.get("name") is not None and not isinstance(message["name"], str):
            raise BadRequest(f"{where}.name must be a string", code="invalid_messages", param=f"{where}.name")
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


def _recordable(answer: dict[str, Any]) -> dict[str, Any] | None:
    message = _assistant_message(answer)
    if message is not None and message.get("content") is None:
        # The mnexium SDK turns a null content into the text "None"; "" is what it expects.
        message["content"] = ""
    return message


CHAT_COMPLETIONS = SurfaceSpec(
    validate=validate_chat_body,
    request_messages=lambda body: body["messages"],
    with_context=lambda body, context: {**body, "messages": context.chat_messages(body["messages"])},
    wire=WireFormat.CHAT,
    answer_message=_recordable,
    new_accumulator=ChatStreamAccumulator,
    interrupted_frame=_INTERRUPTED,
)


async def chat_completions(call: Call) -> Response:
    return await proxy_turn(call, CHAT_COMPLETIONS)
