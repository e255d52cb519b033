"""Type checks for the request fields the gateway passes on without reading: generation
parameters, tool definitions, tool choice.

A request for another provider's model is translated by LiteLLM, and a value of the wrong
type (a tool whose ``function`` is null, a ``max_tokens`` of "many", a ``tool_choice`` of 5)
fails inside that translation: a 500 carrying LiteLLM's message, the caller's mistake
reported as the gateway's. Checked before anything is read or sent, it is a 400 in the
surface's own shape, and nothing is stored or forwarded. Only types and required names are
checked: ranges and allowed values stay the provider's to judge, and fields not listed
pass untouched.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

from gateway.errors import BadRequest

# (accepts the value, what it must be: for the error message)
Kind = tuple[Callable[[Any], bool], str]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


NUMBER: Kind = (_is_number, "a number")
INTEGER: Kind = (lambda value: isinstance(value, int) and not isinstance(value, bool), "an integer")
BOOLEAN: Kind = (lambda value: isinstance(value, bool), "a boolean")
STRING: Kind = (lambda value: isinstance(value, str), "a string")
NAME: Kind = (lambda value: isinstance(value, str) and bool(value.strip()), "a non-empty string")
OBJECT: Kind = (lambda value: isinstance(value, dict), "an object")
STRINGS: Kind = (_is_strings, "an array of strings")
STRING_OR_STRINGS: Kind = (lambda value: isinstance(value, str) or _is_strings(value),
                           "a string or an array of strings")
STRING_OR_OBJECT: Kind = (lambda value: isinstance(value, (str, dict)), "a string or an object")
OBJECTS: Kind = (lambda value: isinstance(value, list) and all(isinstance(item, dict) for item in value),
                 "an array of objects")


def check_fields(value: dict[str, Any], kinds: dict[str, Kind], *, where: str = "", code: str | None = None,
                 required: tuple[str, ...] = ()) -> None:
    """Each field of ``kinds`` in ``value`` has its kind (null counts as absent); those in
    ``required`` are present. ``where`` is the path of ``value`` in the request, for the
    error's ``param``; the code is ``code``, or ``invalid_<field>`` for top-level fields."""
    for field, (accepts, description) in kinds.items():
        item = value.get(field)
        path = f"{where}.{field}" if where else field
        if item is None and field not in required:
            continue
        if item is None or not accepts(item):
            raise BadRequest(f"{path} must be {description}", code=code or f"invalid_{field}", param=path)


def check_each(body: dict[str, Any], field: str, check: Callable[[dict[str, Any], str], None]) -> None:
    """``body[field]``, when given, is an array of objects, and ``check(item, path)`` passes for each."""
    items = body.get(field)
    if items is None:
        return
    if not isinstance(items, list):
        raise BadRequest(f"{field} must be an array", code=f"invalid_{field}", param=field)
    for index, item in enumerate(items):
        where = f"{field}[{index}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object", code=f"invalid_{field}", param=where)
        check(item, where)
