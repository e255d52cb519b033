"""The bodies of ``POST /memories`` and ``PATCH /memories/{id}``, read into the typed values
``Memories`` takes. Fields are read (and a 400 names the first bad one) in a fixed order."""

from __future__ import annotations

from typing import Any

from gateway.memory.changes import MemoryEdit, MemoryFields, NewMemory
from gateway.memory.memories import KINDS, VISIBILITIES
from gateway.validation import Body, addressable_id

MAX_TEXT = 10_000
# A client may choose a memory's id: not one the /memories routes take for themselves.
MAX_ID = 200
_RESERVED_IDS = ("search", "superseded", "recalls", "extract")


def _fields(body: Body) -> MemoryFields:
    """The optional fields POST and PATCH share."""
    return MemoryFields(
        kind=body.choice("kind", KINDS),
        visibility=body.choice("visibility", VISIBILITIES),
        importance=body.number("importance", minimum=0, maximum=100),
        confidence=body.number("confidence", minimum=0, maximum=1),
        tags=body.strings("tags"),
        metadata=body.obj("metadata"),
        is_temporal=body.flag("is_temporal", default=False) if body.value("is_temporal") is not None else None,
    )


def new_memory(data: dict[str, Any]) -> NewMemory:
    body = Body(data)
    subject_id = body.string("subject_id", required=True)
    text = body.string("text", required=True, max_length=MAX_TEXT, strip=True)
    assert subject_id is not None and text is not None
    fields = _fields(body)
    return NewMemory(
        subject_id, text, fields,
        id=addressable_id(body.string("id"), MAX_ID, _RESERVED_IDS),
        no_supersede=body.flag("no_supersede", default=False),
        source_type=body.string("source_type") or body.string("source") or "explicit",
        extract_claims=body.flag("extract_claims", default=True),
        supersedes=body.string("supersedes") or None,
    )


def memory_edit(data: dict[str, Any]) -> MemoryEdit:
    body = Body(data)
    fields = _fields(body)
    # An empty (or all-space) text leaves the text as it is.
    return MemoryEdit(fields, text=body.string("text", max_length=MAX_TEXT, strip=True) or None)
