"""Reading an OpenAI chat-completion event stream as it passes through.

The gateway forwards the provider's bytes unchanged (so nothing is lost or
re-framed) and, on the side, rebuilds the assistant message they carry, for
history. A stream only counts as complete when it ended the way a provider ends
one: a ``finish_reason`` or the ``[DONE]`` sentinel, and no error event.
"""

from __future__ import annotations

import json
from typing import Any


def sse_frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


DONE_FRAME = b"data: [DONE]\n\n"


class JsonEventStream:
    """Reads server-sent events as they pass, handing each ``data:`` JSON object to ``on_event``.

    Subclasses rebuild one format's answer; ``done`` is set when the format's own end
    marker arrives and ``error`` when the stream carries an error event.
    """

    def __init__(self) -> None:
        self._pending = b""
        self.done = False
        self.error: Any = None

    @property
    def completed(self) -> bool:
        return self.error is None and self.done

    def feed(self, data: bytes) -> None:
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            raw = line[5:].strip()
            if raw == b"[DONE]":
                self.done = True
                continue
            try:
                event = json.loads(raw)
            except ValueError:
                continue  # Comments and keep-alives are not ours to judge.
            if isinstance(event, dict):
                self.on_event(event)

    def on_event(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    def message(self) -> dict[str, Any]:
        """The assistant message so far, in the OpenAI form history is stored in."""
        raise NotImplementedError


class ChatStreamAccumulator(JsonEventStream):
    def __init__(self) -> None:
        super().__init__()
        self._text: list[str] = []
        self._tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None

    @property
    def completed(self) -> bool:
        return self.error is None and (self.done or self.finish_reason is not None)

    def on_event(self, chunk: dict[str, Any]) -> None:
        if chunk.get("error"):
            self.error = chunk["error"]
            return
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                self._text.append(delta["content"])
            for call in delta.get("tool_calls") or []:
                self._merge_tool_call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def _merge_tool_call(self, fragment: dict[str, Any]) -> None:
        slot = self._tool_calls.setdefault(fragment.get("index", 0),
                                           {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        if fragment.get("id"):
            slot["id"] = fragment["id"]
        function = fragment.get("function") or {}
        if function.get("name"):
            slot["function"]["name"] += function["name"]
        if function.get("arguments"):
            slot["function"]["arguments"] += function["arguments"]

    def message(self) -> dict[str, Any]:
        """The assistant message the stream delivered."""
        text = "".join(self._text)
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if self._tool_calls:
            message["tool_calls"] = [self._tool_calls[i] for i in sorted(self._tool_calls)]
        elif message["content"] is None:
            message["content"] = ""
        return message
