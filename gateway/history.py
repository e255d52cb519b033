"""Chat history: the turns of each conversation, per project / subject / chat.

Turns are stored as they were exchanged, tool calls included, so replaying them
gives the provider a valid sequence (an assistant ``tool_calls`` message followed
by its ``tool`` results). Replay is cut to a token budget, oldest turns first; for
provider prompt caches (``mnx.cache``) the cut moves in whole chunks of messages.
"""

from __future__ import annotations

import json
from typing import Any
from collections.abc import Iterable

from gateway.clock import now_iso
from gateway.ids import ordered_id
from gateway.store import Collection, DocumentStore

MESSAGES = Collection("chat_messages", indexes=(("subject_id", "chat_id"), ("chat_id",), ("subject_id",)))
CHATS = Collection("chats", indexes=(("subject_id",), ("chat_id",)))


def content_text(content: Any) -> str:
    """The readable text of an OpenAI message content (string, parts list or null)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "\n".join(texts)
    return json.dumps(content, ensure_ascii=False)


def estimate_tokens(message: dict[str, Any]) -> int:
    """A cheap, tokenizer-free estimate (about 4 characters a token, plus framing).

    It only has to keep replayed history safely inside a budget; exact counts would
    need a model-specific tokenizer on the hot path.
    """
    size = len(content_text(message.get("content")))
    if message.get("tool_calls"):
        size += len(json.dumps(message["tool_calls"]))
    if isinstance(message.get("content"), list):
        # Non-text parts (images, audio) cost tokens the text length doesn't show.
        size += 340 * sum(1 for p in message["content"] if isinstance(p, dict) and "text" not in p)
    return 4 + (size + 3) // 4


def _chat_doc_id(subject_id: str, chat_id: str) -> str:
    return f"{len(subject_id)}:{subject_id}:{chat_id}"


def _fitting_start(messages: list[dict[str, Any]], token_budget: int) -> int:
    """Where the newest run of ``messages`` whose estimated size fits the budget begins."""
    used = 0
    start = len(messages)
    while start > 0:
        cost = estimate_tokens(messages[start - 1])
        if used + cost > token_budget:
            break
        used += cost
        start -= 1
    return start


def _without_leading_tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Providers reject a ``tool`` result with no assistant ``tool_calls`` before it, so a
    replayed window never starts on one."""
    start = 0
    while start < len(messages) and messages[start].get("role") == "tool":
        start += 1
    return messages[start:]


def fit_to_budget(messages: list[dict[str, Any]], token_budget: int) -> list[dict[str, Any]]:
    """The newest messages whose estimated size fits the budget, in order.

    A kept ``tool`` message whose assistant ``tool_calls`` message was cut is dropped
    too: providers reject a tool result with no call before it.
    """
    return _without_leading_tool_results(messages[_fitting_start(messages, token_budget):])


