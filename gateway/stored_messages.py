"""Reading stored chat messages (the OpenAI form history is kept in) without trusting their shape.

History is replayed into every provider's format. What an older version stored unchecked
(content parts of any type, ids that are not strings) must not make a later turn fail:
each converter reads stored values through these helpers, which turn what should be text
into text and report what cannot be carried over as absent.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple


def as_text(value: Any) -> str:
    """A stored id or text that should be a string, as one ("" for null, JSON for anything else)."""
    if isinstance(value, str):
        return value
    return "" if value is None else json.dumps(value, ensure_ascii=False)


def joined_text(content: Any) -> str:
    """The text of a stored content: the string itself, or its text parts joined."""
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return as_text(content)


def image_url(value: Any) -> str:
    """An image's URL from a string or a ``{"url": ...}`` object ("" when there is none)."""
    if isinstance(value, dict):
        value = value.get("url")
    return value if isinstance(value, str) else ""


def inline_image(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a ``data:<type>;base64,<data>`` URL; None for any other URL."""
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return media_type, data
    return None


class ToolCall(NamedTuple):
    call_id: str
    name: str
    arguments: dict[str, Any]
    # The arguments as stored (a JSON string in the OpenAI form).
    raw_arguments: str


def tool_calls(message: dict[str, Any]) -> list[ToolCall]:
    """A stored assistant message's tool calls; malformed ones are left out, unreadable arguments are {}."""
    calls = message.get("tool_calls")
    found = []
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        raw = function.get("arguments")
        arguments: Any = raw
        if isinstance(raw, str):
            try:
                arguments = json.loads(raw or "{}")
            except ValueError:
                arguments = {}
        found.append(ToolCall(as_text(call.get("id")), as_text(function.get("name")),
                              arguments if isinstance(arguments, dict) else {}, as_text(raw)))
    return found


def recorded_answer(message: dict[str, Any]) -> dict[str, Any]:
    """A provider's answer as history stores it: an assistant message whose content is text,
    a list of parts or null, and whose function calls carry string ids and names and JSON-text
    arguments. An OpenAI-compatible server answering off-spec (arguments as an object, a
    missing type) would otherwise have that stored and replayed to the next provider, which
    then refuses every later turn of the chat. The client still gets the answer as sent."""
    recorded = {key: value for key, value in message.items() if key not in ("role", "content", "tool_calls")}
    content = message.get("content")
    if isinstance(content, list):
        content = [part for part in content if isinstance(part, dict)]
    elif content is not None and not isinstance(content, str):
        content = as_text(content)
    recorded.update(role="assistant", content=content)
    calls = message.get("tool_calls")
    kept = [_recorded_call(call) for call in calls if isinstance(call, dict)] if isinstance(calls, list) else []
    if any(kept):
        recorded["tool_calls"] = [call for call in kept if call]
    return recorded


def _recorded_call(call: dict[str, Any]) -> dict[str, Any] | None:
    """A function call in the standard shape; another kind of call (a custom tool's) as sent;
    None for one that cannot be replayed."""
    kind = call.get("type", "function")
    if kind != "function":
        return call if isinstance(kind, str) else None
    function = call.get("function")
    if not isinstance(function, dict):
        return None
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps({} if arguments is None else arguments, ensure_ascii=False)
    return {**call, "id": as_text(call.get("id")), "type": "function",
            "function": {**function, "name": as_text(function.get("name")), "arguments": arguments}}
