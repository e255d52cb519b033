"""Subject profiles (contract §8): a few named facts about a subject, one current value each.

A profile field (``name``, ``email``, ``timezone``, ``language``, or a project's own) holds
its current value with where it came from: ``source_type`` ``"api"`` for a manual edit
(``PATCH /profiles``), ``"chat"`` for a value learned from a conversation (with the id
of the memory it was learned with), its confidence and when it was set. The values it
held before stay in a history, newest first, readable with ``GET /profiles?format=full
&include_history=true``.

Which value wins (``decide``):

1. A manual edit always wins: the user (or the application acting for them) is the
   authority on their own profile, so a later manual edit replaces an earlier one,
   whatever its confidence.
2. Learning never replaces a manual value.
3. Among learned values, a newer one replaces the current one when its confidence is at
   least the current one's; a less confident one is skipped.

A learned value lasts as long as the memory it was learned with: when that memory is deleted
or superseded, the field goes back to its newest older value still standing, or is removed
(``memory_left``, called by gateway.memory.memories.Memories through ``on_left``).

The current values live in one collection (one small document per field, found by
subject), the history in another, so reading a profile is one index lookup however long
its history is. Every change publishes ``profile.updated`` (contract §13).
"""

from __future__ import annotations

import functools
import logging
import math
import re
import typing
import unicodedata
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.clock import now_iso
from gateway.config import BUILTIN_PROFILE_KEYS, ProfileFieldType, ProjectConfig
from gateway.ids import ordered_id
from gateway.store import Collection, DocumentStore
from gateway.subject_locks import SubjectLocks

log = logging.getLogger("gateway.profiles")

# The current value of each (subject, field); the document id is the pair (see _field_doc_id).
PROFILE_FIELDS = Collection("profile_fields", indexes=(("subject_id",), ("subject_id", "memory_id")))
# Values a field held before, one document each. Both collections find the values learned with
# a memory, which go when it leaves (``memory_left``); a manual value has no memory id.
PROFILE_HISTORY = Collection("profile_history", indexes=(("subject_id",), ("subject_id", "field_key"),
                                                         ("subject_id", "memory_id")))

# Where a value came from: a manual edit through the API outranks everything else; the others
# are learned, from a chat turn or from text sent to POST /memories/extract.
MANUAL = "api"
LEARNED = "chat"
EXTRACTED = "extract"

# The types a field may have: the built-ins' own, and the plain JSON scalars.
FIELD_TYPES: tuple[str, ...] = typing.get_args(ProfileFieldType)

# Bounds: what one request may write, and what a subject may accumulate.
MAX_FIELD_KEY_LENGTH = 64
MAX_TEXT_VALUE = 1000
MAX_UPDATES = 100
MAX_FIELDS_PER_SUBJECT = 200
# Older values kept per field; the oldest are dropped beyond this.
MAX_HISTORY_PER_FIELD = 50
# Marks a history entry learned with a memory since superseded: shown, never gone back to.
_MEMORY_LEFT = "memory_left"

# A field key: a letter, then letters, digits, "_", "-" or ".". Readable in a URL and in JSON.
_FIELD_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
# An address with a local part, an "@" and a dotted domain; no spaces, quotes or brackets.
# Not RFC 5322 in full: what people write as their email in a form or a chat.
_EMAIL = re.compile(r"^[^@\s\"(),:;<>\[\]\\]{1,64}@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,63}$")
MAX_EMAIL_LENGTH = 254
# A language: a BCP 47 tag ("fr", "pt-BR", "zh-Hant-TW", "es-419") or a name ("French",
# "Brazilian Portuguese", "Français"): letters in up to five words.
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")
_LANGUAGE_NAME = re.compile(r"^[^\W\d_]+(?:[ '-][^\W\d_]+){0,4}$")
MAX_LANGUAGE_LENGTH = 64
MAX_SAFE_INTEGER = 2**53
# What a one-line text value may not hold: control characters (Cc), line and paragraph
# separators (Zl, Zp) and lone surrogates (Cs, which no UTF-8 store can write). Format
# characters stay: a zero-width joiner is part of many names (Sinhala, Malayalam, emoji).
_NOT_IN_A_LINE = frozenset({"Cc", "Cs", "Zl", "Zp"})


@dataclass(frozen=True)
class ProfileField:
    """One field of a project's profile schema."""

    key: str
    type: str
    description: str = ""
    builtin: bool = False

    def to_api(self) -> dict[str, Any]:
        return {"key": self.key, "type": self.type, "description": self.description, "builtin": self.builtin}


