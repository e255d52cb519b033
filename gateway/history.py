"""Chat history: the turns of each conversation, per project / subject / chat.

Turns are stored as they were exchanged, tool calls included, so replaying them
gives the provider a valid sequence (an assistant ``tool_calls`` message followed
by its ``tool`` results). Replay is cut to a token budget, oldest turns first; for
provider prompt caches (``mnx.cache``) the cut moves in whole chunks of messages.

Each stored message carries its id and its token count (``gateway.summaries.tokens``: the
model's tokenizer where there is one), counted once when stored. A replay reads the chat
newest first, a page at a time, and stops where the budget is spent (or at a rolling
summary's last message, ``gateway.summaries``): its cost follows what it replays, not how
long the chat has grown.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterable

from gateway.clock import now_iso
from gateway.ids import ordered_id
from gateway.store import Collection, DocumentStore
from gateway.summaries.store import ChatSummaries
from gateway.summaries.tokens import content_text, count_tokens, estimate_tokens

MESSAGES = Collection("chat_messages", indexes=(("subject_id", "chat_id"), ("chat_id",), ("subject_id",)))
CHATS = Collection("chats", indexes=(("subject_id",), ("chat_id",)))


# The first page a replay reads, newest first; each next page is twice as long.
_FIRST_PAGE = 32
# A chat's next replay is about as long as its last one: the first page is that long plus this
# many (the turn stored since, and the one message that shows the budget is spent), so a chat
# past its budget is usually read in one query instead of three.
_PAGE_SLACK = 8
# Chats whose last replay length is remembered (in process; the least recently replayed go first).
_REMEMBERED_WINDOWS = 4096


class ChatRewritten(Exception):
    """The chat no longer holds the messages a rolling summary was made of (it was deleted)."""


@dataclass(frozen=True)
class HistoryWindow:
    """The newest messages of a chat that fit a replay, oldest first."""

    # As stored (with ``message_id`` and ``tokens``).
    docs: list[dict[str, Any]]
    # Their replay form (``to_replay``), in the same order.
    messages: list[dict[str, Any]]
    # Each one's token count.
    costs: list[int]
    # True when nothing older was left out: the window reaches the chat's start (or the end of
    # the rolling summary it was read after).
    complete: bool
    # The next older message did not fit the budget (as opposed to: max_messages were read).
    budget_full: bool = False
    # Read after a summary's last message and never met it: the summary is of messages gone.
    anchor_missing: bool = False

    @classmethod
    def of(cls, newest_first: list[dict[str, Any]], costs: list[int], *, complete: bool,
           budget_full: bool = False, anchor_missing: bool = False) -> HistoryWindow:
        docs = newest_first[::-1]
        return cls(docs, [to_replay(doc) for doc in docs], costs[::-1], complete, budget_full, anchor_missing)

    @property
    def tokens(self) -> int:
        return sum(self.costs)

    def replayable(self) -> list[dict[str, Any]]:
        """The messages, starting at a turn's start when older ones were left out (``from_a_turns_start``)."""
        return from_a_turns_start(self.messages, cut=not self.complete)


def _chat_doc_id(subject_id: str, chat_id: str) -> str:
    return f"{len(subject_id)}:{subject_id}:{chat_id}"


def stored_tokens(doc: dict[str, Any]) -> int:
    """A stored message's token count: the one counted when it was stored, else the estimate."""
    tokens = doc.get("tokens")
    return tokens if isinstance(tokens, int) else estimate_tokens(to_replay(doc))


def _fitting_start(messages: list[dict[str, Any]], token_budget: int, costs: list[int] | None = None) -> int:
    """Where the newest run of ``messages`` whose size (``costs``, else estimated) fits the budget begins."""
    used = 0
    start = len(messages)
    while start > 0:
        cost = costs[start - 1] if costs is not None else estimate_tokens(messages[start - 1])
        if used + cost > token_budget:
            break
        used += cost
        start -= 1
    return start


def from_a_turns_start(messages: list[dict[str, Any]], *, cut: bool) -> list[dict[str, Any]]:
    """``messages`` without what a replay must not start with.

    Never a ``tool`` result: providers reject one with no assistant ``tool_calls`` before it.
    And when older messages were cut away (``cut``), nothing before the first user message:
    Anthropic and Gemini refuse a conversation that opens with the assistant's (or model's)
    turn, so a window cut inside a turn starts at the next one. A chat replayed from its very
    start is left as the client wrote it."""
    start = 0
    while start < len(messages) and (messages[start].get("role") == "tool" or
                                     (cut and messages[start].get("role") != "user")):
        start += 1
    return messages[start:]


