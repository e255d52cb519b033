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

from gateway.errors import BadRequest
from gateway.pipeline.context import AssembledContext
from gateway.proxy.responses_format import (
    ResponsesStreamAccumulator, input_to_messages, messages_to_input, output_to_message, with_instructions,
)
from gateway.proxy.surface import SurfaceSpec, proxy_turn
from gateway.proxy.upstream import WireFormat
from gateway.routing import Call

_INTERRUPTED = ("event: error\ndata: " + json.dumps({
    "type": "error", "code": "upstream_stream_interrupted",
    "message": "the provider's stream ended before the answer was complete"}) + "\n\n").encode()


def _bad(message: str, param: str, code: str) -> BadRequest:
    return BadRequest(message, code=code, param=param)


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
    if body.get("instructions") is not None and not isinstance(body["instructions"], str):
        raise _bad("instructions must be a string", "instructions", "invalid_instructions")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _bad("stream must be a boolean", "stream", "invalid_stream")
    if body.get("tools") is not None and not isinstance(body["tools"], list):
        raise _bad("tools must be an array", "tools", "invalid_tools")
    limit = body.get("max_output_tokens")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise _bad("max_output_tokens must be a positive integer", "max_output_tokens", "invalid_max_output_tokens")


def _with_context(body: dict[str, Any], context: AssembledContext) -> dict[str, Any]:
    forwarded = dict(body)
    if context.history:
        request_items = [{"role": "user", "content": body["input"]}] if isinstance(body["input"], str) \
            else body["input"]
        forwarded["input"] = messages_to_input(context.history) + request_items
    instructions = with_instructions(body.get("instructions"), context.system_text)
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
    wire=WireFormat.RESPONSES,
    answer_message=_recordable,
    new_accumulator=ResponsesStreamAccumulator,
    interrupted_frame=_INTERRUPTED,
    history_default=False,
)


async def responses(call: Call) -> Response:
    return await proxy_turn(call, RESPONSES)