BUILTIN_FIELDS = (
    ProfileField("name", "string", "the name the user goes by", builtin=True),
    ProfileField("email", "email", "the user's email address", builtin=True),
    ProfileField("timezone", "timezone", "the user's IANA time zone, e.g. Europe/Berlin", builtin=True),
    ProfileField("language", "language", "the language the user speaks or prefers: a BCP 47 tag (fr, pt-BR) "
                 "or its name (French)", builtin=True),
)
assert tuple(field.key for field in BUILTIN_FIELDS) == BUILTIN_PROFILE_KEYS


def custom_fields(projects: Iterable[ProjectConfig]) -> dict[str, list[ProfileField]]:
    """The profile fields gateway.yaml defines, by project."""
    return {project.id: [ProfileField(f.key, f.type, f.description) for f in project.profile_fields]
            for project in projects}


class InvalidProfileValue(ValueError):
    """A field key or value the profile cannot hold; ``message`` says why, for the caller."""

    def __init__(self, field_key: str, message: str) -> None:
        super().__init__(message)
        self.field_key = field_key
        self.message = message


class InvalidFieldKey(InvalidProfileValue):
    """A field key that is not one (empty, too long, or with characters a key may not hold)."""


# -- validation --------------------------------------------------------------------------------

def check_field_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidFieldKey(str(key)[:MAX_FIELD_KEY_LENGTH], "field_key must be a non-empty string")
    if len(key) > MAX_FIELD_KEY_LENGTH or not _FIELD_KEY.match(key):
        shown = key[:MAX_FIELD_KEY_LENGTH]
        raise InvalidFieldKey(shown, f"field_key {shown!r} must be at most {MAX_FIELD_KEY_LENGTH} characters: a "
                                       "letter, then letters, digits, '_', '-' or '.'")
    return key


@functools.cache
def _time_zones() -> dict[str, str]:
    """Every IANA time zone name this system knows, by its lower-cased form."""
    names = zoneinfo.available_timezones()
    if not names:
        log.warning("no IANA time zone database found (install the tzdata package): profile time zones are "
                    "checked for their form only")
    return {name.lower(): name for name in names}


def canonical_time_zone(text: str) -> str | None:
    """The IANA name ``text`` spells, in its canonical case ("europe/berlin" -> "Europe/Berlin"), else None."""
    zones = _time_zones()
    if zones:
        return zones.get(text.strip().lower())
    # No database to check against: a name of the IANA form, as written.
    candidate = text.strip()
    return candidate if re.fullmatch(r"[A-Za-z]+(?:/[A-Za-z0-9_+-]+){0,2}", candidate) else None


def _text(key: str, value: Any, limit: int = MAX_TEXT_VALUE) -> str:
    if not isinstance(value, str):
        raise InvalidProfileValue(key, f"{key} must be a string")
    value = value.strip()
    if not value:
        raise InvalidProfileValue(key, f"{key} must not be empty")
    if len(value) > limit:
        raise InvalidProfileValue(key, f"{key} must be at most {limit} characters")
    if any(unicodedata.category(char) in _NOT_IN_A_LINE for char in value):
        raise InvalidProfileValue(key, f"{key} must be one line of printable text")
    return value


def _check_typed(key: str, kind: str, value: Any) -> Any:
    if kind == "string":
        return _text(key, value)
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidProfileValue(key, f"{key} must be a number")
        if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
            # Beyond it a JavaScript client (or any double) reads another number back.
            raise InvalidProfileValue(key, f"{key} must be an integer of at most 2^53 in magnitude")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidProfileValue(key, f"{key} must be true or false")
        return value
    if kind == "email":
        address = _text(key, value, MAX_EMAIL_LENGTH)
        if not _EMAIL.match(address):
            raise InvalidProfileValue(key, f"{key} must be an email address (name@example.com)")
        return address
    if kind == "timezone":
        zone = canonical_time_zone(_text(key, value, 64))
        if zone is None:
            raise InvalidProfileValue(key, f"{key} must be an IANA time zone name such as Europe/Berlin or "
                                           f"America/New_York, not {value!r}")
        return zone
    if kind == "language":
        language = _text(key, value, MAX_LANGUAGE_LENGTH).replace("_", "-")
        if not (_LANGUAGE_TAG.match(language) or _LANGUAGE_NAME.match(language)):
            raise InvalidProfileValue(key, f"{key} must be a BCP 47 language tag (fr, pt-BR) or a language name "
                                           f"(French), not {value!r}")
        return language
    raise AssertionError(f"unknown field type {kind!r}")


