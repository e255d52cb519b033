"""``POST /chat/completions``: the OpenAI-compatible surface (contract §4.1), and OpenAI's error shape.

Any OpenAI Chat Completions body plus ``mnx`` (or ``x-mnx-*`` headers). The request
is validated completely before anything is read from storage or sent upstream, so
bad input is a 4xx that stores and forwards nothing. Served under /api/v1 and /v1, so
a plain OpenAI base_url of http://host/v1 works.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from gateway.errors import BadRequest, ErrorShape, GatewayError
from gateway.proxy.cache_breakpoints import chat_breakpoints
from gateway.proxy.chat_format import CHAT_FORMAT
from gateway.proxy.request_fields import (BOOLEAN, INTEGER, NAME, NUMBER, OBJECT, STRING, STRING_OR_OBJECT,
                                          STRING_OR_STRINGS, check_each, check_fields)
from gateway.proxy.sse import ChatStreamAccumulator, sse_frame
from gateway.proxy.surface import SurfaceSpec, proxy_turn
from gateway.routing import Call, PathOwner, endpoint

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}

_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
                 429: "rate_limit_error"}


def _openai_error(error: GatewayError) -> dict[str, Any]:
    if error.code.endswith("_key_required"):
        # A missing provider key is answered in the Mnexium shape, ``error`` being the code
        # string: Mnexium's clients test ``json.error.includes("key_required")`` (contract §1,
        # §2). The OpenAI SDK still raises BadRequestError, whose message shows the body; its
        # ``code`` attribute is None for this one error (it reads codes from an ``error`` object).
        return {"error": error.code, "message": error.message, "type": "invalid_request_error", **error.extra}
    return {
        "error": {
            "message": error.message,
            "type": _OPENAI_TYPES.get(error.status, "api_error"),
            "param": error.extra.get("param"),
            "code": error.code,
            **_limit_fields(error),
        },
        # The mnexium SDK reads a top-level "message" (and a 429's "current" and "limit"); OpenAI clients ignore them.
        "message": error.message,
        **_limit_fields(error),
    }


def _limit_fields(error: GatewayError) -> dict[str, Any]:
    """A usage limit's ``current`` and ``limit`` (gateway/usage_limits.py), where the envelope has room."""
    return {name: error.extra[name] for name in ("current", "limit") if name in error.extra}


# OpenAI's error envelope, read by the OpenAI SDK on both OpenAI surfaces (this one and /responses).
OPENAI_ERRORS = ErrorShape("openai", _openai_error)


def _error_frame(code: str, message: str) -> bytes:
    """An in-stream error event, on which OpenAI clients raise."""
    return sse_frame({"error": {"message": message, "type": "api_error", "code": code}})


# The generation parameters LiteLLM reads when it translates for another provider (request_fields).
_PARAMETERS = {"temperature": NUMBER, "top_p": NUMBER, "frequency_penalty": NUMBER, "presence_penalty": NUMBER,
               "max_tokens": INTEGER, "max_completion_tokens": INTEGER, "n": INTEGER, "seed": INTEGER,
               "top_logprobs": INTEGER, "logprobs": BOOLEAN, "parallel_tool_calls": BOOLEAN,
               "stop": STRING_OR_STRINGS, "tool_choice": STRING_OR_OBJECT, "function_call": STRING_OR_OBJECT,
               "response_format": OBJECT, "stream_options": OBJECT, "logit_bias": OBJECT, "metadata": OBJECT,
               "user": STRING, "reasoning_effort": STRING}
_FUNCTION = {"name": NAME, "description": STRING, "parameters": OBJECT, "strict": BOOLEAN}


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
        calls = message.get("tool_calls")
        if calls is not None and not isinstance(calls, list):
            raise BadRequest(f"{where}.tool_calls must be an array", code="invalid_messages",
                             param=f"{where}.tool_calls")
        for number, call in enumerate(calls or []):
            _validate_tool_call(call, f"{where}.tool_calls[{number}]")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise BadRequest("stream must be a boolean", code="invalid_stream", param="stream")
    check_fields(body, _PARAMETERS)
    check_each(body, "tools", _validate_tool)
    check_each(body, "functions",
               lambda function, where: check_fields(function, _FUNCTION, where=where, code="invalid_functions",
                                                    required=("name",)))
    response_format = body.get("response_format")
    if response_format is not None:
        check_fields(response_format, {"type": STRING}, where="response_format", code="invalid_response_format",
                     required=("type",))
    if response_format is not None and response_format["type"] == "json_schema":
        check_fields(response_format, {"json_schema": OBJECT}, where="response_format",
                     code="invalid_response_format", required=("json_schema",))
        check_fields(response_format["json_schema"], {"name": NAME, "schema": OBJECT, "strict": BOOLEAN},
                     where="response_format.json_schema", code="invalid_response_format", required=("name",))
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        check_fields(choice, {"function": OBJECT}, where="tool_choice", code="invalid_tool_choice",
                     required=("function",))
        check_fields(choice["function"], {"name": NAME}, where="tool_choice.function", code="invalid_tool_choice",
                     required=("name",))


def _validate_tool(tool: dict[str, Any], where: str) -> None:
    check_fields(tool, {"type": STRING}, where=where, code="invalid_tools")
    if tool.get("type", "function") == "function":
        check_fields(tool, {"function": OBJECT}, where=where, code="invalid_tools", required=("function",))
        check_fields(tool["function"], _FUNCTION, where=f"{where}.function", code="invalid_tools", required=("name",))


def _validate_tool_call(call: Any, where: str) -> None:
    """A tool call of an assistant message, as history and LiteLLM read it."""
    if not isinstance(call, dict):
        raise BadRequest(f"{where} must be an object", code="invalid_messages", param=where)
    check_fields(call, {"id": STRING, "type": STRING}, where=where, code="invalid_messages", required=("id",))
    if call.get("type", "function") == "function":
        check_fields(call, {"function": OBJECT}, where=where, code="invalid_messages", required=("function",))
        check_fields(call["function"], {"name": NAME, "arguments": STRING}, where=f"{where}.function",
                     code="invalid_messages", required=("name", "arguments"))


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
    wire=CHAT_FORMAT,
    answer_message=_recordable,
    new_accumulator=ChatStreamAccumulator,
    error_frame=_error_frame,
    cache_breakpoints=chat_breakpoints,
)


async def chat_completions(call: Call) -> Response:
    return await proxy_turn(call, CHAT_COMPLETIONS)


# Relative to the /api/v1 and /v1 mounts; every path under /chat/completions answers in OpenAI's shape.
routes = [PathOwner("/chat/completions", OPENAI_ERRORS, [
    Route("/chat/completions", endpoint(chat_completions, scope="chat:write", surface=OPENAI_ERRORS, trial=True),
          methods=["POST"]),
])]
