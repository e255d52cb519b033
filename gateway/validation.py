"""Reading request bodies and query strings field by field, with 400s that name the field.

JSON ``null`` counts as absent everywhere (the mnexium SDK sends nulls for unset
options). Booleans also accept 1/0, as the Mnexium docs encode them that way.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, overload

from starlette.requests import Request

from gateway.errors import BadRequest, PayloadTooLarge

# A \u escape of a UTF-16 surrogate: JSON lets one stand alone ("\ud800"), Unicode text
# cannot hold it, and no store, index or provider can take it.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# Deeper than any real request nests (a tool's JSON schema: a dozen levels), and far enough
# below Python's recursion limit that storing, forwarding or answering with the value
# cannot hit it (a body nested ~960 deep parsed, was stored, and every read was a 500).
MAX_JSON_DEPTH = 100


class InvalidJson(ValueError):
    """Text that is not JSON the gateway can keep: a parse error, NaN or Infinity (Python's
    json reads them, JSON has none, nothing would write them back), a lone surrogate, or
    nesting deeper than MAX_JSON_DEPTH."""


def _not_a_json_constant(name: str) -> float:
    raise InvalidJson(f"{name} is not a JSON number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise InvalidJson(f"{literal} is too large for a number")
    return value


def parse_json(raw: str | bytes) -> Any:
    """``json.loads`` that refuses what the gateway cannot store or forward (see InvalidJson)."""
    try:
        value = json.loads(raw, parse_constant=_not_a_json_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidJson(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except InvalidJson:
        raise
    except (ValueError, UnicodeDecodeError):
        raise InvalidJson("not valid JSON") from None
    encoded = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    # Only a text with that many brackets can nest that deep, and only one with a
    # surrogate escape can hold a lone one: most bodies skip the walk.
    deep = encoded.count(b"[") + encoded.count(b"{") > MAX_JSON_DEPTH
    surrogates = _SURROGATE_ESCAPE.search(encoded) is not None
    if deep or surrogates:
        _check_value(value, surrogates)
    return value


def _is_text(value: str) -> bool:
    """False if ``value`` holds a lone surrogate (it cannot be encoded as UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_value(value: Any, strings: bool) -> None:
    """Raise InvalidJson if parsed JSON nests deeper than MAX_JSON_DEPTH or (``strings``)
    holds a lone surrogate in a key or a string. Iterative: depth is what it checks."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if strings and not _is_text(item):
                raise InvalidJson("a lone UTF-16 surrogate escape (\\ud800-\\udfff) is not Unicode text")
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            raise InvalidJson(f"nested deeper than {MAX_JSON_DEPTH} levels")
        children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        pending.extend((child, depth + 1) for child in children)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body exactly as sent; 413 as soon as it passes ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > max_bytes:
                raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes", max=max_bytes)
        except ValueError:
            raise BadRequest("invalid Content-Length header") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            # Stop reading here: the rest of an oversized body is never buffered.
            raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes", max=max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_object(request: Request, max_bytes: int, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object; 413 as soon as it passes ``max_bytes``.
    ``allow_empty``: no body at all reads as ``{}`` (for a route whose body is all optional)."""
    raw = await read_body(request, max_bytes)
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequest("request body is empty; expected a JSON object", code="invalid_json_body")
    try:
        data = parse_json(raw)
    except InvalidJson as error:
        raise BadRequest(f"request body is not usable JSON: {error}", code="invalid_json_body") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json_body")
    return data


def addressable_id(value: str | None, max_length: int, reserved: tuple[str, ...] = ()) -> str | None:
    """A client-chosen id, checked to be readable back at ``/{collection}/{id}``: no slash or
    control character, no surrounding spaces, not "." or "..", nor a name the collection's
    routes take for themselves (``reserved``). None when the client chose none."""
    if value is None or value == "":
        return None
    if (len(value) > max_length or value.strip() != value or value in (".", "..", *reserved)
            or "/" in value or not value.isprintable()):
        names = ", ".join(reserved + (".", ".."))
        raise BadRequest(f"id must be at most {max_length} printable characters without '/' or surrounding "
                         f"spaces, and none of {names}", code="invalid_id", param="id")
    return value


def invalid(name: str, expected: str, code: str | None = None) -> BadRequest:
    """The 400 for a field or parameter of the wrong type or range: "<name> must be <expected>"."""
    return BadRequest(f"{name} must be {expected}", code=code or f"invalid_{name}", param=name)


def bool_from_text(text: str) -> bool | None:
    """A boolean written as text (query strings, headers): true/1/yes or false/0/no, any case; None if neither."""
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    return None


class Body:
    """Typed access to the fields of a JSON object body.

    ``prefix`` names the object's place in the request ("mnx." for the proxy's options), so a
    400 names the field the client wrote; ``code``, when given, is the error code of every
    wrong-type or out-of-range field instead of ``invalid_<field>``.
    """

    def __init__(self, data: Mapping[str, Any], *, prefix: str = "", code: str | None = None) -> None:
        self._data = data
        self._prefix = prefix
        self._code = code

    def has(self, field: str) -> bool:
        return field in self._data

    def value(self, field: str) -> Any:
        """The field as sent, unchecked (None if absent): for a check no method here makes."""
        return self._data.get(field)

    def invalid(self, field: str, expected: str) -> BadRequest:
        return invalid(self._prefix + field, expected, self._code)

    @overload
    def string(self, field: str, *, required: Literal[True], code: str | None = None,
               max_length: int | None = None, strip: bool = False) -> str: ...

    @overload
    def string(self, field: str, *, required: bool = False, code: str | None = None,
               max_length: int | None = None, strip: bool = False) -> str | None: ...

    def string(self, field: str, *, required: bool = False, code: str | None = None,
               max_length: int | None = None, strip: bool = False) -> str | None:
        """The field's string; ``strip``: without surrounding whitespace, measured as such."""
        value = self._data.get(field)
        if value is None or (required and isinstance(value, str) and not value.strip()):
            if required:
                raise BadRequest(f"{field} is required", code=code or f"{field}_required", param=field)
            return None
        if not isinstance(value, str):
            raise self.invalid(field, "a string")
        if strip:
            value = value.strip()
        if max_length is not None and len(value) > max_length:
            raise BadRequest(f"{field} must be at most {max_length} characters", code=f"{field}_too_long",
                             param=field, max=max_length)
        return value

    def choice(self, field: str, allowed: Sequence[str]) -> str | None:
        """The field's string, which must be one of ``allowed``."""
        value = self.string(field)
        if value is not None and value not in allowed:
            raise self.invalid(field, f"one of {', '.join(allowed)}")
        return value

    def identifier(self, field: str, *, max_length: int) -> str | None:
        """A non-empty id of at most ``max_length`` printable characters: ids come back in
        response headers and are stored, so no control characters."""
        value = self._data.get(field)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.invalid(field, "a non-empty string")
        if len(value) > max_length:
            raise self.invalid(field, f"at most {max_length} characters")
        if not value.isprintable():
            raise self.invalid(field, "printable text without control characters")
        return value

    def flag(self, field: str, *, default: bool, numbers: bool = True) -> bool:
        """A boolean; ``numbers``: 1 and 0 count too (the Mnexium docs encode booleans so)."""
        value = self._data.get(field)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if numbers and value in (0, 1) and type(value) is int:
            return bool(value)
        raise self.invalid(field, "a boolean")

    def flag_or_id(self, field: str, *, default: bool) -> bool | str:
        """A boolean, or the (stripped, non-empty) id of one thing to use instead."""
        value = self._data.get(field)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip():
            return value.strip()
        raise self.invalid(field, "true, false or an id string")

    def integer(self, field: str, *, default: int | None, minimum: int, maximum: int) -> int | None:
        value = self._data.get(field)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise self.invalid(field, "an integer")
        if not minimum <= value <= maximum:
            raise self.invalid(field, f"between {minimum} and {maximum}")
        return int(value)

    def number(self, field: str, *, minimum: float, maximum: float) -> float | None:
        """A number (integer or not) from ``minimum`` to ``maximum``; one check, one message."""
        value = self._data.get(field)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not minimum <= value <= maximum:
            raise self.invalid(field, f"a number from {minimum:g} to {maximum:g}")
        return value

    def strings(self, field: str) -> list[str] | None:
        """An array of strings."""
        value = self._data.get(field)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.invalid(field, "an array of strings")
        return value

    def obj(self, field: str) -> dict[str, Any] | None:
        value = self._data.get(field)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.invalid(field, "an object")
        return value


class Query:
    """Typed access to query-string parameters."""

    def __init__(self, request: Request) -> None:
        self._params = request.query_params

    @overload
    def string(self, name: str, *, required: Literal[True], code: str | None = None) -> str: ...

    @overload
    def string(self, name: str, *, required: bool = False, code: str | None = None) -> str | None: ...

    def string(self, name: str, *, required: bool = False, code: str | None = None) -> str | None:
        value = self._params.get(name)
        if value is None or not value.strip():
            if required:
                raise BadRequest(f"the {name} query parameter is required", code=code or f"{name}_required",
                                 param=name)
            return None
        return value

    def integer(self, name: str, *, default: int, minimum: int, maximum: int) -> int:
        """Out-of-range values are clamped, not rejected (clients send e.g. limit=1000)."""
        value = self._params.get(name)
        if value is None or value == "":
            return default
        try:
            number = int(value)
        except ValueError:
            raise invalid(name, "an integer") from None
        return max(minimum, min(maximum, number))

    def flag(self, name: str, *, default: bool) -> bool:
        value = self._params.get(name)
        if value is None or value == "":
            return default
        flag = bool_from_text(value)
        if flag is None:
            raise invalid(name, "true or false")
        return flag
