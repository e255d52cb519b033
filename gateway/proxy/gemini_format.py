"""The Gemini ``generateContent`` format: its contents <-> the OpenAI chat message form history is
stored in, its request fields, its native request and its LiteLLM bridge."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from gateway.errors import BadRequest
from gateway.proxy.body_fields import translated_fields
from gateway.proxy.litellm_bridge import gateway_arguments, model_json
from gateway.proxy.sse import JsonEventStream
from gateway.proxy.wire import Bridge, NativeRequest, UpstreamCall, WireFormat
from gateway.stored_messages import as_text, image_url, inline_image, joined_text, tool_calls

# The fields of a GenerateContentResponse; the google-genai SDK rejects any other.
RESPONSE_FIELDS = ("candidates", "promptFeedback", "usageMetadata", "modelVersion", "responseId", "createTime")


def contents_to_messages(contents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gemini ``contents`` as chat messages (function responses become ``tool`` messages)."""
    messages: list[dict[str, Any]] = []
    for content in contents:
        parts = content.get("parts") or []
        if content.get("role") == "model":
            messages.append(parts_to_assistant(parts))
            continue
        chat_parts: list[dict[str, Any]] = []
        for part in parts:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                chat_parts.append({"type": "text", "text": part["text"]})
            elif isinstance(part.get("inlineData"), dict):
                data = part["inlineData"]
                chat_parts.append({"type": "image_url", "image_url": {
                    "url": f"data:{data.get('mimeType', 'image/png')};base64,{data.get('data', '')}"}})
            elif isinstance(part.get("functionResponse"), dict):
                response = part["functionResponse"]
                messages.append({"role": "tool", "tool_call_id": response.get("id") or response.get("name", ""),
                                 "name": response.get("name", ""),
                                 "content": json.dumps(response.get("response", {}), ensure_ascii=False)})
        if chat_parts:
            only_text = all(p["type"] == "text" for p in chat_parts)
            messages.append({"role": "user",
                             "content": "".join(p["text"] for p in chat_parts) if only_text else chat_parts})
    return messages


