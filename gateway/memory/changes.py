"""What a new memory, or an edit of one, asks for: the typed values ``Memories.create``
and ``Memories.update`` take.

They arrive checked: the REST API reads them from request bodies
(gateway/api/memory_bodies.py), learning builds them from what an extractor found.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class MemoryFields:
    """The optional fields a create may set and an edit may change; None: not given."""

    kind: str | None = None
    visibility: str | None = None
    importance: float | None = None
    confidence: float | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None
    is_temporal: bool | None = None

    def given(self) -> dict[str, Any]:
        """The fields given, by name (a False is given, a None is not)."""
        values = {name: getattr(self, name) for name in _MEMORY_FIELD_NAMES}
        return {name: value for name, value in values.items() if value is not None}


# Read once: dataclasses.fields() builds its answer on every call (given() runs for every memory learned).
_MEMORY_FIELD_NAMES = tuple(f.name for f in fields(MemoryFields))


@dataclass(frozen=True)
class NewMemory:
    subject_id: str
    text: str
    fields: MemoryFields = field(default_factory=MemoryFields)
    # The id the client chose; None: the gateway picks one.
    id: str | None = None
    # Where the memory came from: "explicit" (the REST API), "inferred" (learning), or the client's word.
    source_type: str = "explicit"
    # True: stored as is, never skipped as a near-duplicate nor replacing other memories.
    no_supersede: bool = False
    # False: no claims are read from the text (a caller may still hand its own).
    extract_claims: bool = True
    # The id of a memory of the same subject this one replaces, whatever versioning decides.
    supersedes: str | None = None


@dataclass(frozen=True)
class MemoryEdit:
    fields: MemoryFields = field(default_factory=MemoryFields)
    # The new text; None: unchanged.
    text: str | None = None
