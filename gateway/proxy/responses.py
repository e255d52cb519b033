"""``POST /responses``: the OpenAI Responses surface (contract §4.2).

``input`` is a string or a list of items (role messages with ``input_text`` /
``output_text`` parts, function calls and their outputs). The gateway's context
goes into ``instructions``; history, off by default on this surface as the contract
says, is replayed as input items before the request's own. OpenAI-compatible
upstreams get the request untranslated; other providers go through LiteLLM's
Responses bridge. Errors use the OpenAI envelope.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from gateway.errors import BadRequest
from gateway.pipeline.context import AssembledContext, with_volatile_first
from gateway.proxy.chat_completions import OPENAI_ERRORS
from gateway.proxy.responses_format import (
    RESPONSES_FORMAT, ResponsesStreamAccumulator, input_to_messages, messages_to_input, output_to_message,
    with_instructions,
)
from gateway.proxy.request_fields import (BOOLEAN, INTEGER, NAME, NUMBER, OBJECT, STRING, STRING_OR_OBJECT,
                                          check_each, check_fields)
from gateway.proxy.surface import SurfaceSpec, proxy_turn
from gateway.routing import Call, PathOwner, endpoint


def _error_frame(code: str, message: str) -> bytes:
    """The Responses stream's error event, on which OpenAI clients raise."""
    return ("event: error\ndata: " + json.dumps({"type": "error", "code": code, "message": message}) + "\n\n").encode()


_ROLES = ("user", "assistant", "system", "developer")
# The generation parameters LiteLLM reads when it translates for another provider (request_fields).
_PARAMETERS = {"temperature": NUMBER, "top_p": NUMBER, "top_logprobs": INTEGER, "max_tool_calls": INTEGER,
               "parallel_tool_calls": BOOLEAN, "store": BOOLEAN, "tool_choice": STRING_OR_OBJECT, "text": OBJECT,
               "reasoning": OBJECT, "metadata": OBJECT, "user": STRING, "previous_response_id": STRING,
               "truncation": STRING}
_FUNCTION_TOOL = {"name": NAME, "description": STRING, "parameters": OBJECT, "strict": BOOLEAN}
_TEXT_PARTS = ("input_text", "output_text", "text")


def _bad(message: str, param: str, code: str) -> BadRequest:
    return BadRequest(message, code=code, param=param)


def _invalid(message: str, param: str) -> BadRequest:
    return _bad(message, param, "invalid_input")


def _validate_content_part(part: Any, where: str) -> None:
    if not isinstance(part, dict):
        raise _invalid(f"{where} must be an object (a content part)", where)
    if not isinstance(part.get("type"), str):
        raise _invalid(f"{where}.type must be a string", f"{where}.type")
    kind = part["type"]
    if kind in _TEXT_PARTS and not isinstance(part.get("text"), str):
        raise _invalid(f"{where}.text must be a string", f"{where}.text")
    if kind == "input_image":
        image = part.get("image_url")
        # A URL string, as the API takes it; {"url": ...} is read too. Absent when a file_id names the image.
        if image is not None and not isinstance(image, str) and not (
                isinstance(image, dict) and isinstance(image.get("url"), str)):
            raise _invalid(f"{where}.image_url must be a string", f"{where}.image_url")


def _validate_item(item: dict[str, Any], where: str) -> None:
    """An input item, as far as the conversion to history reads it; other item types pass untouched."""
    kind = item.get("type", "message")
    if not isinstance(kind, str):
        raise _invalid(f"{where}.type must be a string", f"{where}.type")
    if kind == "message" and ("type" in item or "role" in item or "content" in item):
        # (An item with neither type, role nor content is an item reference by id.)
        role = item.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise _invalid(f"{where}.role must be one of {', '.join(_ROLES)}", f"{where}.role")
        content = item.get("content")
        if isinstance(content, list):
            for number, part in enumerate(content):
                _validate_content_part(part, f"{where}.content[{number}]")
        elif not isinstance(content, str):
            raise _invalid(f"{where}.content must be a string or an array of content parts", f"{where}.content")
    elif kind in ("function_call", "function_call_output"):
        fields = ("call_id", "name", "arguments") if kind == "function_call" else ("call_id",)
        for field in fields:
            if not isinstance(item.get(field), str):
                raise _invalid(f"{where}.{field} must be a string", f"{where}.{field}")