def fit_to_budget_in_chunks(messages: list[dict[str, Any]], token_budget: int, *, first_position: int,
                            chunk: int) -> list[dict[str, Any]]:
    """Like ``fit_to_budget``, but the cut falls only on whole chunks of the chat.

    ``messages`` are the chat's newest messages, the first of them at ``first_position`` in the
    chat (0 = its first stored message). The window the budget allows is shortened so that it
    starts at a chat position that is a multiple of ``chunk``: as the chat grows, the window's
    start then stays put for up to ``chunk`` messages and moves a whole chunk at once, instead
    of one message per turn. Rounding the start up (later) keeps the window inside the budget.

    When the budget holds fewer messages than a chunk (long messages), rounding up would leave
    some turns little or no history: a window under half of what the plain cut keeps falls back
    to the plain cut (that turn's prefix changes; the conversation is not forgotten).
    """
    fitting = _fitting_start(messages, token_budget)
    chunk_start = -(-(first_position + fitting) // chunk) * chunk
    kept = messages[chunk_start - first_position:]
    if 2 * len(kept) < len(messages) - fitting:
        kept = messages[fitting:]
    return _without_leading_tool_results(kept)


def to_stored(message: dict[str, Any], *, subject_id: str, chat_id: str, event_time: str,
              metadata: dict[str, Any] | None, model: str | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "subject_id": subject_id,
        "chat_id": chat_id,
        "role": message.get("role", "user"),
        "content": message.get("content"),
        "event_time": event_time,
    }
    for optional in ("tool_calls", "tool_call_id", "name"):
        if message.get(optional):
            doc[optional] = message[optional]
    if metadata:
        doc["metadata"] = metadata
    if model:
        doc["model"] = model
    return doc


def _unmarked(items: Any) -> Any:
    """A list of parts or tool calls without the ``cache_control`` marks on its items."""
    if not isinstance(items, list):
        return items
    return [{key: value for key, value in item.items() if key != "cache_control"}
            if isinstance(item, dict) and "cache_control" in item else item for item in items]


def to_replay(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored turn as an OpenAI Chat Completions message.

    Without the client's ``cache_control`` marks on its parts and tool calls: they marked that
    turn's request, and replayed on every later turn they would pile up past the 4 Anthropic
    takes (a 400)."""
    message: dict[str, Any] = {"role": doc["role"], "content": _unmarked(doc.get("content"))}
    for optional in ("tool_calls", "tool_call_id", "name"):
        if doc.get(optional):
            message[optional] = _unmarked(doc[optional]) if optional == "tool_calls" else doc[optional]
    if message["content"] is None and doc["role"] != "assistant":
        message["content"] = ""
    return message


def to_api(doc: dict[str, Any], index: int) -> dict[str, Any]:
    """A stored turn in the shape ``GET /chat/history/read`` returns (contract §5)."""
    text = content_text(doc.get("content"))
    return {
        "role": doc["role"],
        "message": text,
        "content": text,
        "message_index": index,
        "event_time": doc["event_time"],
        "created_at": doc["event_time"],
        "tool_call_id": doc.get("tool_call_id") or "",
        "tool_calls": json.dumps(doc["tool_calls"], ensure_ascii=False) if doc.get("tool_calls") else "",
        "memory_ids": doc.get("memory_ids", []),
        "chat_id": doc["chat_id"],
        "subject_id": doc["subject_id"],
    }


class ChatHistory:
    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    async def append(self, project_id: str, subject_id: str, chat_id: str, messages: Iterable[dict[str, Any]],
                     *, metadata: dict[str, Any] | None = None, model: str | None = None) -> list[str]:
        """Store a turn's messages; returns their ids, in order."""
        stamp = now_iso()
        docs = [(ordered_id("msg_"),
                 to_stored(m, subject_id=subject_id, chat_id=chat_id, event_time=stamp, metadata=metadata, model=model))
                for m in messages]
        if not docs:
            return []
        await self._store.put_many(MESSAGES, project_id, docs)
        # One small document per chat makes listing a subject's chats cheap; it holds
        # only what changes (the chat's start is its first message, read on listing).
        await self._store.put(CHATS, project_id, _chat_doc_id(subject_id, chat_id),
                              {"subject_id": subject_id, "chat_id": chat_id, "last_time": stamp})
        return [doc_id for doc_id, _ in docs]

    async def replay(self, project_id: str, subject_id: str, chat_id: str, *, token_budget: int,
                     max_messages: int, chunk: int | None = None) -> list[dict[str, Any]]:
        """The chat's prior turns as provider messages, cut to the budget (and ``max_messages``),
        oldest first.

        With ``chunk`` (cache mode) the cut moves only in whole chunks of the chat's messages
        (``fit_to_budget_in_chunks``). Provider prompt caches reuse the longest request prefix
        they saw before; a cut that drops one old message per turn changes the replayed prefix,
        and so misses the cache, on every turn of a chat longer than the budget. The price is
        one count of the chat's messages per turn, and up to ``chunk - 1`` fewer messages
        replayed than the budget would allow.
        """
        where = {"subject_id": subject_id, "chat_id": chat_id}
        docs = await self._store.find(MESSAGES, project_id, where, limit=max_messages, newest_first=True)
        docs.reverse()
        messages = [to_replay(d) for d in docs]
        if chunk is None:
            return fit_to_budget(messages, token_budget)
        # The newest messages read are the chat's last ones: the first of them is at total - read.
        # (A turn stored between the two reads only shifts this turn's cut: rounding up keeps
        # it inside the budget whatever the count.)
        total = await self._store.count(MESSAGES, project_id, where)
        first_position = max(0, total - len(messages))
        return fit_to_budget_in_chunks(messages, token_budget, first_position=first_position, chunk=chunk)

    async def read(self, project_id: str, chat_id: str, subject_id: str | None, limit: int) -> list[dict[str, Any]]:
        where = {"subject_id": subject_id, "chat_id": chat_id} if subject_id else {"chat_id": chat_id}
        docs = await self._store.find(MESSAGES, project_id, where, limit=limit)
        return [to_api(doc, index) for index, doc in enumerate(docs)]

    async def list_chats(self, project_id: str, subject_id: str, *, limit: int, offset: int) -> list[dict[str, Any]]:
        chats = await self._store.find(CHATS, project_id, {"subject_id": subject_id})
        chats.sort(key=lambda c: c["last_time"], reverse=True)
        page = chats[offset:offset + limit]
        rows = []
        for chat in page:
            where = {"subject_id": subject_id, "chat_id": chat["chat_id"]}
            count = await self._store.count(MESSAGES, project_id, where)
            first = await self._store.find(MESSAGES, project_id, where, limit=1)
            rows.append({
                "chat_id": chat["chat_id"], "subject_id": subject_id, "message_count": count,
                "created_at": first[0]["event_time"] if first else chat["last_time"], "last_time": chat["last_time"],
                "last_message_at": chat["last_time"], "updated_at": chat["last_time"],
            })
        return rows

    async def delete_chat(self, project_id: str, chat_id: str, subject_id: str | None) -> int:
        if subject_id:
            removed = await self._store.delete_where(MESSAGES, project_id,
                                                     {"subject_id": subject_id, "chat_id": chat_id})
            await self._store.delete(CHATS, project_id, _chat_doc_id(subject_id, chat_id))
            return removed
        removed = await self._store.delete_where(MESSAGES, project_id, {"chat_id": chat_id})
        await self._store.delete_where(CHATS, project_id, {"chat_id": chat_id})
        return removed

    async def delete_subject(self, project_id: str, subject_id: str) -> int:
        """Every message and chat of one subject (erasure); returns the messages removed."""
        removed = await self._store.delete_where(MESSAGES, project_id, {"subject_id": subject_id})
        await self._store.delete_where(CHATS, project_id, {"subject_id": subject_id})
        return removed
