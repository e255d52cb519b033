"""The OpenAI Responses format: its items <-> the OpenAI chat message form history is stored in,
its request fields, its native request and its LiteLLM bridge."""

from __future__ import annotations

import json
from typing import Any

from gateway.proxy.litellm_bridge import litellm_arguments, model_json
from gateway.proxy.sse import JsonEventStream
from gateway.proxy.wire import Bridge, NativeRequest, UpstreamCall, WireFormat
from gateway.stored_messages import as_text, image_url, joined_text, tool_calls


def _text_and_images(content: Any) -> Any:
    """A Responses message content as chat content: a string when it is only text."""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "input_image" and image_url(part.get("image_url")):
            # An image named by file_id only has no URL another provider could read.
            parts.append({"type": "image_url", "image_url": {"url": image_url(part.get("image_url"))}})
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def input_to_messages(input_value: Any) -> list[dict[str, Any]]:
    """A request's ``input`` as chat messages (function calls and their outputs included)."""
    if isinstance(input_value, str):
        return [{"role": "user", "content": input_value}]
    messages: list[dict[str, Any]] = []
    for item in input_value:
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") in ("user", "assistant", "system", "developer"):
            messages.append({"role": item["role"], "content": _text_and_images(item.get("content"))})
        elif kind == "function_call":
            call = {"id": item.get("call_id", ""), "type": "function",
                    "function": {"name": item.get("name", ""), "arguments": item.get("arguments", "")}}
            if messages and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls") is not None:
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id", ""),
                             "content": output if isinstance(output, str) else json.dumps(output)})
    return messages


def _input_parts(content: Any) -> list[dict[str, Any]]:
    """A stored user content as Responses content parts; parts that cannot be carried over are left out."""
    if not isinstance(content, list):
        return [{"type": "input_text", "text": as_text(content)}]
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            parts.append({"type": "input_text", "text": part})
        elif not isinstance(part, dict):
            continue
        elif part.get("type") == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "input_text", "text": part["text"]})
        elif part.get("type") == "image_url" and image_url(part.get("image_url")):
            parts.append({"type": "input_image", "image_url": image_url(part.get("image_url"))})
    return parts


def messages_to_input(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored history as Responses input items.

    Whatever shape a stored turn has (older versions stored content parts unchecked), this does not
    raise: a part it cannot carry over is left out, a value that should be text is made text.
    """
    items: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        role, content = message.get("role"), message.get("content")
        if role == "user":
            parts = _input_parts(content)
            if parts:
                items.append({"role": "user", "content": parts})
        elif role == "assistant":
            text = joined_text(content)
            if text:
                items.append({"role": "assistant", "content": [{"type": "output_text", "text": text}]})
            items += [{"type": "function_call", "call_id": call.call_id, "name": call.name,
                       "arguments": call.raw_arguments} for call in tool_calls(message)]
        elif role == "tool":
            items.append({"type": "function_call_output", "call_id": as_text(message.get("tool_call_id")),
                          "output": content if isinstance(content, str) else json.dumps(content)})
    return items


def output_to_message(output: list[dict[str, Any]]) -> dict[str, Any]:
    """A response's ``output`` items as one assistant chat message (reasoning items are not history)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in output or []:
        if item.get("type") == "message":
            texts.extend(p.get("text", "") for p in item.get("content") or [] if p.get("type") == "output_text")
        elif item.get("type") == "function_call":
            calls.append({"id": item.get("call_id", ""), "type": "function",
                          "function": {"name": item.get("name", ""), "arguments": item.get("arguments", "")}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        message["tool_calls"] = calls
    return message


def with_instructions(instructions: str | None, context: str | None) -> str | None:
    if not context:
        return instructions
    return f"{context}\n\n{instructions}" if instructions else context


class ResponsesStreamAccumulator(JsonEventStream):
    """Reads a Responses event stream; the final ``response.completed`` event carries the whole answer."""

    def __init__(self) -> None:
        super().__init__()
        self._response: dict[str, Any] | None = None

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "response.completed":
            self._response = event.get("response") or {}
            self.done = True
        elif kind in ("response.failed", "response.incomplete", "error"):
            self.error = event

    def message(self) -> dict[str, Any]:
        return output_to_message((self._response or {}).get("output") or [])


# -- the format, as the proxy calls providers in it -------------------------------------------

# openai 2.x ResponseCreateParams, plus stream.
_ACCEPTED = frozenset({
    "model", "input", "stream", "stream_options", "background", "context_management", "conversation", "include",
    "instructions", "max_output_tokens", "max_tool_calls", "metadata", "moderation", "parallel_tool_calls",
    "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
    "reasoning", "safety_identifier", "service_tier", "store", "temperature", "text", "tool_choice", "tools",
    "top_logprobs", "top_p", "truncation", "user",
})
# What litellm.aresponses gets when a Responses request goes to Claude or Gemini.
_TRANSLATED = frozenset({
    "input", "include", "instructions", "max_output_tokens", "parallel_tool_calls", "reasoning", "temperature",
    "text", "tool_choice", "tools", "top_p", "truncation", "user",
})


def _native_request(call: UpstreamCall) -> NativeRequest:
    return NativeRequest(call.settings.api_base + "/responses", {"authorization": f"Bearer {call.api_key}"},
                         call.body)


def _event_frame(event: Any) -> list[bytes]:
    return [f"event: {event.type}\ndata: {event.model_dump_json(exclude_none=True)}\n\n".encode()]


def _bridge(litellm: Any, call: UpstreamCall) -> Bridge:
    arguments = litellm_arguments(call, RESPONSES_FORMAT)
    return Bridge(request=lambda stream: litellm.aresponses(**arguments, stream=stream), whole=model_json,
                  frames=_event_frame)


RESPONSES_FORMAT = WireFormat(
    name="responses", native_provider="openai", accepted=_ACCEPTED, translated=_TRANSLATED,
    native_request=_native_request, bridge=_bridge,
)