def fit_to_budget(messages: list[dict[str, Any]], token_budget: int) -> list[dict[str, Any]]:
    """The newest messages whose estimated size fits the budget, in order.

    A cut window starts at a user message (``from_a_turns_start``): a kept ``tool`` result whose
    assistant ``tool_calls`` message was cut, or an assistant answer whose question was, goes too.
    """
    start = _fitting_start(messages, token_budget)
    return from_a_turns_start(messages[start:], cut=start > 0)


def fit_to_budget_in_chunks(messages: list[dict[str, Any]], token_budget: int, *, first_position: int,
                            chunk: int, costs: list[int] | None = None) -> list[dict[str, Any]]:
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
    fitting = _fitting_start(messages, token_budget, costs)
    chunk_start = -(-(first_position + fitting) // chunk) * chunk
    kept = messages[chunk_start - first_position:]
    if 2 * len(kept) < len(messages) - fitting:
        kept = messages[fitting:]
    return from_a_turns_start(kept, cut=first_position + len(messages) - len(kept) > 0)


def to_stored(message: dict[str, Any], *, subject_id: str, chat_id: str, event_time: str,
              metadata: dict[str, Any] | None, model: str | None, message_id: str = "") -> dict[str, Any]:
    doc: dict[str, Any] = {
        # Its own id, in the body too: a rolling summary names the last message it covers, and
        # a replay reading newest first stops there.
        "message_id": message_id,
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
    doc["tokens"] = count_tokens(message, model)
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
    def __init__(self, store: DocumentStore, summaries: ChatSummaries | None = None) -> None:
        self._store = store
        # The chats' rolling summaries, deleted with the history they summarize.
        self.summaries = summaries or ChatSummaries(store)
        # How many messages each recently replayed chat's last window held (the first page's size).
        self._window_sizes: OrderedDict[tuple[str, str, str], int] = OrderedDict()

    async def append(self, project_id: str, subject_id: str, chat_id: str, messages: Iterable[dict[str, Any]],
                     *, metadata: dict[str, Any] | None = None, model: str | None = None) -> list[str]:
        """Store a turn's messages; returns their ids, in order."""
        stamp = now_iso()
        ids = [ordered_id("msg_") for _ in messages]
        docs = [(message_id, to_stored(m, subject_id=subject_id, chat_id=chat_id, event_time=stamp,
                                       metadata=metadata, model=model, message_id=message_id))
                for message_id, m in zip(ids, messages)]
        if not docs:
            return []
        await self._store.put_many(MESSAGES, project_id, docs)
        # One small document per chat makes listing a subject's chats cheap; it holds
        # only what changes (the chat's start is its first message, read on listing).
        await self._store.put(CHATS, project_id, _chat_doc_id(subject_id, chat_id),
                              {"subject_id": subject_id, "chat_id": chat_id, "last_time": stamp})
        return [doc_id for doc_id, _ in docs]

    async def window(self, project_id: str, subject_id: str, chat_id: str, *, token_budget: int,
                     max_messages: int, after_id: str | None = None,
                     after_count: int | None = None) -> HistoryWindow:
        """The chat's newest messages that fit ``token_budget`` (and ``max_messages``), oldest first.

        Read newest first, a page at a time (as many as the chat's last replay held, then twice as
        many each page), stopping
        at the first message that no longer fits: a chat of 5,000 messages costs what its last
        budget's worth costs. ``after_id`` (a rolling summary's last message) stops the read just
        after that message; for a summary of messages stored without ids, ``after_count`` says how
        many of the chat's first messages it covers instead (one count of the chat)."""
        where = {"subject_id": subject_id, "chat_id": chat_id}
        limit = max_messages
        if after_count is not None:
            limit = min(limit, max(0, await self._store.count(MESSAGES, project_id, where) - after_count))
        chat = (project_id, subject_id, chat_id)
        window = await self._read_window(project_id, where, token_budget=token_budget, limit=limit,
                                         first_page=max(_FIRST_PAGE, self._window_sizes.get(chat, 0) + _PAGE_SLACK),
                                         after_id=after_id, summary_by_count=after_count is not None,
                                         max_messages=max_messages)
        self._window_sizes[chat] = len(window.docs)
        self._window_sizes.move_to_end(chat)
        if len(self._window_sizes) > _REMEMBERED_WINDOWS:
            self._window_sizes.popitem(last=False)
        return window

    async def _read_window(self, project_id: str, where: dict[str, str], *, token_budget: int, limit: int,
                           first_page: int, after_id: str | None, summary_by_count: bool,
                           max_messages: int) -> HistoryWindow:
        kept: list[dict[str, Any]] = []
        costs: list[int] = []
        seen: set[str] = set()
        used = 0
        offset = 0
        page = first_page
        while offset < limit:
            wanted = min(page, limit - offset)
            docs = await self._store.find(MESSAGES, project_id, where, limit=wanted, offset=offset,
                                          newest_first=True)
            for doc in docs:
                message_id = doc.get("message_id")
                if after_id is not None and message_id == after_id:
                    return HistoryWindow.of(kept, costs, complete=True)
                if message_id:
                    # A turn stored while this read pages shifts the offsets: its pages overlap.
                    if message_id in seen:
                        continue
                    seen.add(message_id)
                cost = stored_tokens(doc)
                if used + cost > token_budget:
                    return HistoryWindow.of(kept, costs, complete=False, budget_full=True)
                used += cost
                kept.append(doc)
                costs.append(cost)
            if len(docs) < wanted:
                # The chat's start: complete, unless a summary's last message was not met on the
                # way (then the summary covers messages no longer there; the caller drops it).
                return HistoryWindow.of(kept, costs, complete=after_id is None, anchor_missing=after_id is not None)
            offset += len(docs)
            page *= 2
        # max_messages read: complete only if that was every message after the summary.
        return HistoryWindow.of(kept, costs, complete=summary_by_count and limit < max_messages)

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
        window = await self.window(project_id, subject_id, chat_id, token_budget=token_budget,
                                   max_messages=max_messages)
        if chunk is None or window.complete:
            return window.replayable()
        # The messages read are the chat's last ones: the first of them is at total - read.
        # (A turn stored between the two reads only shifts this turn's cut: rounding up keeps
        # it inside the budget whatever the count.)
        total = await self._store.count(MESSAGES, project_id, {"subject_id": subject_id, "chat_id": chat_id})
        first_position = max(0, total - len(window.messages))
        return fit_to_budget_in_chunks(window.messages, token_budget, first_position=first_position, chunk=chunk,
                                       costs=window.costs)

    async def since(self, project_id: str, subject_id: str, chat_id: str, *, after_id: str | None,
                    after_count: int) -> list[dict[str, Any]]:
        """Every stored message of the chat after the first ``after_count`` (``after_id``, the last
        of those, when it has one), oldest first, as stored (ids and token counts included)."""
        where = {"subject_id": subject_id, "chat_id": chat_id}
        docs = await self._store.find(MESSAGES, project_id, where, offset=after_count)
        if after_id is None or after_count == 0:
            return docs
        # The summarized part was counted by position; its last message's id checks that the
        # positions still mean what they meant (a chat deleted and written again does not).
        previous = await self._store.find(MESSAGES, project_id, where, limit=1, offset=after_count - 1)
        if not previous or previous[0].get("message_id") != after_id:
            raise ChatRewritten(chat_id)
        return docs

    async def exists(self, project_id: str, message_id: str) -> bool:
        return await self._store.get(MESSAGES, project_id, message_id) is not None

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
            await self.summaries.forget_chat(project_id, chat_id, subject_id)
            return removed
        removed = await self._store.delete_where(MESSAGES, project_id, {"chat_id": chat_id})
        await self._store.delete_where(CHATS, project_id, {"chat_id": chat_id})
        await self.summaries.forget_chat(project_id, chat_id, None)
        return removed

    async def delete_subject(self, project_id: str, subject_id: str) -> int:
        """Every message and chat of one subject (erasure); returns the messages removed."""
        removed = await self._store.delete_where(MESSAGES, project_id, {"subject_id": subject_id})
        await self._store.delete_where(CHATS, project_id, {"subject_id": subject_id})
        await self.summaries.forget_subject(project_id, subject_id)
        return removed
