"""Record schemas: a type's fields, and record data checked and normalised against them.

A schema is what ``POST /records/schemas`` defines (contract §10.1): a type name and its
fields, each of one field type or an array of one:

=========  ===========================================================================
string     text up to 1,000 characters, ordered-indexed (equality, ranges, order_by)
text       text up to 20,000 characters, searchable, not ordered-indexed
number     a finite JSON number (not a boolean)
integer    a whole number, |v| <= 2**53 (``3.0`` is read as ``3``)
boolean    true or false
date       ``"YYYY-MM-DD"``
datetime   ISO 8601; stored in UTC as ``"YYYY-MM-DDTHH:MM:SS[.ffffff]Z"`` (a naive time is UTC)
enum       one of the field's ``values``
ref        the record id of a record of type ``ref`` (``{"type": "ref", "ref": "customer"}``
           or ``"ref:customer"``)
=========  ===========================================================================

Arrays: ``{"type": "array", "items": <definition>}`` or ``"string[]"``, ``"ref:customer[]"``.
A bare string is shorthand for ``{"type": ...}``; ``str``, ``int``, ``float``, ``bool``,
``timestamp`` and ``reference`` are accepted for the types they name.

Record data is stored *normalised* (one spelling per value), so that equality, ordering and
the store's ordered indexes all read the same thing; normalising a normalised value changes
nothing, so stored data re-validates as it is (a schema change checks records that way).
No string may hold NUL: the Redis store separates an ordered text value from its document id
with it, and no search index wants one.

Pure logic, no I/O: the records service (gateway/records/records.py) stores what this returns.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from gateway.errors import BadRequest

FIELD_TYPES = ("string", "text", "number", "integer", "boolean", "date", "datetime", "enum", "ref")
# Other spellings clients send for the same types (Python's, SQL's, the blog's).
TYPE_ALIASES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "timestamp": "datetime",
                "reference": "ref"}
# Ordered-indexed as numbers (booleans as 0/1, dates and datetimes as epoch seconds), or as strings.
NUMERIC_INDEXED = frozenset({"number", "integer", "boolean", "date", "datetime"})
TEXT_INDEXED = frozenset({"string", "enum", "ref"})

MAX_STRING_LENGTH = 1_000
MAX_TEXT_LENGTH = 20_000
# Beyond 2**53 a JSON number loses integer precision in most clients (JavaScript's among them).
MAX_INTEGER = 2 ** 53
MAX_FIELDS = 100
MAX_ARRAY_LENGTH = 1_000
MAX_ENUM_VALUES = 500
MAX_REF_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 2_000
MAX_DISPLAY_NAME_LENGTH = 200

FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Every record has these beside its data, and a where / order_by may name them (gateway/records/query.py):
# a schema cannot declare them, or "created_at" in a query or an index name would mean two things.
BUILTIN_FIELDS = ("record_id", "owner_id", "created_at", "updated_at")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class FieldDef:
    name: str
    type: str  # one of FIELD_TYPES; for an array, the type of its elements
    required: bool = False
    description: str = ""
    display_name: str | None = None
    values: tuple[str, ...] = ()  # enum
    ref: str | None = None  # ref: the target type name
    array: bool = False  # an array of `type`

    @property
    def label(self) -> str:
        """What people call the field (search text, messages)."""
        return self.display_name or self.name

    @property
    def type_label(self) -> str:
        """The type in the shorthand spelling: "number", "ref:customer", "string[]"."""
        base = f"ref:{self.ref}" if self.type == "ref" else self.type
        return base + "[]" if self.array else base

    def to_api(self) -> dict[str, Any]:
        """The definition as the API returns it; ``parse_schema`` reads it back unchanged."""
        element: dict[str, Any] = {"type": self.type}
        if self.type == "enum":
            element["values"] = list(self.values)
        if self.type == "ref":
            element["ref"] = self.ref
        head = {"type": "array", "items": element} if self.array else element
        return {**head, "required": self.required, "description": self.description,
                "display_name": self.display_name}

    def index_kind(self) -> str | None:
        """How the field is ordered-indexed: "numeric", "text", or None (text fields: not indexed).
        An array is indexed by each of its elements."""
        if self.type in NUMERIC_INDEXED:
            return "numeric"
        if self.type in TEXT_INDEXED:
            return "text"
        return None


@dataclass(frozen=True)
class RecordSchema:
    type_name: str
    fields: dict[str, FieldDef] = field(default_factory=dict)
    display_name: str | None = None
    description: str = ""


# --- schemas -----------------------------------------------------------------------------------


def _schema_error(message: str, param: str) -> BadRequest:
    return BadRequest(message, code="invalid_schema", param=param)


def parse_schema(body: Mapping[str, Any]) -> RecordSchema:
    """The schema a ``POST /records/schemas`` body (or a stored schema document) defines.

    Fields come from ``fields``, or from ``schema.fields`` (the legacy wrapper CART sends, with
    ``subject_id`` and ``mnx`` beside it: other top-level keys are ignored). Errors are 400s
    naming the offending part, e.g. ``fields.amount.type``."""
    if not isinstance(body, Mapping):
        raise _schema_error("a schema must be a JSON object", "type_name")
    type_name = body.get("type_name")
    if not isinstance(type_name, str) or not TYPE_NAME.fullmatch(type_name):
        raise BadRequest("type_name is required: a letter, then up to 63 letters, digits, _ or -",
                         code="invalid_type_name", param="type_name")
    fields = body.get("fields")
    if fields is None and isinstance(body.get("schema"), Mapping):
        fields = body["schema"].get("fields")
    if not isinstance(fields, Mapping):
        raise _schema_error("fields is required: an object of field name -> definition, e.g. "
                            '{"amount": {"type": "number", "required": true}}', "fields")
    if len(fields) > MAX_FIELDS:
        raise _schema_error(f"a schema has at most {MAX_FIELDS} fields, not {len(fields)}", "fields")
    parsed: dict[str, FieldDef] = {}
    for name, definition in fields.items():
        param = f"fields.{str(name)[:100]}"
        if not isinstance(name, str) or not FIELD_NAME.fullmatch(name):
            raise _schema_error(f"{param}: a field name is a letter or _, then up to 63 letters, digits or _", param)
        if name in BUILTIN_FIELDS:
            raise _schema_error(f"{param}: {name} is a built-in field of every record, not a schema field", param)
        parsed[name] = _parse_field(name, definition, param)
    return RecordSchema(type_name, parsed, _display_name(body.get("display_name"), "display_name"),
                        _description(body.get("description"), "description"))


def _parse_field(name: str, definition: Any, param: str) -> FieldDef:
    spec = _definition(definition, param)
    kind, values, ref, array = _parse_type(spec, param)
    required = spec.get("required")
    if required is not None and not isinstance(required, bool):
        raise _schema_error(f"{param}.required must be true or false", f"{param}.required")
    return FieldDef(name, kind, required=bool(required), description=_description(spec.get("description"),
                                                                                   f"{param}.description"),
                    display_name=_display_name(spec.get("display_name"), f"{param}.display_name"),
                    values=values, ref=ref, array=array)


def _definition(definition: Any, param: str) -> Mapping[str, Any]:
    if isinstance(definition, str):
        return {"type": definition}
    if isinstance(definition, Mapping):
        return definition
    raise _schema_error(f"{param} must be a type name (\"number\") or an object with a type", param)


def _parse_type(spec: Mapping[str, Any], param: str) -> tuple[str, tuple[str, ...], str | None, bool]:
    """(element type, enum values, ref target, is an array) of one definition."""
    raw = spec.get("type")
    if not isinstance(raw, str) or not raw.strip():
        raise _schema_error(f"{param}.type is required: one of {', '.join(FIELD_TYPES)}, or an array",
                            f"{param}.type")
    text = raw.strip()
    array = text.endswith("[]")
    if array:
        text = text[:-2]
    base, colon, target = text.partition(":")
    base = base.strip().lower()
    base = TYPE_ALIASES.get(base, base)
    if base == "array" and not array and not colon:
        items_param = f"{param}.items"
        if spec.get("items") is None:
            raise _schema_error(f"{items_param} is required for an array: the definition of its elements",
                                items_param)
        items = _definition(spec["items"], items_param)
        kind, values, ref, nested = _parse_type(items, items_param)
        if nested:
            raise _schema_error(f"{items_param}: arrays of arrays are not supported", f"{items_param}.type")
        return kind, values, ref, True
    if base not in FIELD_TYPES or (colon and base != "ref"):
        raise _schema_error(f"{param}.type: unknown type {raw[:100]!r}; use one of {', '.join(FIELD_TYPES)}, "
                            "\"ref:<type_name>\", or an array (\"string[]\", {\"type\": \"array\", \"items\": ...})",
                            f"{param}.type")
    return base, _enum_values(base, spec, param), _ref_target(base, target.strip() if colon else None, spec, param), \
        array


def _enum_values(kind: str, spec: Mapping[str, Any], param: str) -> tuple[str, ...]:
    values = spec.get("values")
    if kind != "enum":
        if values is not None:
            raise _schema_error(f"{param}.values: values apply to enum fields only", f"{param}.values")
        return ()
    if not isinstance(values, list) or not values:
        raise _schema_error(f"{param}.values is required for an enum: a non-empty array of strings",
                            f"{param}.values")
    if len(values) > MAX_ENUM_VALUES:
        raise _schema_error(f"{param}.values: at most {MAX_ENUM_VALUES} values", f"{param}.values")
    for value in values:
        if not isinstance(value, str) or not value or len(value) > MAX_STRING_LENGTH or "\x00" in value:
            raise _schema_error(f"{param}.values: each value is a non-empty string of at most {MAX_STRING_LENGTH} "
                                "characters (no NUL)", f"{param}.values")
    if len(set(values)) != len(values):
        raise _schema_error(f"{param}.values: values must be distinct", f"{param}.values")
    return tuple(values)


def _ref_target(kind: str, spelled: str | None, spec: Mapping[str, Any], param: str) -> str | None:
    given = spec.get("ref")
    if kind != "ref":
        if given is not None:
            raise _schema_error(f"{param}.ref: ref applies to ref fields only", f"{param}.ref")
        return None
    if spelled and given is not None and given != spelled:
        raise _schema_error(f"{param}.ref: the type says ref:{spelled} but ref says {given!r}", f"{param}.ref")
    target = spelled or given
    if not isinstance(target, str) or not TYPE_NAME.fullmatch(target):
        raise _schema_error(f"{param}.ref is required for a ref field: the type name of the records it points at "
                            '({"type": "ref", "ref": "customer"} or "ref:customer")', f"{param}.ref")
    return target


def _description(value: Any, param: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION_LENGTH:
        raise _schema_error(f"{param} must be a string of at most {MAX_DESCRIPTION_LENGTH} characters", param)
    return value


def _display_name(value: Any, param: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_DISPLAY_NAME_LENGTH:
        raise _schema_error(f"{param} must be a string of at most {MAX_DISPLAY_NAME_LENGTH} characters", param)
    return value


# --- values ------------------------------------------------------------------------------------


class InvalidValue(ValueError):
    """A value its field's type does not take. The message completes "<param> ...", e.g.
    "must be a number, not a string"."""


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    return "an object"


def _expected(definition: FieldDef) -> str:
    return {"string": "a string", "text": "a string", "number": "a number", "integer": "an integer",
            "boolean": "true or false", "date": 'a date "YYYY-MM-DD"',
            "datetime": 'an ISO 8601 date-time ("2024-05-01T12:30:00Z")',
            "enum": "one of " + ", ".join(repr(value) for value in definition.values[:20])
                    + (", ..." if len(definition.values) > 20 else ""),
            "ref": f"the record_id of a {definition.ref} record"}[definition.type]


def normalise_element(definition: FieldDef, value: Any) -> Any:
    """One value of the field's (element) type, normalised; raises InvalidValue otherwise.
    ``definition.array`` is not looked at: this checks one element."""
    kind = definition.type
    if kind in ("string", "text", "enum", "ref", "date", "datetime") and not isinstance(value, str):
        raise InvalidValue(f"must be {_expected(definition)}, not {_json_kind(value)}")
    if kind in ("string", "text"):
        limit = MAX_STRING_LENGTH if kind == "string" else MAX_TEXT_LENGTH
        if len(value) > limit:
            raise InvalidValue(f"must be at most {limit:,} characters, not {len(value):,}"
                               + (" (use a text field for longer text)" if kind == "string" else ""))
        if "\x00" in value:
            raise InvalidValue("cannot contain the NUL character")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidValue(f"must be a number, not {_json_kind(value)}")
        if isinstance(value, int):
            # Beyond 2**53 a JSON integer is no longer exact as a number anywhere it goes (the
            # Redis index's scores, JavaScript clients), and beyond 64 bits nothing stores it.
            if abs(value) > MAX_INTEGER:
                raise InvalidValue("must be between -2**53 and 2**53 when an integer (write it as a decimal "
                                   "number, e.g. 1.5e20, for larger values)")
        elif not math.isfinite(value):
            raise InvalidValue("must be a finite number")
        return value
    if kind == "integer":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            got = value if isinstance(value, float) else _json_kind(value)
            raise InvalidValue(f"must be an integer, not {got}")
        if abs(value) > MAX_INTEGER:
            raise InvalidValue("must be between -2**53 and 2**53")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidValue(f"must be true or false, not {_json_kind(value)}")
        return value
    if kind == "date":
        if not _DATE.fullmatch(value):
            raise InvalidValue(f"must be {_expected(definition)}, not {value[:40]!r}")
        try:
            date.fromisoformat(value)
        except ValueError:
            raise InvalidValue(f"is not a calendar date: {value!r}") from None
        return value
    if kind == "datetime":
        return normalise_datetime(value)
    if kind == "enum":
        if value not in definition.values:
            raise InvalidValue(f"must be {_expected(definition)}, not {value[:100]!r}")
        return value
    # ref
    if not value or len(value) > MAX_REF_LENGTH or any(ord(char) < 0x20 for char in value):
        raise InvalidValue(f"must be {_expected(definition)} (at most {MAX_REF_LENGTH} printable characters)")
    return value


def normalise_datetime(value: str) -> str:
    """An ISO 8601 date-time as ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` in UTC; a naive time is UTC."""
    moment = _parse_moment(value)
    micro = f".{moment.microsecond:06d}" if moment.microsecond else ""
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
            f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}{micro}Z")


def _parse_moment(value: str) -> datetime:
    if len(value) > 64:
        raise InvalidValue("must be an ISO 8601 date-time of at most 64 characters")
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidValue(f'must be an ISO 8601 date-time ("2024-05-01T12:30:00Z"), not {value[:64]!r}') from None


@functools.lru_cache(maxsize=4096)
def epoch_seconds(value: str) -> float:
    """Seconds since 1970 (UTC) of a date or date-time string: what the ordered index holds for
    date and datetime fields, and what query operands on them are compared as. Whole seconds
    come back as an int. Raises InvalidValue (a ValueError) for anything else."""
    delta = _parse_moment(value) - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds
    return seconds + delta.microseconds / 1_000_000 if delta.microseconds else seconds


def validate_data(schema: RecordSchema, data: Any, *, partial: bool = False) -> dict[str, Any]:
    """The record's data, checked against the schema and normalised.

    400s: ``invalid_data`` (not an object, param ``data``); ``unknown_field``,
    ``invalid_field_value`` (the message names the expected type) and ``missing_required_field``,
    each with param ``data.<name>``. A null is an absent field on insert; with ``partial``
    (PUT merges the result into the stored data) a null means "remove this field" and is kept
    as None, and required fields are not checked: the merged data is validated again whole."""
    if not isinstance(data, Mapping):
        raise BadRequest(f"data must be an object of field name -> value, not {_json_kind(data)}",
                         code="invalid_data", param="data")
    checked: dict[str, Any] = {}
    for name, value in data.items():
        param = f"data.{str(name)[:100]}"
        definition = schema.fields.get(name)
        if definition is None:
            known = ", ".join(list(schema.fields)[:30]) or "none"
            raise BadRequest(f"{param}: the {schema.type_name} schema has no field {str(name)[:100]!r} (fields: "
                             f"{known})", code="unknown_field", param=param)
        if value is None:
            if partial:
                checked[name] = None
            continue
        checked[name] = normalise_value(definition, value, param)
    if not partial:
        for name, definition in schema.fields.items():
            if definition.required and name not in checked:
                raise BadRequest(f"data.{name} is required ({definition.type_label})", code="missing_required_field",
                                 param=f"data.{name}")
    return checked


def normalise_value(definition: FieldDef, value: Any, param: str) -> Any:
    """A field's value (an array for an array field) normalised; a 400 ``invalid_field_value`` otherwise."""
    try:
        if not definition.array:
            return normalise_element(definition, value)
        if not isinstance(value, list):
            raise InvalidValue(f"must be an array of {_expected(definition)}, not {_json_kind(value)}")
        if len(value) > MAX_ARRAY_LENGTH:
            raise InvalidValue(f"holds at most {MAX_ARRAY_LENGTH:,} elements, not {len(value):,}")
        elements = []
        for position, element in enumerate(value):
            try:
                elements.append(normalise_element(definition, element))
            except InvalidValue as error:
                raise InvalidValue(f"[{position}] {error}") from None
        return elements
    except InvalidValue as error:
        raise BadRequest(f"{param} {error}", code="invalid_field_value", param=param) from None


# --- what the indexes read ---------------------------------------------------------------------


def index_value(definition: FieldDef, element: Any) -> float | str:
    """One normalised element as its field's ordered index holds it: numbers as numbers (ints
    beyond 2**53 as floats, which a 64-bit store column can hold), booleans as 0/1, dates and
    datetimes as epoch seconds, strings as they are."""
    kind = definition.type
    if kind == "boolean":
        return 1 if element else 0
    if kind in ("date", "datetime"):
        return epoch_seconds(element)
    if kind in ("number", "integer"):
        return float(element) if isinstance(element, int) and abs(element) > MAX_INTEGER else element
    return element


def ordered_values(schema: RecordSchema, data: Mapping[str, Any]) -> dict[str, list[float | str]]:
    """Field name -> the values its ordered index holds for this (normalised) data: every element
    of an array (each once), nothing for text fields and absent or null ones."""
    indexed: dict[str, list[float | str]] = {}
    for name, value in data.items():
        definition = schema.fields.get(name)
        if definition is None or value is None or definition.index_kind() is None:
            continue
        elements = value if definition.array else [value]
        values = list(dict.fromkeys(index_value(definition, element) for element in elements))
        if values:
            indexed[name] = values
    return indexed


def searchable_text(schema: RecordSchema, data: Mapping[str, Any]) -> str:
    """The words search indexes: one line per string, text or enum field that has a value,
    ``"<display name or name>: <value>"`` (arrays joined by ", "), in schema order."""
    lines = []
    for name, definition in schema.fields.items():
        if definition.type not in ("string", "text", "enum"):
            continue
        value = data.get(name)
        text = ", ".join(str(element) for element in value) if isinstance(value, list) else value
        if isinstance(text, str) and text.strip():
            lines.append(f"{definition.label}: {text}")
    return "\n".join(lines)


def _element_json_schema(definition: FieldDef) -> dict[str, Any]:
    kind = definition.type
    if kind in ("string", "text"):
        return {"type": "string", "maxLength": MAX_STRING_LENGTH if kind == "string" else MAX_TEXT_LENGTH}
    if kind == "date":
        return {"type": "string", "format": "date"}
    if kind == "datetime":
        return {"type": "string", "format": "date-time"}
    if kind == "enum":
        return {"type": "string", "enum": list(definition.values)}
    if kind == "ref":
        return {"type": "string", "description": f"the record_id of a {definition.ref} record"}
    return {"type": kind}  # number, integer, boolean: JSON Schema's own names


def json_schema(schema: RecordSchema) -> dict[str, Any]:
    """A JSON Schema of the record data (what the LLM records extractor is asked to produce)."""
    properties: dict[str, Any] = {}
    for name, definition in schema.fields.items():
        element = _element_json_schema(definition)
        prop: dict[str, Any] = {"type": "array", "items": element} if definition.array else dict(element)
        notes = [text for text in (definition.display_name, definition.description, prop.get("description"))
                 if text]
        if notes:
            prop["description"] = " - ".join(notes)
        properties[name] = prop
    result: dict[str, Any] = {"type": "object", "title": schema.display_name or schema.type_name,
                              "properties": properties,
                              "required": [name for name, definition in schema.fields.items() if definition.required],
                              "additionalProperties": False}
    if schema.description:
        result["description"] = schema.description
    return result


# --- schema changes ----------------------------------------------------------------------------

# (old type, new type) pairs where every valid old value is a valid new value (normalised alike).
_WIDENINGS = frozenset({("integer", "number"), ("string", "text"), ("enum", "string"), ("enum", "text"),
                        ("ref", "string"), ("ref", "text")})


def compatibility_risks(old: RecordSchema, new: RecordSchema) -> list[str]:
    """The changes of ``new`` over ``old`` that some existing record could violate: a removed field,
    a changed type (widenings such as integer -> number, string -> text, enum -> string excepted),
    a field newly required (or added as required), enum values removed, a ref target changed.
    [] when every record valid under ``old`` is valid under ``new``."""
    risks: list[str] = []
    for name, before in old.fields.items():
        after = new.fields.get(name)
        if after is None:
            risks.append(f"{name}: removed")
            continue
        if before.array != after.array or (before.type != after.type
                                           and (before.type, after.type) not in _WIDENINGS):
            risks.append(f"{name}: type changed from {before.type_label} to {after.type_label}")
        elif before.type == after.type == "enum" and set(before.values) - set(after.values):
            removed = [value for value in before.values if value not in after.values]
            risks.append(f"{name}: enum values removed: {', '.join(removed[:20])}")
        elif before.type == after.type == "ref" and before.ref != after.ref:
            risks.append(f"{name}: ref target changed from {before.ref} to {after.ref}")
        if after.required and not before.required:
            risks.append(f"{name}: now required")
    risks += [f"{name}: new required field" for name, after in new.fields.items()
              if after.required and name not in old.fields]
    return risks


def reindex_needed(old: RecordSchema, new: RecordSchema) -> list[str]:
    """Fields kept by ``new`` whose ordered index entries the records stored under ``old`` do not
    hold as ``new`` would write them (a changed type or arrayness): the records of the type need
    their ordered values rewritten before the indexes answer queries on these fields."""
    return [name for name, after in new.fields.items()
            if name in old.fields and (old.fields[name].type, old.fields[name].array) != (after.type, after.array)
            and after.index_kind() is not None]