def check_value(field: ProfileField | None, key: str, value: Any) -> Any:
    """``value`` as ``key`` stores it (trimmed, a time zone in its canonical case); raises
    InvalidProfileValue. A key outside the schema (``field`` None) takes any JSON scalar."""
    if value is None:
        raise InvalidProfileValue(key, f"{key}: value is required (to remove a field, use DELETE /profiles)")
    if field is not None:
        return _check_typed(key, field.type, value)
    if isinstance(value, (dict, list)):
        raise InvalidProfileValue(key, f"{key}: a profile value is a string, a number or a boolean, not "
                                       f"{'an object' if isinstance(value, dict) else 'an array'}")
    if isinstance(value, str):
        return _text(key, value)
    return _check_typed(key, "boolean" if isinstance(value, bool) else "number", value)


def _from_text(field: ProfileField, value: Any) -> Any:
    """A learned value written as text ("42", "true") as the number or boolean its field holds;
    an extractor reads words, and a model may answer a number as a string."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if field.type == "boolean" and text in ("true", "yes", "false", "no"):
        return text in ("true", "yes")
    if field.type == "number":
        try:
            number = float(text)
        except ValueError:
            return value
        return int(number) if number.is_integer() and abs(number) <= MAX_SAFE_INTEGER else number
    return value


# -- precedence --------------------------------------------------------------------------------

def _same_value(a: Any, b: Any) -> bool:
    """Equal as JSON values: ``True`` is not ``1``."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def decide(current: Mapping[str, Any] | None, value: Any, confidence: float, source_type: str) -> str | None:
    """Why the value is not written (``"manual_value"``, ``"lower_confidence"``, ``"unchanged"``),
    or None when it replaces ``current`` (see the module docstring for the rules)."""
    if current is None:
        return None
    unchanged = (_same_value(current["value"], value) and current["confidence"] == confidence
                 and current["source_type"] == source_type)
    if source_type == MANUAL:
        return "unchanged" if unchanged else None
    if current["source_type"] == MANUAL:
        return "manual_value"
    if confidence < current["confidence"]:
        return "lower_confidence"
    if _same_value(current["value"], value) and confidence == current["confidence"]:
        return "unchanged"
    return None


# -- the service -------------------------------------------------------------------------------

