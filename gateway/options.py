"""The ``mnx`` options of a proxied request, resolved into one typed value.

Precedence: the body's ``mnx`` object, then ``x-mnx-*`` headers (for SDKs that drop
unknown body fields), then the gateway's configured defaults. JSON ``null`` means
"not set"; unknown keys are ignored, as the contract requires; a known key with a
wrong type is a 400 that names it.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from starlette.datastructures import Headers

from gateway.config import MnxDefaults
from gateway.errors import BadRequest
from gateway.validation import parse_json

MAX_ID_LENGTH = 256

LearnMode = bool | Literal["force"]


@dataclass(frozen=True)
class StateOption:
    load: bool
    key: str


@dataclass(frozen=True)
class MnxOptions:
    subject_id: str
    chat_id: str
    log: bool
    learn: LearnMode
    recall: bool
    history: bool
    # True: resolve the scoped defaults; False: no prompt; a string: that prompt's id.
    system_prompt: bool | str
    # True: resolve the scoped default policies; False: none; a string: that policy's id.
    memory_policy: bool | str
    profile: bool
    metadata: dict[str, Any] | None
    state: StateOption | None
    records: dict[str, Any] | None
    # The options the caller set (in the body or a header), as opposed to configured defaults.
    given: frozenset[str] = frozenset()


def _invalid(field: str, expected: str) -> BadRequest:
    return BadRequest(f"mnx.{field} must be {expected}", code="invalid_mnx", param=f"mnx.{field}")


def _header_bool(raw: str, field: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise _invalid(field, "true or false")


def _header_json(raw: str, field: str) -> Any:
    try:
        return parse_json(raw)
    except ValueError:
        raise _invalid(field, "valid JSON") from None


class _Reader:
    """Reads one field from body, then header, converting header text to the body's types."""

    def __init__(self, body: dict[str, Any], headers: Headers) -> None:
        self._body = body
        self._headers = headers
        self.given: set[str] = set()

    def raw(self, field: str, kind: str) -> Any:
        value = self._body.get(field)
        if value is not None:
            self.given.add(field)
            return value
        header = self._headers.get("x-mnx-" + field.replace("_", "-"))
        if header is None or header == "":
            return None
        self.given.add(field)
        if kind == "bool":
            return _header_bool(header, field)
        if kind == "bool_or_str":
            lowered = header.strip().lower()
            return lowered == "true" if lowered in ("true", "false") else header.strip()
        if kind == "learn":
            return "force" if header.strip().lower() == "force" else _header_bool(header, field)
        if kind == "json":
            return _header_json(header, field)
        return header

    def boolean(self, field: str, default: bool) -> bool:
        value = self.raw(field, "bool")
        if value is None:
            return default
        if not isinstance(value, bool):
            raise _invalid(field, "a boolean")
        return value

    def identifier(self, field: str) -> str | None:
        value = self.raw(field, "str")
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise _invalid(field, "a non-empty string")
        if len(value) > MAX_ID_LENGTH:
            raise _invalid(field, f"at most {MAX_ID_LENGTH} characters")
        if not value.isprintable():
            # Ids come back in response headers and are stored: no control characters.
            raise _invalid(field, "printable text without control characters")
        return value

    def bool_or_id(self, field: str, default: bool) -> bool | str:
        value = self.raw(field, "bool_or_str")
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip():
            return value.strip()
        raise _invalid(field, "true, false or an id string")

    def obj(self, field: str) -> dict[str, Any] | None:
        value = self.raw(field, "json")
        if value is None:
            return None
        if not isinstance(value, dict):
            raise _invalid(field, "an object")
        return value


def _parse_state(value: dict[str, Any] | None) -> StateOption | None:
    if value is None:
        return None
    load = value.get("load", False)
    key = value.get("key")
    if not isinstance(load, bool):
        raise _invalid("state.load", "a boolean")
    if key is not None and (not isinstance(key, str) or not key):
        raise _invalid("state.key", "a non-empty string")
    if load and key is None:
        raise _invalid("state.key", "given when state.load is true")
    return StateOption(load=load, key=key or "")


def new_subject_id() -> str:
    return "subj_" + secrets.token_hex(8)


def new_chat_id() -> str:
    return str(uuid.uuid4())


def parse_options(mnx: Any, headers: Headers, defaults: MnxDefaults, *, history_default: bool | None = None) -> MnxOptions:
    """Resolve a request's options. ``history_default`` lets a surface differ (Responses: off)."""
    if mnx is None:
        mnx = {}
    if not isinstance(mnx, dict):
        raise BadRequest("mnx must be an object", code="invalid_mnx", param="mnx")
    read = _Reader(mnx, headers)

    learn = read.raw("learn", "learn")
    if learn is None:
        learn = defaults.learn
    elif not (isinstance(learn, bool) or learn == "force"):
        raise _invalid("learn", 'true, false or "force"')

    return MnxOptions(
        subject_id=read.identifier("subject_id") or new_subject_id(),
        chat_id=read.identifier("chat_id") or new_chat_id(),
        log=read.boolean("log", defaults.log),
        learn=learn,
        recall=read.boolean("recall", defaults.recall),
        history=read.boolean("history", defaults.history if history_default is None else history_default),
        system_prompt=read.bool_or_id("system_prompt", defaults.system_prompt),
        memory_policy=read.bool_or_id("memory_policy", True),
        profile=read.boolean("profile", False),
        metadata=read.obj("metadata"),
        state=_parse_state(read.obj("state")),
        records=read.obj("records"),
        given=frozenset(read.given),
    )