def parts_to_assistant(parts: list[dict[str, Any]]) -> dict[str, Any]:
    parts = [p for p in parts if isinstance(p, dict)]
    text = "".join(p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought"))
    calls = [{"id": p["functionCall"].get("id") or p["functionCall"].get("name", ""), "type": "function",
              "function": {"name": p["functionCall"].get("name", ""),
                           "arguments": json.dumps(p["functionCall"].get("args") or {})}}
             for p in parts if isinstance(p.get("functionCall"), dict)]
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = calls
    return message


def _user_parts(content: Any) -> list[dict[str, Any]]:
    """A stored user content as Gemini parts; parts that cannot be carried over are left out."""
    if not isinstance(content, list):
        return [{"text": as_text(content)}]
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            parts.append({"text": part})
        elif not isinstance(part, dict):
            continue
        elif part.get("type") == "text" and isinstance(part.get("text"), str):
            parts.append({"text": part["text"]})
        elif part.get("type") == "image_url":
            # Only inline (data:) images travel; Gemini does not fetch an image URL.
            inline = inline_image(image_url(part.get("image_url")))
            if inline is not None:
                parts.append({"inlineData": {"mimeType": inline[0], "data": inline[1]}})
    return parts


def messages_to_contents(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored history as Gemini ``contents``, merging same-role neighbours.

    Whatever shape a stored turn has (older versions stored content parts unchecked), this does not
    raise: a part it cannot carry over is left out, a value that should be text is made text.
    """
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for message in messages:
        if not isinstance(message, dict):
            continue
        role, content = message.get("role"), message.get("content")
        if role == "user":
            add("user", _user_parts(content))
        elif role == "assistant":
            text = joined_text(content)
            parts: list[dict[str, Any]] = [{"text": text}] if text else []
            for call in tool_calls(message):
                call_names[call.call_id] = call.name
                parts.append({"functionCall": {"name": call.name, "args": call.arguments}})
            add("model", parts)
        elif role == "tool":
            call_id = as_text(message.get("tool_call_id"))
            try:
                response = json.loads(content) if isinstance(content, str) else content
            except ValueError:
                response = {"content": content}
            if not isinstance(response, dict):
                response = {"content": response}
            name = message.get("name")
            add("user", [{"functionResponse": {"name": name if isinstance(name, str) and name
                                               else call_names.get(call_id, call_id),
                                               "response": response}}])
    return contents


def merge_contents(head: list[dict[str, Any]], tail: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if head and tail and head[-1]["role"] == tail[0].get("role", "user"):
        joined = {"role": head[-1]["role"], "parts": list(head[-1]["parts"]) + list(tail[0].get("parts") or [])}
        return head[:-1] + [joined] + tail[1:]
    return head + tail


def with_system_instruction(existing: Any, context: str | None) -> Any:
    if not context:
        return existing
    parts = [{"text": context}]
    if isinstance(existing, dict):
        own = existing.get("parts")
        return {**existing, "parts": parts + (own if isinstance(own, list) else [])}
    if isinstance(existing, str):
        parts.append({"text": existing})
    return {"parts": parts}


def response_message(response: dict[str, Any]) -> dict[str, Any] | None:
    candidates = response.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        return None
    return parts_to_assistant(((candidates[0] or {}).get("content") or {}).get("parts") or [])


class GeminiStreamAccumulator(JsonEventStream):
    """Rebuilds the answer from streamed GenerateContentResponse chunks; a finishReason ends it."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[dict[str, Any]] = []

    def on_event(self, chunk: dict[str, Any]) -> None:
        if chunk.get("error"):
            self.error = chunk["error"]
            return
        for candidate in (chunk.get("candidates") or [])[:1]:
            self._parts.extend((candidate.get("content") or {}).get("parts") or [])
            if candidate.get("finishReason"):
                self.done = True

    def message(self) -> dict[str, Any]:
        return parts_to_assistant(self._parts)


# -- the format, as the proxy calls providers in it -------------------------------------------

# Google's JSON parser takes proto field names too, and its own REST examples use them;
# the Gemini surface renames them to the camelCase the gateway reads.
GEMINI_SNAKE_CASE = {"system_instruction": "systemInstruction", "tool_config": "toolConfig",
                     "safety_settings": "safetySettings", "generation_config": "generationConfig",
                     "cached_content": "cachedContent", "service_tier": "serviceTier"}
# Gemini GenerateContentRequest (the model and the streaming choice travel in the URL).
_ACCEPTED = frozenset({
    "model", "contents", "systemInstruction", "tools", "toolConfig", "safetySettings", "generationConfig",
    "cachedContent", "labels", "serviceTier", "store", *GEMINI_SNAKE_CASE,
})
# The bridge below names each argument of litellm's agenerate_content itself.
_TRANSLATED = frozenset({"contents", "systemInstruction", "tools", "generationConfig"})


def camel_case_gemini_fields(body: dict[str, Any]) -> None:
    """Rename Gemini's snake_case request fields to the camelCase the gateway reads (both
    spellings of one field is a 400: which one would win is not the caller's to guess)."""
    for snake, camel in GEMINI_SNAKE_CASE.items():
        if snake in body:
            if camel in body:
                raise BadRequest(f"{snake} and {camel} are the same field: send one", code="duplicate_parameter",
                                 param=snake)
            body[camel] = body.pop(snake)


def gemini_response_only(answer: dict[str, Any]) -> dict[str, Any]:
    """Drop what LiteLLM adds to a Gemini response (e.g. "text"): the google-genai SDK rejects it."""
    return {k: v for k, v in answer.items() if k in RESPONSE_FIELDS}


def _native_request(call: UpstreamCall) -> NativeRequest:
    # Gemini carries the model and the streaming choice in the URL, not the body.
    action = "streamGenerateContent?alt=sse" if call.body.get("stream") else "generateContent"
    # The model is one path segment: escaped, a "?" or "#" in it cannot add to the URL
    # (and route_model already refused every character outside letters, digits and ._:@+-).
    url = f"{call.settings.api_base}/models/{urllib.parse.quote(call.route.model, safe='')}:{action}"
    body = {k: v for k, v in call.body.items() if k not in ("model", "stream")}
    return NativeRequest(url, {"x-goog-api-key": call.api_key}, body, fixed_url=False)


def _frames(chunk: Any) -> list[bytes]:
    raw = chunk if isinstance(chunk, bytes) else str(chunk).encode()
    return [b"data: " + json.dumps(gemini_response_only(json.loads(line[5:]))).encode() + b"\n\n"
            for line in raw.split(b"\n") if line.startswith(b"data:")]


def _bridge(litellm: Any, call: UpstreamCall) -> Bridge:
    from litellm.google_genai import agenerate_content, agenerate_content_stream

    fields = translated_fields(call.body, GEMINI_FORMAT)
    # LiteLLM's google_genai functions name the fields in snake case ("config"), so they are passed
    # one by one, then the gateway's own arguments, as every bridge passes them.
    arguments = {
        "contents": fields["contents"], "config": fields.get("generationConfig"), "tools": fields.get("tools"),
        "systemInstruction": fields.get("systemInstruction"),
        **gateway_arguments(call),
    }
    return Bridge(request=lambda stream: (agenerate_content_stream if stream else agenerate_content)(**arguments),
                  whole=lambda answer: gemini_response_only(answer if isinstance(answer, dict) else model_json(answer)),
                  frames=_frames)


GEMINI_FORMAT = WireFormat(
    name="gemini", native_provider="gemini", accepted=_ACCEPTED, translated=_TRANSLATED,
    native_request=_native_request, bridge=_bridge,
)
