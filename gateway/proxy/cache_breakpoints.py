"""Anthropic prompt-cache breakpoints, added to a forwarded request in cache mode (``mnx.cache``).

OpenAI and Gemini reuse a cached prompt prefix on their own; Anthropic caches only up to a
block marked ``cache_control``. Cache mode keeps the gateway's system text and the replayed
history byte-identical from turn to turn (gateway/pipeline/context.py), so two marks cover
what a chat can reuse: the end of the gateway's stable system text, and the end of the
replayed history. Next turn the history ends one exchange later; Anthropic, looking back
from the new mark, finds the prefix cached at this one. Two of the four marks Anthropic
allows, so a client still has room for its own.

A request that already carries any ``cache_control`` of the client's own is forwarded as it
is: the client has placed its breakpoints, and more of ours could push the count past
Anthropic's limit, a 400. (Replayed history carries none: gateway/history.py ``to_replay``.)

Two forms get marks: the native Anthropic body (``/messages`` with a claude model) and the
OpenAI chat body LiteLLM translates for a claude model (``/chat/completions``), where text
parts carry ``cache_control`` through to Anthropic's blocks (LiteLLM's
litellm_core_utils/prompt_templates/factory.py). Each function finds the gateway's parts by
where the surface put them (its ``with_context``) and checks it found them: a body laid out
any other way gets no mark rather than a misplaced one.
"""

from __future__ import annotations

from typing import Any

from gateway.pipeline.context import AssembledContext
from gateway.proxy.anthropic_format import to_anthropic_messages

# How with_system (gateway/proxy/anthropic_format.py) joins the gateway's text and a string system.
_SYSTEM_JOINER = "\n\n"


def _marked(block: dict[str, Any]) -> dict[str, Any]:
    return {**block, "cache_control": {"type": "ephemeral"}}


def _has_mark(value: Any) -> bool:
    return isinstance(value, dict) and value.get("cache_control") is not None


def _any_marked(values: Any) -> bool:
    return isinstance(values, list) and any(_has_mark(value) for value in values)


def carries_cache_control(body: dict[str, Any]) -> bool:
    """Whether the body marks a breakpoint anywhere Anthropic (or LiteLLM, translating) reads one:
    top level, tools, system blocks, messages, their blocks or parts, tool calls, tool results' blocks."""
    if _has_mark(body) or _any_marked(body.get("tools")) or _any_marked(body.get("system")):
        return True
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        if _has_mark(message) or _any_marked(message.get("tool_calls")):
            return True
        content = message.get("content")
        if _any_marked(content):
            return True
        if isinstance(content, list) and any(isinstance(block, dict) and _any_marked(block.get("content"))
                                             for block in content):
            return True
    return False


# -- native Anthropic (/messages) --------------------------------------------------------------


def _marked_system(system: Any, gateway_text: str) -> list[dict[str, Any]] | None:
    """``system`` as text blocks, the gateway's own (first) marked; None if it is not where
    with_system puts it."""
    own = _marked({"type": "text", "text": gateway_text})
    if system == gateway_text:
        return [own]
    if isinstance(system, str) and system.startswith(gateway_text + _SYSTEM_JOINER):
        return [own, {"type": "text", "text": system[len(gateway_text) + len(_SYSTEM_JOINER):]}]
    if isinstance(system, list) and system and system[0] == {"type": "text", "text": gateway_text}:
        return [own, *system[1:]]
    return None


def messages_breakpoints(body: dict[str, Any], context: AssembledContext) -> dict[str, Any]:
    """A native Anthropic body with the gateway's system text and the replayed history's last block
    marked. The history is the first messages (gateway/proxy/messages.py: merge_messages may join
    its last message with the request's first, the history's blocks first)."""
    if carries_cache_control(body):
        return body
    marked = dict(body)
    if context.system_text:
        system = _marked_system(body.get("system"), context.system_text)
        if system is not None:
            marked["system"] = system
    history = to_anthropic_messages(context.history)
    messages = body.get("messages")
    if history and isinstance(messages, list) and len(messages) >= len(history):
        at, last_blocks = len(history) - 1, history[-1]["content"]
        message = messages[at]
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and content[:len(last_blocks)] == last_blocks:
            end = len(last_blocks) - 1
            messages = list(messages)
            messages[at] = {**message, "content": [*content[:end], _marked(content[end]), *content[end + 1:]]}
            marked["messages"] = messages
    return marked


# -- OpenAI chat form, translated to Anthropic by LiteLLM (/chat/completions) -------------------


def _with_last_text_marked(message: dict[str, Any]) -> dict[str, Any] | None:
    """``message`` with its last non-empty text part marked (a string content becomes one text
    part); None if it has none. A tool message counts as having none: its text becomes the
    inside of a tool_result block, not a block of the message Anthropic reads marks on."""
    if message.get("role") == "tool":
        return None
    content = message.get("content")
    if isinstance(content, str) and content:
        return {**message, "content": [_marked({"type": "text", "text": content})]}
    if not isinstance(content, list):
        return None
    for index in range(len(content) - 1, -1, -1):
        part = content[index]
        # LiteLLM drops empty text parts (Anthropic refuses them), and their marks with them.
        if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str) \
                and part["text"]:
            return {**message, "content": [*content[:index], _marked(part), *content[index + 1:]]}
    return None


def chat_breakpoints(body: dict[str, Any], context: AssembledContext) -> dict[str, Any]:
    """An OpenAI chat body for a claude model with the gateway's system message and the replayed
    history's last text marked, as content parts. The body is [gateway system] + history + the
    request's messages (``AssembledContext.chat_messages``).

    A history that ends in messages with no text (an assistant's tool calls with null content,
    tool results) is marked at the closest earlier message that has text: the cached prefix then
    stops a few blocks short of the history's end (those are read again each turn), still within
    the 20 blocks Anthropic looks back over from the next turn's mark. No text in the whole
    history: no history mark."""
    if carries_cache_control(body):
        return body
    messages = list(body.get("messages") or ())
    start = 0
    if context.system_text:
        if not messages or messages[0] != {"role": "system", "content": context.system_text}:
            return body  # not laid out as chat_messages does: mark nothing rather than the wrong thing
        messages[0] = {"role": "system", "content": [_marked({"type": "text", "text": context.system_text})]}
        start = 1
    end = start + len(context.history)
    if messages[start:end] != context.history:
        end = start  # the history is not where chat_messages puts it: no history mark
    for at in range(end - 1, start - 1, -1):
        with_mark = _with_last_text_marked(messages[at])
        if with_mark is not None:
            messages[at] = with_mark
            break
    return {**body, "messages": messages}