class EventSink(Protocol):
    def publish(self, project_id: str, subject_id: str | None, event: str, data: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class FieldUpdate:
    """One field to set, its value already checked (``check_value``)."""

    field_key: str
    value: Any
    confidence: float = 1.0


def _field_doc_id(subject_id: str, field_key: str) -> str:
    return f"{len(subject_id)}:{subject_id}:{field_key}"


def _history_entry(current: Mapping[str, Any], replaced_by: str, stamp: str) -> dict[str, Any]:
    return {"id": ordered_id("pfh_"),
            **{k: current[k] for k in ("subject_id", "field_key", "value", "confidence", "source_type",
                                       "updated_at", "memory_id")},
            "superseded_at": stamp, "superseded_by_source": replaced_by}


def field_to_api(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: doc[k] for k in ("value", "confidence", "source_type", "updated_at", "memory_id")}


def history_to_api(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {**field_to_api(doc), "superseded_at": doc["superseded_at"],
            "superseded_by_source": doc["superseded_by_source"]}


class Profiles:
    def __init__(self, store: DocumentStore, events: EventSink,
                 custom_fields: Mapping[str, Sequence[ProfileField]] | None = None,
                 locks: SubjectLocks | None = None) -> None:
        self._store = store
        self._events = events
        self._schemas = {project_id: (*BUILTIN_FIELDS, *fields) for project_id, fields in (custom_fields or {}).items()}
        # Writers of one subject's profile take turns (a read, a decision, a write), so a manual
        # edit and a learn job landing together cannot both read "no value" and the learned one
        # win: in this process, and on Redis across gateways (gateway/subject_locks.py).
        self._locks = locks or SubjectLocks("profile")

    def schema(self, project_id: str) -> tuple[ProfileField, ...]:
        """The project's fields: the built-ins, then those gateway.yaml defines for it."""
        return self._schemas.get(project_id, BUILTIN_FIELDS)

    def field(self, project_id: str, key: str) -> ProfileField | None:
        return next((field for field in self.schema(project_id) if field.key == key), None)

    def checked(self, project_id: str, field_key: Any, value: Any, confidence: float = 1.0) -> FieldUpdate:
        """One update, checked against the project's schema; raises InvalidProfileValue."""
        key = check_field_key(field_key)
        return FieldUpdate(key, check_value(self.field(project_id, key), key, value), confidence)

    def _lock(self, project_id: str, subject_id: str) -> AbstractAsyncContextManager[Any]:
        return self._locks.hold(project_id, subject_id)

    async def current(self, project_id: str, subject_id: str) -> list[dict[str, Any]]:
        """The subject's fields, in the order they were first set."""
        return await self._store.find(PROFILE_FIELDS, project_id, {"subject_id": subject_id})

    async def simple(self, project_id: str, subject_id: str) -> dict[str, Any]:
        """``{field_key: value}``; empty for a subject with no profile."""
        return {doc["field_key"]: doc["value"] for doc in await self.current(project_id, subject_id)}

    async def full(self, project_id: str, subject_id: str, *, include_history: bool = False) -> dict[str, Any]:
        """``{field_key: {value, confidence, source_type, updated_at, memory_id[, history]}}``."""
        fields = {doc["field_key"]: field_to_api(doc) for doc in await self.current(project_id, subject_id)}
        if include_history:
            for field in fields.values():
                field["history"] = []
            for old in await self._store.find(PROFILE_HISTORY, project_id, {"subject_id": subject_id},
                                              newest_first=True):
                if old["field_key"] in fields:
                    fields[old["field_key"]]["history"].append(history_to_api(old))
        return fields

    async def update(self, project_id: str, subject_id: str, updates: Sequence[FieldUpdate], *,
                     source_type: str = MANUAL, memory_id: str | None = None,
                     bounded: bool = True) -> list[dict[str, Any]]:
        """Apply checked updates in order; one result per update (``created``, ``updated``,
        ``skipped`` and its ``reason``). ``bounded``: a subject with MAX_FIELDS_PER_SUBJECT fields
        takes no new one (raises InvalidProfileValue; learning passes False and skips it)."""
        async with self._lock(project_id, subject_id):
            stored = {doc["field_key"]: doc for doc in await self.current(project_id, subject_id)}
            new_keys = {u.field_key for u in updates} - set(stored)
            if bounded and len(stored) + len(new_keys) > MAX_FIELDS_PER_SUBJECT:
                raise InvalidProfileValue(sorted(new_keys)[0], f"a profile holds at most {MAX_FIELDS_PER_SUBJECT} "
                                                               "fields; delete some first")
            stamp = now_iso()
            results: list[dict[str, Any]] = []
            written: dict[str, dict[str, Any]] = {}
            history: list[dict[str, Any]] = []
            for update in updates:
                current = stored.get(update.field_key)
                if current is None and len(stored) >= MAX_FIELDS_PER_SUBJECT:
                    results.append({"field_key": update.field_key, "created": False, "updated": False,
                                    "skipped": True, "reason": "too_many_fields"})
                    continue
                reason = decide(current, update.value, update.confidence, source_type)
                if reason is not None:
                    results.append({"field_key": update.field_key, "created": False, "updated": False,
                                    "skipped": True, "reason": reason})
                    continue
                if current is not None and not _same_value(current["value"], update.value):
                    history.append(_history_entry(current, source_type, stamp))
                doc = {"subject_id": subject_id, "field_key": update.field_key, "value": update.value,
                       "confidence": update.confidence, "source_type": source_type, "updated_at": stamp,
                       "memory_id": memory_id, "created_at": current["created_at"] if current else stamp}
                stored[update.field_key] = written[update.field_key] = doc
                results.append({"field_key": update.field_key, "created": current is None,
                                "updated": current is not None, "skipped": False, "value": update.value})
            if not written:
                return results
            if history:
                await self._store.put_many(PROFILE_HISTORY, project_id, [(entry["id"], entry) for entry in history])
            await self._store.put_many(PROFILE_FIELDS, project_id,
                                       [(_field_doc_id(subject_id, key), doc) for key, doc in written.items()])
            await self._trim_history(project_id, subject_id, {entry["field_key"] for entry in history})
        self._events.publish(project_id, subject_id, "profile.updated", {
            "subject_id": subject_id, "fields": {key: doc["value"] for key, doc in written.items()},
            "updated_at": stamp})
        return results

    async def learn(self, project_id: str, subject_id: str, values: Mapping[str, Any], *, confidence: float,
                    memory_id: str | None, source_type: str = LEARNED) -> list[dict[str, Any]]:
        """Fields an extractor found with a memory. Only the schema's fields are learned, and
        a value the schema refuses is left out (logged), not an error: the memory stands."""
        updates = []
        for key, value in values.items():
            field = self.field(project_id, key)
            if field is None:
                log.info("an extractor proposed profile field %r, which is not in the project's schema", key)
                continue
            try:
                updates.append(self.checked(project_id, key, _from_text(field, value), confidence))
            except InvalidProfileValue:
                # The value itself stays out of the log: it is the user's words.
                log.info("a learned value of profile field %r was left out: its type refuses it", key)
        if not updates:
            return []
        return await self.update(project_id, subject_id, updates, source_type=source_type, memory_id=memory_id,
                                 bounded=False)

    async def delete_field(self, project_id: str, subject_id: str, field_key: str) -> bool:
        """Remove a field and its history; True when it existed."""
        async with self._lock(project_id, subject_id):
            deleted = await self._store.delete(PROFILE_FIELDS, project_id, _field_doc_id(subject_id, field_key))
            await self._store.delete_where(PROFILE_HISTORY, project_id,
                                           {"subject_id": subject_id, "field_key": field_key})
        if deleted:
            self._events.publish(project_id, subject_id, "profile.updated", {
                "subject_id": subject_id, "fields": {field_key: None}, "updated_at": now_iso()})
        return deleted

    async def memory_left(self, project_id: str, subject_id: str, memory_id: str, how: str) -> None:
        """The memory was ``"deleted"`` or ``"superseded"`` (``Memories.on_left``): the values
        learned with it stop being the profile's, as the memory stopped being recalled.

        A field whose current value it was goes back to the newest older value still standing
        (a manual one, or one learned with a memory still in use), or is removed if there is
        none. A superseded memory's values stay in the history, as values the field held, but
        are never gone back to; a deleted memory's leave the history too (the user deleted what
        they said). Manual values stay: they were learned with no memory."""
        where = {"subject_id": subject_id, "memory_id": memory_id}
        changed: dict[str, Any] = {}
        async with self._lock(project_id, subject_id):
            learned = [doc for doc in await self._store.find(PROFILE_FIELDS, project_id, where)
                       if doc["source_type"] != MANUAL]
            # First, so that no value of this memory is what a field goes back to.
            if how == "deleted":
                await self._store.delete_where(PROFILE_HISTORY, project_id, where)
            else:
                await self._store.put_many(PROFILE_HISTORY, project_id, [
                    (old["id"], {**old, _MEMORY_LEFT: True})
                    for old in await self._store.find(PROFILE_HISTORY, project_id, where)])
            stamp = now_iso()
            for doc in learned:
                key = doc["field_key"]
                older = await self._store.find(PROFILE_HISTORY, project_id,
                                               {"subject_id": subject_id, "field_key": key}, newest_first=True)
                previous = next((old for old in older if not old.get(_MEMORY_LEFT)), None)
                if how == "superseded":
                    entry = {**_history_entry(doc, "memory_superseded", stamp), _MEMORY_LEFT: True}
                    await self._store.put(PROFILE_HISTORY, project_id, entry["id"], entry)
                doc_id = _field_doc_id(subject_id, key)
                if previous is None:
                    await self._store.delete(PROFILE_FIELDS, project_id, doc_id)
                    changed[key] = None
                    continue
                await self._store.put(PROFILE_FIELDS, project_id, doc_id, {
                    **{k: previous[k] for k in ("subject_id", "field_key", "value", "confidence", "source_type",
                                                "updated_at", "memory_id")},
                    "created_at": doc["created_at"]})
                await self._store.delete(PROFILE_HISTORY, project_id, previous["id"])
                changed[key] = previous["value"]
            await self._trim_history(project_id, subject_id, changed)
        if changed:
            self._events.publish(project_id, subject_id, "profile.updated", {
                "subject_id": subject_id, "fields": changed, "updated_at": now_iso()})

    async def delete_subject(self, project_id: str, subject_id: str) -> int:
        """Every field and every older value of one subject (erasure); how many fields there were."""
        fields = await self._store.delete_where(PROFILE_FIELDS, project_id, {"subject_id": subject_id})
        await self._store.delete_where(PROFILE_HISTORY, project_id, {"subject_id": subject_id})
        return fields

    async def _trim_history(self, project_id: str, subject_id: str, field_keys: Iterable[str]) -> None:
        """Drop the oldest values of these fields beyond MAX_HISTORY_PER_FIELD."""
        for key in field_keys:
            where = {"subject_id": subject_id, "field_key": key}
            excess = await self._store.count(PROFILE_HISTORY, project_id, where) - MAX_HISTORY_PER_FIELD
            if excess <= 0:
                continue
            for old in await self._store.find(PROFILE_HISTORY, project_id, where, limit=excess):
                await self._store.delete(PROFILE_HISTORY, project_id, old["id"])
