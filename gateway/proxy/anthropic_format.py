"""Anthropic Messages <-> the OpenAI message form that history is stored in.

History is kept in one form (OpenAI Chat Completions messages) whatever surface
wrote it, so a conversation started on one surface replays on another. These
functions convert at the Anthropic surface's edges: its request messages in,
stored history out, and its answers (whole or streamed) back in. The module ends
with the format's declaration: its request fields, native request and LiteLLM bridge.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.proxy.litellm_bridge import litellm_arguments, model_json
from gateway.proxy.sse import JsonEventStream
from gateway.proxy.wire import Bridge, NativeRequest, UpstreamCall, WireFormat
from gateway.stored_messages import as_text, image_url, inline_image, joined_text, tool_calls

# -- Anthropic -> OpenAI ----------------------------------------------------------------------


def _image_part(block: dict[str, Any]) -> dict[str, Any] | None:
    source = block.get("source")
    if not isinstance(source, dict):
        return None
    if source.get("type") == "base64":
        return {"type": "image_url",
                "image_url": {"url": f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"}}
    if source.get("type") == "url":
        return {"type": "image_url", "image_url": {"url": source.get("url", "")}}
    return None


def _tool_result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b["text"] for b in content
                         if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str))
    return "" if content is None else json.dumps(content, ensure_ascii=False)


def to_openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic request messages as OpenAI messages (tool results become ``tool`` messages)."""
    converted: list[dict[str, Any]] = []
    for message in messages:
        content = message.get("content")
        if message["role"] == "assistant":
            converted.append(assistant_to_openai(content))
            continue
        if isinstance(content, str):
            converted.append({"role": "user", "content": content})
            continue
        parts: list[dict[str, Any]] = []
        for block in content or ():  # validated: a string (above) or a list of blocks
            kind = block.get("type")
            if kind == "tool_result":
                converted.append({"role": "tool", "tool_call_id": block.get("tool_use_id", ""),
                                  "content": _tool_result_text(block.get("content"))})
            elif kind == "text":
                parts.append({"type": "text", "text": block.get("text", "")})
            elif kind == "image":
                image = _image_part(block)
                if image:
                    parts.append(image)
        if parts:
            only_text = all(p["type"] == "text" for p in parts)
            converted.append({"role": "user",
                              "content": "\n".join(p["text"] for p in parts) if only_text else parts})
    return converted


def assistant_to_openai(content: Any) -> dict[str, Any]:
    """An Anthropic assistant content (string or blocks) as one OpenAI assistant message."""
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
    texts = [b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str)]
    calls = [{"id": b.get("id", ""), "type": "function",
              "function": {"name": b.get("name", ""), "arguments": json.dumps(b.get("input") or {})}}
             for b in blocks if b.get("type") == "tool_use"]
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        message["tool_calls"] = calls
    return message


# -- OpenAI -> Anthropic ----------------------------------------------------------------------