def validate_responses_body(body: dict[str, Any]) -> None:
    if "messages" in body:
        raise _bad("the Responses API takes 'input', not 'messages'", "messages", "messages_not_supported")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _bad("model is required and must be a non-empty string", "model", "model_required")
    value = body.get("input")
    if value is None:
        raise _bad("input is required", "input", "input_required")
    if isinstance(value, str):
        if not value.strip():
            raise _bad("input must not be empty", "input", "input_required")
    elif not isinstance(value, list) or not value or not all(isinstance(item, dict) for item in value):
        raise _bad("input must be a string or a non-empty array of items", "input", "invalid_input")
    else:
        for index, item in enumerate(value):
            _validate_item(item, f"input[{index}]")
    if body.get("instructions") is not None and not isinstance(body["instructions"], str):
        raise _bad("instructions must be a string", "instructions", "invalid_instructions")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _bad("stream must be a boolean", "stream", "invalid_stream")
    limit = body.get("max_output_tokens")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise _bad("max_output_tokens must be a positive integer", "max_output_tokens", "invalid_max_output_tokens")
    check_fields(body, _PARAMETERS)
    check_each(body, "tools", _validate_tool)


def _validate_tool(tool: dict[str, Any], where: str) -> None:
    check_fields(tool, {"type": STRING}, where=where, code="invalid_tools", required=("type",))
    if tool["type"] == "function":
        check_fields(tool, _FUNCTION_TOOL, where=where, code="invalid_tools", required=("name",))


def _with_context(body: dict[str, Any], context: AssembledContext) -> dict[str, Any]:
    forwarded = dict(body)
    # A turn chained to one OpenAI stored (previous_response_id, conversation) carries its input
    # into the next: this turn's volatile context would pile up there, turn after turn. It goes
    # in the instructions, which are not carried over, as in the contract's order.
    chained = body.get("previous_response_id") is not None or body.get("conversation") is not None
    volatile = None if chained else context.volatile_text
    if context.history or volatile:
        request_items = [{"role": "user", "content": body["input"]}] if isinstance(body["input"], str) \
            else body["input"]
        request_items = with_volatile_first(request_items, volatile, "input_text")
        forwarded["input"] = messages_to_input(context.history) + request_items
    system = context.system_with_volatile if chained else context.system_text
    instructions = with_instructions(body.get("instructions"), system)
    if instructions is not None:
        forwarded["instructions"] = instructions
    return forwarded


def _recordable(answer: dict[str, Any]) -> dict[str, Any] | None:
    return output_to_message(answer["output"]) if isinstance(answer.get("output"), list) else None


RESPONSES = SurfaceSpec(
    request_type="responses",
    validate=validate_responses_body,
    request_messages=lambda body: input_to_messages(body["input"]),
    with_context=_with_context,
    wire=RESPONSES_FORMAT,
    answer_message=_recordable,
    new_accumulator=ResponsesStreamAccumulator,
    error_frame=_error_frame,
    history_default=False,
)


async def responses(call: Call) -> Response:
    return await proxy_turn(call, RESPONSES)


# Relative to the /api/v1 and /v1 mounts; every path under /responses answers in OpenAI's shape.
# One rule for every provider surface: chat:write (and here the contract's responses:write too);
# what a turn reads and writes beyond that: gateway/feature_scopes.py.
routes = [PathOwner("/responses", OPENAI_ERRORS, [
    Route("/responses", endpoint(responses, scope=("chat:write", "responses:write"), surface=OPENAI_ERRORS,
                                 trial=True),
          methods=["POST"]),
])]
