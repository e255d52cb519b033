"""``output_map``: which values an integration reads out of a JSON answer (or webhook body).

A path is dotted object keys with ``[n]`` list indexes: ``data.items[0].name``, ``[2].id``.
A path that leads nowhere gives the mapping's default, or no value at all.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.errors import BadRequest

MAX_ENTRIES = 100
MAX_PATH_LENGTH = 512
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# One step: a key (no dots or brackets) or an index.
_STEP = re.compile(r"([^.\[\]]+)|\[(\d{1,6})\]")

Step = str | int


def parse_path(path: str) -> list[Step]:
    """The steps of a path; ValueError if it is not one."""
    steps: list[Step] = []
    position = 0
    while position < len(path):
        if steps and path[position] == ".":
            position += 1
        match = _STEP.match(path, position)
        if match is None or (match.group(1) is not None and steps and path[position - 1] != "."):
            raise ValueError(path)
        steps.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        position = match.end()
    if not steps or path.endswith("."):
        raise ValueError(path)
    return steps


def validate(value: Any, field: str = "output_map") -> list[dict[str, Any]]:
    """The output_map of a request body: 1 to MAX_ENTRIES rows of {key, path, default?}, keys unique."""
    if not isinstance(value, list) or not value:
        raise BadRequest(f"{field} must be a non-empty array of {{key, path, default?}}", code="invalid_output_map",
                         param=field)
    if len(value) > MAX_ENTRIES:
        raise BadRequest(f"{field} may hold at most {MAX_ENTRIES} entries", code="invalid_output_map", param=field)
    rows: list[dict[str, Any]] = []
    for index, row in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(row, dict) or set(row) - {"key", "path", "default"}:
            raise BadRequest(f"{where} must be an object with key, path and optionally default",
                             code="invalid_output_map", param=where)
        key, path = row.get("key"), row.get("path")
        if not isinstance(key, str) or not _KEY.match(key):
            raise BadRequest(f"{where}.key must be 1-128 letters, digits, '_', '-' or '.'",
                             code="invalid_output_map", param=f"{where}.key")
        if not isinstance(path, str) or len(path) > MAX_PATH_LENGTH:
            raise BadRequest(f"{where}.path must be a string of at most {MAX_PATH_LENGTH} characters",
                             code="invalid_output_map", param=f"{where}.path")
        try:
            parse_path(path)
        except ValueError:
            raise BadRequest(f"{where}.path must be dotted keys with [n] indexes, like data.items[0].name",
                             code="invalid_output_map", param=f"{where}.path") from None
        if any(existing["key"] == key for existing in rows):
            raise BadRequest(f"{where}.key {key!r} is mapped twice", code="invalid_output_map", param=f"{where}.key")
        entry = {"key": key, "path": path}
        if row.get("default") is not None:
            entry["default"] = row["default"]
        rows.append(entry)
    return rows


def lookup(document: Any, path: str) -> tuple[bool, Any]:
    """(found, value) of ``path`` in ``document``."""
    current = document
    for step in parse_path(path):
        if isinstance(step, int):
            if not isinstance(current, list) or step >= len(current):
                return False, None
        elif not isinstance(current, dict) or step not in current:
            return False, None
        current = current[step]
    return True, current


def apply(output_map: list[dict[str, Any]], document: Any) -> dict[str, Any]:
    """The values ``output_map`` reads from ``document``: found ones, else defaults; missing ones left out."""
    values: dict[str, Any] = {}
    for row in output_map:
        found, value = lookup(document, row["path"])
        if found and value is not None:
            values[row["key"]] = value
        elif "default" in row:
            values[row["key"]] = row["default"]
    return values