def _image_block(url: str) -> dict[str, Any]:
    inline = inline_image(url)
    if inline is not None:
        return {"type": "image", "source": {"type": "base64", "media_type": inline[0], "data": inline[1]}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    """A stored user content as Anthropic blocks.

    Whatever shape a stored turn has (older versions stored content parts unchecked), this does not
    raise: a part it cannot carry over is left out, a value that should be text is made text.
    """
    if not isinstance(content, list):
        text = as_text(content)
        return [{"type": "text", "text": text}] if text else []
    blocks = []
    for part in content:
        if isinstance(part, str):
            if part:
                blocks.append({"type": "text", "text": part})
            continue
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            blocks.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "image_url":
            url = image_url(part.get("image_url"))
            if url:
                blocks.append(_image_block(url))
    return blocks


def to_anthropic_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages (stored history) as Anthropic messages, merging same-role neighbours."""
    result: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if result and result[-1]["role"] == role:
            previous = result[-1]["content"]
            if isinstance(previous, str):
                previous = [{"type": "text", "text": previous}]
            result[-1]["content"] = previous + blocks
        else:
            result.append({"role": role, "content": blocks})

    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role == "assistant":
            text = joined_text(message.get("content"))
            blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
            blocks += [{"type": "tool_use", "id": call.call_id, "name": call.name, "input": call.arguments}
                       for call in tool_calls(message)]
            add("assistant", blocks)
        elif role == "tool":
            add("user", [{"type": "tool_result", "tool_use_id": as_text(message.get("tool_call_id")),
                          "content": _tool_result_text(message.get("content"))}])
        elif role == "user":
            add("user", _user_blocks(message.get("content")))
    return result


def merge_messages(head: list[dict[str, Any]], tail: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replayed history followed by the request's messages, with no two same-role turns in a row."""
    if head and tail and head[-1]["role"] == tail[0]["role"]:
        first = tail[0]["content"]
        first_blocks = [{"type": "text", "text": first}] if isinstance(first, str) else list(first)
        joined = {"role": tail[0]["role"], "content": list(head[-1]["content"]) + first_blocks}
        return head[:-1] + [joined] + tail[1:]
    return head + tail


def with_system(system: Any, context: str | None) -> Any:
    """The request's ``system`` with the gateway's context placed before it."""
    if not context:
        return system
    if system is None or system == "" or system == []:
        return context
    if isinstance(system, str):
        return f"{context}\n\n{system}"
    return [{"type": "text", "text": context}] + list(system)


# -- streamed answers -------------------------------------------------------------------------


class MessagesStreamAccumulator(JsonEventStream):
    """Rebuilds the assistant message from Anthropic stream events as they pass through."""

    def __init__(self) -> None:
        super().__init__()
        self._blocks: dict[int, dict[str, Any]] = {}

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "content_block_start":
            block = dict(event.get("content_block") or {})
            block.setdefault("text", "")
            block["partial_json"] = ""
            self._blocks[event.get("index", 0)] = block
        elif kind == "content_block_delta":
            block = self._blocks.setdefault(event.get("index", 0), {"type": "text", "text": "", "partial_json": ""})
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                block["text"] += delta.get("text", "")
            elif delta.get("type") == "input_json_delta":
                block["partial_json"] += delta.get("partial_json", "")
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            self.error = event.get("error") or event

    def message(self) -> dict[str, Any]:
        return assistant_to_openai(self.content())

    def content(self) -> list[dict[str, Any]]:
        blocks = []
        for index in sorted(self._blocks):
            block = self._blocks[index]
            if block.get("type") == "tool_use":
                try:
                    arguments = json.loads(block["partial_json"]) if block["partial_json"] else block.get("input") or {}
                except ValueError:
                    arguments = {}
                blocks.append({"type": "tool_use", "id": block.get("id", ""), "name": block.get("name", ""),
                               "input": arguments})
            elif block.get("type") == "text":
                blocks.append({"type": "text", "text": block["text"]})
        return blocks


# -- the format, as the proxy calls providers in it -------------------------------------------

# anthropic MessageCreateParams and its beta fields, plus the sampling parameters older
# models take. ``betas`` is not a body field: the SDK sends anthropic-beta.
_ACCEPTED = frozenset({
    "model", "messages", "max_tokens", "stream", "system", "metadata", "stop_sequences", "temperature", "top_k",
    "top_p", "tool_choice", "tools", "thinking", "service_tier", "container", "cache_control", "diagnostics",
    "inference_geo", "output_config", "speed", "user_profile_id", "workspace_id", "mcp_servers",
    "context_management", "compaction", "fallbacks", "fallback_credit_token", "billing_policy", "thread",
})
# What LiteLLM's Anthropic-format interface gets when a Messages request goes to a GPT model.
_TRANSLATED = frozenset({
    "messages", "max_tokens", "system", "stop_sequences", "temperature", "thinking", "tool_choice", "tools", "top_k",
    "top_p",
})


def _native_request(call: UpstreamCall) -> NativeRequest:
    return NativeRequest(call.settings.api_base + "/v1/messages",
                         {"anthropic-version": "2023-06-01", **call.headers, "x-api-key": call.api_key}, call.body)


def _bridge(litellm: Any, call: UpstreamCall) -> Bridge:
    from litellm.anthropic_interface import messages

    arguments = litellm_arguments(call, MESSAGES_FORMAT)
    return Bridge(request=lambda stream: messages.acreate(**arguments, stream=stream),
                  whole=lambda answer: answer if isinstance(answer, dict) else model_json(answer),
                  frames=lambda chunk: [chunk if isinstance(chunk, bytes) else str(chunk).encode()])


MESSAGES_FORMAT = WireFormat(
    name="messages", native_provider="anthropic", accepted=_ACCEPTED, translated=_TRANSLATED,
    native_request=_native_request, bridge=_bridge,
)
