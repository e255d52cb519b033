"""Which subjects a project has, for browsing (``GET /subjects``, the dashboard's first page).

The store keeps no list of subjects: a subject is only the ``subject_id`` its memories, chats
and state carry. Every chat turn leaves one small document per chat (gateway/history.py) and
every memory is a document of its own, so the project's latest chats and latest memories, each
read newest first up to a bound, name the subjects active lately; their counts are then indexed
counts, one per subject shown. A subject active only long ago is found by its exact id: a search
for an id that has memories or chats lists it even when nothing recent names it. The cost of a
call follows those bounds and the page size, never how much a subject or project holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.history import CHATS
from gateway.memory.index_upkeep import MEMORIES
from gateway.store import DocumentStore

# The latest chats (one small document each) and memories read to find recently active subjects.
CHATS_SCANNED = 1000
MEMORIES_SCANNED = 200


@dataclass
class SubjectSummary:
    subject_id: str
    # ISO 8601 time of the subject's latest chat turn or memory among those read; None: none read.
    last_active: str | None
    chats: int = 0
    memories: int = 0

    def to_api(self) -> dict[str, Any]:
        return {"subject_id": self.subject_id, "last_active": self.last_active, "chats": self.chats,
                "memories": self.memories}


async def list_subjects(store: DocumentStore, project_id: str, *, search: str | None,
                        limit: int) -> tuple[list[SubjectSummary], bool]:
    """The project's subjects, most recently active first (``search``: those whose id contains it,
    case-insensitively, and the subject of exactly that id). Also whether everything was read
    (False: subjects active only before the latest chats and memories may be missing)."""
    chats = await store.find(CHATS, project_id, limit=CHATS_SCANNED, newest_first=True)
    memories = await store.find(MEMORIES, project_id, limit=MEMORIES_SCANNED, newest_first=True)
    latest: dict[str, str] = {}
    # Both stamps are ISO 8601 UTC strings (now_iso, from_timestamp), so they compare as text.
    for subject_id, stamp in [(c["subject_id"], c.get("last_time") or "") for c in chats] + [
            (m["subject_id"], m.get("created_at") or "") for m in memories]:
        if subject_id not in latest or stamp > latest[subject_id]:
            latest[subject_id] = stamp
    needle = search.casefold() if search else None
    found = [SubjectSummary(subject_id, stamp or None) for subject_id, stamp in latest.items()
             if needle is None or needle in subject_id.casefold()]
    found.sort(key=lambda s: s.last_active or "", reverse=True)
    found = found[:limit]
    for summary in found:
        await _count(store, project_id, summary)
    if search and search not in latest:
        # Nothing recent names it: listed first if a subject of exactly that id holds something.
        exact = await _count(store, project_id, SubjectSummary(search, None))
        if exact.chats or exact.memories:
            found = [exact, *found][:limit]
    complete = len(chats) < CHATS_SCANNED and len(memories) < MEMORIES_SCANNED
    return found, complete


async def _count(store: DocumentStore, project_id: str, summary: SubjectSummary) -> SubjectSummary:
    summary.chats = await store.count(CHATS, project_id, {"subject_id": summary.subject_id})
    summary.memories = await store.count(MEMORIES, project_id, {"subject_id": summary.subject_id, "listing": "active"})
    return summary
