"""The extraction hook: what a turn teaches about its subject, as candidate memories.

Built-in extractors (``plugins/extractors.py``): an LLM through LiteLLM, answering
in the JSON schema below, and a heuristic one that needs no model, so the embedded
default learns offline. Third-party extractors register under the
``mnx_gateway.extractors`` entry point. One that judges versioning (``judges_versioning``, as
the LLM one does) is also shown the subject's related memories and says of each memory whether
it is new, a duplicate or an update (gateway/memory/judgement.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, ValidationError

from gateway.memory.memories import KINDS, VISIBILITIES
from gateway.memory.judgement import RELATIONS, Judgement, RelatedMemory
from gateway.profiles import BUILTIN_FIELDS, ProfileField


@dataclass(frozen=True)
class Exchange:
    """One answered turn, as the extractor sees it."""

    user_messages: Sequence[str]
    assistant_message: str
    # The resolved memory policy's text (project -> subject -> chat), "" when none.
    policy_text: str = ""
    # learn: "force": the extractor should find at least one memory if it possibly can.
    force: bool = False
    # The project's profile fields (gateway.profiles: the built-ins and gateway.yaml's), which an
    # extractor may fill in from what a memory says (ExtractedMemory.profile_fields).
    profile_fields: Sequence[ProfileField] = BUILTIN_FIELDS
    # Earlier lines of the conversation, to read ``user_messages`` by (POST /memories/extract's
    # conversation_context): not themselves a source of memories.
    context: Sequence[str] = ()
    # The subject's active memories the turn may be about, each under a short reference: an
    # extractor that judges versioning (``judges_versioning``) says of each memory it extracts
    # whether it is new, a duplicate of one of these or an update of some (``Judgement``).
    # Empty: no judgement is asked for.
    related: Sequence[RelatedMemory] = ()


@dataclass(frozen=True)
class ExtractedClaim:
    predicate: str
    value: str


@dataclass(frozen=True)
class ExtractedMemory:
    text: str
    kind: str = "fact"
    importance: float = 50
    confidence: float = 0.8
    tags: Sequence[str] = ()
    visibility: str = "private"
    is_temporal: bool = False
    claims: Sequence[ExtractedClaim] = field(default_factory=tuple)
    # Profile fields this memory states ({"name": "Alice"}), written with its id and confidence
    # when it is stored; a policy that leaves the memory out leaves them out too.
    profile_fields: Mapping[str, Any] = field(default_factory=dict)
    # The extractor's versioning verdict, when it was shown related memories and gave a readable
    # one; None: the rules decide (gateway/memory/versioning.py).
    judgement: Judgement | None = None


class Extractor(Protocol):
    # An extractor may also set ``judges_versioning = True``: it is then shown the subject's
    # related memories (Exchange.related) and returns a Judgement with each memory.

    def key_for(self, caller_keys: Mapping[str, str]) -> str | None:
        """The caller's own provider key, when the extractor calls a paid model with it.
        ``caller_keys`` are the provider-key headers the caller sent (``Credentials.provider_keys``)."""

    async def extract(self, exchange: Exchange, *, api_key: str | None = None) -> list[ExtractedMemory]:
        """Candidate memories, best first; policy filtering happens after."""


def judges_versioning(extractor: object) -> bool:
    """Whether ``extractor`` answers with a versioning Judgement when shown related memories."""
    return getattr(extractor, "judges_versioning", False) is True


class ExtractionError(Exception):
    """The extractor's answer was not valid JSON or broke the schema: nothing is stored."""


MAX_MEMORY_TEXT = 10_000


class UnstorableMemory(ValueError):
    """An extractor handed back a memory the Memories API would refuse: the job fails with this
    as its last_error (readable through GET /jobs) and nothing of the turn is stored."""


