"""What a summarizer is: the plugin protocol the rolling-summary job calls, shared by the
built-ins (``plugins.summarizers``) and third-party plugins (entry-point group
``mnx_gateway.summarizers``, built by ``gateway.registry`` with ``(config, providers)``).

A summarizer folds one chunk of a chat's stored messages into the rolling summary so far and
returns the new summary. ``transcript_lines`` is how a chunk reads as plain text; both built-ins
use it, so a tool call and its result read as a pair whichever one wrote the summary.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class SummaryRequest:
    # The rolling summary so far (None before the first chunk is folded in).
    previous: str | None
    # The chunk being folded in: OpenAI Chat Completions messages as stored (roles user /
    # assistant / tool, ``tool_calls``, ``tool_call_id``, ``name``, content a string or parts).
    messages: Sequence[dict[str, Any]]
    # About how many tokens the new summary may take.
    target_tokens: int
    # The chat's model, for counting tokens (gateway.summaries.tokens).
    model: str | None


@dataclass(frozen=True)
class Summary:
    text: str
    # How it was written: "extractive", "llm", or a plugin's own word.
    method: str


class Summarizer(Protocol):
    name: str

    def key_for(self, caller_keys: Mapping[str, str]) -> str | None:
        """The caller's own provider key for this summarizer's model, from the request's
        headers; None if it needs none. May raise ``gateway.errors.GatewayError`` when the
        caller brought none (as ``plugins.extractors.LLMExtractor.key_for`` does)."""
        ...

    async def summarize(self, request: SummaryRequest, *, api_key: str | None = None) -> Summary:
        """The new rolling summary: ``request.previous`` with ``request.messages`` folded in."""
        ...


# --- a chunk as text ---------------------------------------------------------------------------

# Non-text content parts, as they read in a transcript.
_PART_NAMES = {"image_url": "image", "image": "image", "input_image": "image", "input_audio": "audio",
               "audio": "audio", "file": "file", "input_file": "file", "document": "document"}
_SPEAKERS = {"user": "User", "assistant": "Assistant", "system": "System", "developer": "System"}
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class TranscriptLine:
    """One line of a chunk's transcript, with what is needed to pair a tool call with its result."""

    kind: Literal["said", "call", "result"]
    # "User", "Assistant", "System" (said), "Assistant" (call), "Tool" (result).
    speaker: str
    # What was said; a call's "<name>(<arguments>)"; a result's text.
    text: str
    # The tool's name (call, and result when known).
    tool: str | None = None
    # The call's id, on a call and on its result.
    call_id: str | None = None

    def render(self) -> str:
        if self.kind == "call":
            return f"Assistant called {self.text}"
        if self.kind == "result":
            return f"Tool {self.tool or self.call_id or 'result'} answered: {self.text}"
        return f"{self.speaker}: {self.text}"


def _one_line(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def _content_text(content: Any) -> str:
    """Text of a content string or parts list, a non-text part as "[image]", "[audio]"..."""
    if content is None:
        return ""
    if isinstance(content, str):
        return _one_line(content)
    if not isinstance(content, list):
        return _one_line(json.dumps(content, ensure_ascii=False))
    pieces = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            pieces.append(part["text"])
        else:
            kind = str(part.get("type") or "attachment")
            pieces.append(f"[{_PART_NAMES.get(kind, kind)}]")
    return _one_line(" ".join(pieces))


def _call_text(call: Any) -> tuple[str, str | None, str | None]:
    """(``name(arguments)``, name, id) of one stored ``tool_calls`` item."""
    if not isinstance(call, dict):
        return _one_line(json.dumps(call, ensure_ascii=False)), None, None
    function = call.get("function")
    if not isinstance(function, dict):
        function = {}
    name = str(function.get("name") or "a tool")
    arguments = function.get("arguments", "")
    if not isinstance(arguments, str):  # stored as the provider sent it: normally a JSON string
        arguments = json.dumps(arguments, ensure_ascii=False)
    call_id = call.get("id")
    return f"{name}({_one_line(arguments)})", name, call_id if isinstance(call_id, str) else None


def transcript(messages: Iterable[dict[str, Any]]) -> list[TranscriptLine]:
    """A chunk of stored messages as transcript lines (see ``transcript_lines``)."""
    lines: list[TranscriptLine] = []
    tool_names: dict[str, str] = {}  # call id -> the tool's name, to name its result
    for message in messages:
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id") if isinstance(message.get("tool_call_id"), str) else None
            name = message.get("name") if isinstance(message.get("name"), str) else None
            lines.append(TranscriptLine("result", "Tool", _content_text(message.get("content")),
                                        tool=name or tool_names.get(call_id or ""), call_id=call_id))
            continue
        speaker = _SPEAKERS.get(str(role), str(role).capitalize() or "Unknown")
        text = _content_text(message.get("content"))
        if text:
            lines.append(TranscriptLine("said", speaker, text))
        for call in message.get("tool_calls") or ():
            rendered, name, call_id = _call_text(call)
            if call_id and name:
                tool_names[call_id] = name
            lines.append(TranscriptLine("call", "Assistant", rendered, tool=name, call_id=call_id))
    return lines


def transcript_lines(messages: Iterable[dict[str, Any]]) -> list[str]:
    """How a chunk reads as text: "User: ...", "Assistant: ...", an assistant's tool call as
    "Assistant called <name>(<arguments JSON>)", a tool result as "Tool <name or call id>
    answered: <text>" (named after the call it answers when that call is in the chunk), and
    non-text parts as "[image]", "[audio]"... One line per utterance, whitespace collapsed."""
    return [line.render() for line in transcript(messages)]
