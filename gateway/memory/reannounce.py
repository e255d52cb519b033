"""Announcing again what a killed run of a learn job wrote: its memory events (contract §13).

A learn job is done only once Redis holds the events of its writes (gateway/memory/events.py,
"A write's events outlive a crash"). A gateway SIGKILLed before that leaves the job to run
again, and the re-run finds the memories its killed run stored (their ids derive from the job
id) and skips them: without this module their events, lost with the dead process's outgoing
queue, would never be sent, and no subscriber or ``Last-Event-ID`` replay would hear of them.

So a re-run (a job's second claim or later) announces again what the stored state says the
job wrote, each event only if the project's stream does not hold it already (the killed run
may have sent it before it died):

* ``memory.created`` for each of the job's memories still stored and not deleted;
* ``memory.superseded`` for each memory of the subject that one of them superseded;
* ``profile.updated`` for each profile field of the subject set since the job's turn, with
  the value it holds now (a field the job learned, or any other whose event went missing).

Matching is by content (the memory id; the field and its value), against the events the
stream keeps (``events.replay_size``). An event of the killed run that the stream has trimmed
since is announced again: a subscriber may then get it twice, the one case besides a send
retried after a lost reply (see events.py) where an event is doubled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.clock import from_timestamp
from gateway.errors import NotFound
from gateway.memory.events import Event
from gateway.memory.memories import Memories, created_event
from gateway.profiles import Profiles

# How far before the job's creation (the turn) a profile field's update still counts as one
# the job may have made: the gateways' clocks, which stamp both, may differ by this much.
_CLOCK_SKEW_SECONDS = 60.0
# Superseded memories read per page while looking for those the job's memories superseded.
_PAGE = 500


async def announce_again(memories: Memories, profiles: Profiles | None, project_id: str, subject_id: str,
                         memory_ids: Sequence[str], *, since: float) -> int:
    """Publish the events of ``memory_ids`` (the job's memories) and of the subject's profile fields
    updated since ``since`` (epoch seconds: the job's creation) that the project's stream lacks;
    returns how many were published."""
    kept = await memories.events.kept_events(project_id)
    missing: list[tuple[str, dict[str, Any]]] = []
    wanted = set(memory_ids)
    for memory_id in memory_ids:
        try:
            doc = await memories.get(project_id, memory_id, allow_deleted=True)
        except NotFound:
            continue  # the killed run did not get that far: this run stores it, and announces it
        if doc.get("is_deleted") or doc["subject_id"] != subject_id:
            continue  # a deletion announced since says more than a creation would
        if not any(_is_created(event, memory_id) for event in kept):
            missing.append(("memory.created", created_event(doc)))
    offset = 0
    while True:
        page = await memories.superseded(project_id, subject_id, limit=_PAGE, offset=offset)
        for old in page:
            if old.get("superseded_by") in wanted and not any(
                    _is_superseded(event, old["id"], old["superseded_by"]) for event in kept):
                missing.append(("memory.superseded", {"id": old["id"], "superseded_by": old["superseded_by"]}))
        if len(page) < _PAGE:
            break
        offset += _PAGE
    if profiles is not None:
        # ISO stamps of one format (UTC, milliseconds, Z) order as text.
        after = from_timestamp(since - _CLOCK_SKEW_SECONDS)
        for field in await profiles.current(project_id, subject_id):
            key, value = field["field_key"], field["value"]
            if field["updated_at"] >= after and not any(_sets_field(event, subject_id, key, value) for event in kept):
                missing.append(("profile.updated", {"subject_id": subject_id, "fields": {key: value},
                                                    "updated_at": field["updated_at"]}))
    for event_type, data in missing:
        memories.events.publish(project_id, subject_id, event_type, data)
    return len(missing)


def _is_created(event: Event, memory_id: str) -> bool:
    return event.type == "memory.created" and event.data.get("id") == memory_id


def _is_superseded(event: Event, memory_id: str, by: str) -> bool:
    return event.type == "memory.superseded" and event.data.get("id") == memory_id and (
        event.data.get("superseded_by") == by)


def _sets_field(event: Event, subject_id: str, key: str, value: Any) -> bool:
    fields = event.data.get("fields")
    return (event.type == "profile.updated" and event.subject_id == subject_id and isinstance(fields, dict)
            and key in fields and fields[key] == value)