def require_storable(memory: ExtractedMemory) -> None:
    """Holds an extractor's candidate to what ``POST /memories`` accepts, field by field.

    The built-in extractors only produce such values; a third-party one is a plugin boundary,
    and what crosses it is checked before anything is written, as a client's body is.
    """
    def refuse(problem: str) -> UnstorableMemory:
        return UnstorableMemory(f"the extractor returned a memory whose {problem}")

    if not isinstance(memory.text, str) or not memory.text.strip():
        raise refuse("text is empty or not a string")
    if len(memory.text.strip()) > MAX_MEMORY_TEXT:
        raise refuse(f"text is longer than {MAX_MEMORY_TEXT} characters")
    if memory.kind not in KINDS:
        raise refuse(f"kind {memory.kind!r} is not one of {', '.join(KINDS)}")
    if memory.visibility not in VISIBILITIES:
        raise refuse(f"visibility {memory.visibility!r} is not one of {', '.join(VISIBILITIES)}")
    for name, high in (("importance", 100), ("confidence", 1)):
        value = getattr(memory, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
            raise refuse(f"{name} is not a number from 0 to {high}")
    if isinstance(memory.tags, str) or not all(isinstance(tag, str) for tag in memory.tags):
        raise refuse("tags are not a list of strings")
    if not isinstance(memory.is_temporal, bool):
        raise refuse("is_temporal is not a boolean")
    # The values themselves are checked against the project's schema when they are written
    # (gateway.profiles: one that fails is left out, the memory stands).
    if not isinstance(memory.profile_fields, Mapping) or not all(
            isinstance(key, str) and isinstance(value, (str, int, float, bool))
            for key, value in memory.profile_fields.items()):
        raise refuse("profile_fields are not a mapping of field keys to strings, numbers or booleans")


class _Claim(BaseModel):
    model_config = ConfigDict(extra="ignore")
    predicate: str = Field(min_length=1, max_length=100)
    value: str = Field(max_length=500)


class _ProfileValue(BaseModel):
    model_config = ConfigDict(extra="ignore")
    field_key: str = Field(min_length=1, max_length=64)
    value: StrictBool | StrictInt | StrictFloat | str


class _Memory(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: str = Field(min_length=1, max_length=10_000)
    kind: str = "fact"
    importance: float = Field(default=50, ge=0, le=100)
    confidence: float = Field(default=0.8, ge=0, le=1)
    tags: list[str] = Field(default_factory=list)
    visibility: str = "private"
    is_temporal: bool = False
    claims: list[_Claim] = Field(default_factory=list)
    profile: list[_ProfileValue] = Field(default_factory=list)
    # Read apart (_judgement): a verdict that cannot be read leaves the memory to the rules,
    # it does not void the whole answer.
    versioning: Any = None


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    memories: list[_Memory]


def extraction_schema(profile_fields: Sequence[ProfileField] = BUILTIN_FIELDS,
                      refs: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON schema the LLM extractor asks for (OpenAI structured outputs, strict); each
    memory's ``profile`` names the project's profile fields it states. With ``refs`` (the
    related memories shown), each memory also carries its ``versioning`` verdict on them."""
    described = "; ".join(f"{f.key} ({f.type}): {f.description}" if f.description else f"{f.key} ({f.type})"
                          for f in profile_fields)
    schema = {
        "type": "object", "additionalProperties": False, "required": ["memories"],
        "properties": {"memories": {"type": "array", "items": {
            "type": "object", "additionalProperties": False,
            "required": ["text", "kind", "importance", "confidence", "tags", "visibility", "is_temporal", "claims",
                         "profile"],
            "properties": {
                "text": {"type": "string", "description": "one self-contained fact about the user, third person"},
                "kind": {"type": "string", "enum": list(KINDS)},
                "importance": {"type": "number", "description": "0-100"},
                "confidence": {"type": "number", "description": "0-1"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "visibility": {"type": "string", "enum": list(VISIBILITIES)},
                "is_temporal": {"type": "boolean", "description": "true when it will stop being true soon"},
                "claims": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False, "required": ["predicate", "value"],
                    "properties": {"predicate": {"type": "string",
                                                 "description": "snake_case slot, e.g. favorite_fruit"},
                                   "value": {"type": "string"}}}},
                "profile": {"type": "array", "description": f"profile fields this memory states: {described}",
                            "items": {
                                "type": "object", "additionalProperties": False, "required": ["field_key", "value"],
                                "properties": {
                                    "field_key": {"type": "string", "enum": [f.key for f in profile_fields]},
                                    "value": {"anyOf": [{"type": "string"}, {"type": "number"},
                                                        {"type": "boolean"}]}}}},
            }}}},
    }
    if refs:
        memory = schema["properties"]["memories"]["items"]  # type: ignore[index]
        memory["required"].append("versioning")
        memory["properties"]["versioning"] = {
            # What each relation means is in the instructions (plugins/extractors.py JUDGE_PROMPT).
            "type": "object", "additionalProperties": False, "required": ["relation", "refs"],
            "properties": {"relation": {"type": "string", "enum": list(RELATIONS)},
                           "refs": {"type": "array", "items": {"type": "string", "enum": list(refs)}}}}
    return schema


# The schema for a project with the built-in profile fields only.
EXTRACTION_SCHEMA: dict[str, Any] = extraction_schema()


def parse_extraction(raw: str) -> list[ExtractedMemory]:
    """An extractor's JSON answer as memories; ExtractionError if it is not what the schema says."""
    try:
        answer = _Answer.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as error:
        raise ExtractionError(f"the extractor's answer does not match the schema: {str(error)[:300]}") from None
    memories = []
    for item in answer.memories:
        kind = item.kind if item.kind in KINDS else "fact"
        visibility = item.visibility if item.visibility in VISIBILITIES else "private"
        memories.append(ExtractedMemory(item.text.strip(), kind, item.importance, item.confidence,
                                        tuple(item.tags), visibility, item.is_temporal,
                                        tuple(ExtractedClaim(c.predicate, c.value) for c in item.claims),
                                        {p.field_key: p.value for p in item.profile}, _judgement(item.versioning)))
    return memories


def _judgement(raw: Any) -> Judgement | None:
    """A memory's ``versioning`` as a Judgement, or None when it is missing or malformed (the
    rules decide then). Whether its refs are ones the model was shown is checked where they
    are mapped back to memories (gateway/memory/judgement.py)."""
    if not isinstance(raw, dict):
        return None
    relation, refs = raw.get("relation"), raw.get("refs", [])
    if relation not in RELATIONS or not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        return None
    if relation == "new":
        return Judgement("new")
    # A duplicate or an update of nothing named says nothing usable.
    return Judgement(relation, tuple(dict.fromkeys(refs))) if refs else None
