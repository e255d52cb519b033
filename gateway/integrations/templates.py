"""``{{name}}`` placeholders in an integration's headers, query and body templates.

Plain text substitution of four known names, nothing else: no expressions, filters or
lookups, so a template can never run code or read anything the gateway did not hand it.
A placeholder with any other name is refused when the integration is saved.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gateway.errors import BadRequest

VARIABLES = ("subject_id", "chat_id", "project_id", "secret")
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


def check(value: Any, field: str) -> None:
    """Raise a 400 naming ``field`` if a string in ``value`` holds an unknown placeholder."""
    for text in _strings(value):
        for match in _PLACEHOLDER.finditer(text):
            if match.group(1) not in VARIABLES:
                raise BadRequest(f"{field}: unknown placeholder {{{{{match.group(1)}}}}} (known: "
                                 f"{', '.join(VARIABLES)})", code="invalid_template", param=field)


def used(value: Any) -> set[str]:
    """The placeholder names the strings in ``value`` use."""
    return {match.group(1) for text in _strings(value) for match in _PLACEHOLDER.finditer(text)}


def render(value: Any, variables: Mapping[str, str | None]) -> Any:
    """``value`` with every placeholder in its strings replaced (an unknown value renders empty).
    Object keys are left as they are."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: variables.get(m.group(1)) or "", value)
    if isinstance(value, dict):
        return {key: render(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, variables) for item in value]
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []
