"""Where each chat's rolling summary is kept: one document per chat, replaced at every fold.

It says what it covers as the contract's ``chat_summaries`` rows do (T:16): the chat's first
``messages_summarized`` messages, ``start_message_index`` to ``end_message_index``
(inclusive), how many tokens they held and how many the summary takes. ``end_message_id``
names the last covered message, where a replay reading the chat newest first stops.

A summary is of history, so it goes with it: deleting a chat's history or erasing its subject
deletes its summary (``ChatHistory.delete_chat`` / ``delete_subject`` call ``forget_chat`` /
``forget_subject``) after the messages. A fold that summarized messages deleted meanwhile
writes, then looks again for the last message it covers and deletes what it wrote when that
is gone (``gateway.summaries.folding``): whichever order the two run in, no summary of deleted
messages stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.clock import now_iso
from gateway.store import Collection, DocumentStore

SUMMARIES = Collection("chat_summaries", indexes=(("subject_id", "chat_id"), ("chat_id",), ("subject_id",)))


def _doc_id(subject_id: str, chat_id: str) -> str:
    return f"{len(subject_id)}:{subject_id}:{chat_id}"


@dataclass(frozen=True)
class ChatSummary:
    subject_id: str
    chat_id: str
    text: str
    # How many of the chat's first messages it covers (end_message_index + 1).
    messages_summarized: int
    # The last message it covers ("" for messages stored before messages carried their ids).
    end_message_id: str
    tokens_in_source: int
    tokens_in_summary: int
    # "extractive", "llm", or a plugin's word for how it was written.
    method: str
    # How many chunks have been folded into it.
    folds: int
    created_at: str
    updated_at: str

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> ChatSummary:
        return cls(doc["subject_id"], doc["chat_id"], doc["summary_text"], doc["messages_summarized"],
                   doc.get("end_message_id") or "", doc["tokens_in_source"], doc["tokens_in_summary"],
                   doc["method"], doc["folds"], doc["created_at"], doc["updated_at"])

    def to_doc(self) -> dict[str, Any]:
        return {"subject_id": self.subject_id, "chat_id": self.chat_id, "summary_text": self.text,
                "messages_summarized": self.messages_summarized, "end_message_id": self.end_message_id,
                "tokens_in_source": self.tokens_in_source, "tokens_in_summary": self.tokens_in_summary,
                "method": self.method, "folds": self.folds, "created_at": self.created_at,
                "updated_at": self.updated_at}

    def to_api(self) -> dict[str, Any]:
        """The shape ``GET /chat/history/read?include_summaries=true`` lists."""
        return {"chat_id": self.chat_id, "subject_id": self.subject_id, "summary_text": self.text,
                "start_message_index": 0, "end_message_index": self.messages_summarized - 1,
                "messages_summarized": self.messages_summarized, "tokens_in_source": self.tokens_in_source,
                "tokens_in_summary": self.tokens_in_summary, "method": self.method, "folds": self.folds,
                "created_at": self.created_at, "updated_at": self.updated_at}

    def folded(self, text: str, *, messages: int, end_message_id: str, tokens_in: int, tokens_out: int,
               method: str) -> ChatSummary:
        """This summary with ``messages`` more of the chat folded in."""
        return ChatSummary(self.subject_id, self.chat_id, text, self.messages_summarized + messages,
                           end_message_id, self.tokens_in_source + tokens_in, tokens_out, method, self.folds + 1,
                           self.created_at, now_iso())

    @classmethod
    def empty(cls, subject_id: str, chat_id: str) -> ChatSummary:
        """Nothing summarized yet: what the first fold builds on."""
        stamp = now_iso()
        return cls(subject_id, chat_id, "", 0, "", 0, 0, "", 0, stamp, stamp)


class ChatSummaries:
    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    async def get(self, project_id: str, subject_id: str, chat_id: str) -> ChatSummary | None:
        doc = await self._store.get(SUMMARIES, project_id, _doc_id(subject_id, chat_id))
        return ChatSummary.from_doc(doc) if doc else None

    async def put(self, project_id: str, summary: ChatSummary) -> None:
        """Write it (the caller then checks that its last message still exists)."""
        await self._store.put(SUMMARIES, project_id, _doc_id(summary.subject_id, summary.chat_id), summary.to_doc())

    async def of_chat(self, project_id: str, chat_id: str, subject_id: str | None) -> list[ChatSummary]:
        where = {"subject_id": subject_id, "chat_id": chat_id} if subject_id else {"chat_id": chat_id}
        return [ChatSummary.from_doc(doc) for doc in await self._store.find(SUMMARIES, project_id, where)]

    async def delete(self, project_id: str, subject_id: str, chat_id: str) -> None:
        await self._store.delete(SUMMARIES, project_id, _doc_id(subject_id, chat_id))

    async def forget_chat(self, project_id: str, chat_id: str, subject_id: str | None) -> int:
        if subject_id:
            return int(await self._store.delete(SUMMARIES, project_id, _doc_id(subject_id, chat_id)))
        return await self._store.delete_where(SUMMARIES, project_id, {"chat_id": chat_id})

    async def forget_subject(self, project_id: str, subject_id: str) -> int:
        return await self._store.delete_where(SUMMARIES, project_id, {"subject_id": subject_id})
