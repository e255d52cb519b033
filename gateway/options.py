"""The ``mnx`` options of a proxied request, resolved into one typed value.

Precedence: the body's ``mnx`` object, then ``x-mnx-*`` headers (for SDKs that drop
unknown body fields), then the gateway's configured defaults. JSON ``null`` means
"not set"; unknown keys are ignored, as the contract requires; a known key with a
wrong type is a 400 that names it.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from starlette.datastructures import Headers

from gateway.config import MnxDefaults
from gateway.errors import BadRequest
from gateway.summaries.settings import SummarizeSettings, parse_summarize
from gateway.validation import Body, bool_from_text, invalid, parse_json

MAX_ID_LENGTH = 256

LearnMode = bool | Literal["force"]


@dataclass(frozen=True)
class StateOption:
    load: bool
    key: str


@dataclass(frozen=True)
class RecordsOption:
    """``mnx.records`` (contract §10.8)."""

    recall: bool = False
    # False: no records extraction; "auto": the extractor decides; "force": it always tries.
    learn: Literal[False, "auto", "force"] = False
    # Write the learned records before answering, and say what was written (non-streamed turns).
    sync: bool = False
    # The record types recalled and learned; None: every type of the project.
    tables: tuple[str, ...] | None = None


MAX_RECORD_TABLES = 50


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
    records: RecordsOption | None
    # Assemble for provider prompt caches (mnx.cache: true or "auto"): see gateway/pipeline/context.py.
    cache: bool = False
    # mnx.summarize / summarize_config: rolling summaries of long history (None: off).
    summarize: SummarizeSettings | None = None
    # mnx.explain: answer with the request the provider would get, without calling it (pipeline/explain.py).
    explain: bool = False
    # The options the caller set (in the body or a header), as opposed to configured defaults.
    given: frozenset[str] = frozenset()


# Every malformed option is one error code; its param is the option's place in the body.
_PREFIX = "mnx."
_CODE = "invalid_mnx"
# How each option's x-mnx-* header is read into the type its body field has.
_HEADER_KINDS = {
    "subject_id": "text", "chat_id": "text", "learn": "learn", "log": "bool", "recall": "bool", "history": "bool",
    "profile": "bool", "system_prompt": "bool_or_id", "memory_policy": "bool_or_id", "metadata": "json",
    "state": "json", "records": "json", "cache": "bool_or_auto", "summarize": "bool_or_id",
    "summarize_config": "json", "explain": "bool",
}


def _header_bool(raw: str, field: str) -> bool:
    flag = bool_from_text(raw.strip())
    if flag is None:
        raise invalid(_PREFIX + field, "true or false", _CODE)
    return flag


def _from_header(raw: str, field: str) -> Any:
    """A header's text as the value the body field would hold."""
    kind = _HEADER_KINDS.get(field, "text")
    if kind == "bool":
        return _header_bool(raw, field)
    if kind == "bool_or_id":
        lowered = raw.strip().lower()
        return lowered == "true" if lowered in ("true", "false") else raw.strip()
    if kind == "bool_or_auto":
        return "auto" if raw.strip().lower() == "auto" else _header_bool(raw, field)
    if kind == "learn":
        return "force" if raw.strip().lower() == "force" else _header_bool(raw, field)
    if kind == "json":
        try:
            return parse_json(raw)
        except ValueError:
            raise invalid(_PREFIX + field, "valid JSON", _CODE) from None
    return raw


class _BodyThenHeaders(Mapping[str, Any]):
    """The ``mnx`` object with each option falling back to its ``x-mnx-*`` header (for SDKs
    that drop unknown body fields), read lazily: an option is looked up, and a malformed
    header reported, in the order options are parsed. ``given``: the options the caller set."""

    def __init__(self, body: dict[str, Any], headers: Headers) -> None:
        self._body = body
        self._headers = headers
        self.given: set[str] = set()

    def __getitem__(self, field: str) -> Any:
        value = self._body.get(field)
        if value is not None:
            self.given.add(field)
            return value
        header = self._headers.get("x-mnx-" + field.replace("_", "-"))
        if header is None or header == "":
            raise KeyError(field)
        self.given.add(field)
        return _from_header(header, field)

    def __iter__(self) -> Iterator[str]:
        return iter(self._body)

    def __len__(self) -> int:
        return len(self._body)


def _parse_state(read: Body, value: dict[str, Any] | None) -> StateOption | None:
    # Stricter than Body.flag: a null or numeric load is a mistake here.
    if value is None:
        return None
    load = value.get("load", False)
    key = value.get("key")
    if not isinstance(load, bool):
        raise read.invalid("state.load", "a boolean")
    if key is not None and (not isinstance(key, str) or not key):
        raise read.invalid("state.key", "a non-empty string")
    if load and key is None:
        raise read.invalid("state.key", "given when state.load is true")
    return StateOption(load=load, key=key or "")


def _parse_records(read: Body, value: dict[str, Any] | None) -> RecordsOption | None:
    if value is None:
        return None
    records = Body(value, prefix=_PREFIX + "records.", code=_CODE)
    asked = value.get("learn")
    learn: Literal[False, "auto", "force"]
    if asked is None or asked is False:
        learn = False
    elif asked is True or asked == "auto":
        learn = "auto"
    elif asked == "force":
        learn = "force"
    else:
        raise read.invalid("records.learn", 'false, "auto" or "force"')
    tables = records.strings("tables")
    if tables is not None and (len(tables) > MAX_RECORD_TABLES or not all(tables)):
        raise read.invalid("records.tables", f"at most {MAX_RECORD_TABLES} type names")
    # sync means "wait for what learning writes": with learning off there is nothing to wait for.
    sync = records.flag("sync", default=False, numbers=False) and learn is not False
    return RecordsOption(recall=records.flag("recall", default=False, numbers=False), learn=learn, sync=sync,
                         tables=tuple(dict.fromkeys(tables)) if tables else None)


def _parse_cache(read: Body, default: bool) -> bool:
    value = read.value("cache")
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if value == "auto":
        return True
    raise read.invalid("cache", 'true, false or "auto"')


def new_subject_id() -> str:
    return "subj_" + secrets.token_hex(8)


def new_chat_id() -> str:
    return str(uuid.uuid4())


def parse_options(mnx: Any, headers: Headers, defaults: MnxDefaults, *,
                  history_default: bool | None = None) -> MnxOptions:
    """Resolve a request's options. ``history_default`` lets a surface differ (Responses: off)."""
    if mnx is None:
        mnx = {}
    if not isinstance(mnx, dict):
        raise BadRequest("mnx must be an object", code="invalid_mnx", param="mnx")
    options = _BodyThenHeaders(mnx, headers)
    # Options, unlike REST bodies, take no 1/0 for booleans (numbers=False).
    read = Body(options, prefix=_PREFIX, code=_CODE)

    learn = read.value("learn")
    if learn is None:
        learn = defaults.learn
    elif not (isinstance(learn, bool) or learn == "force"):
        raise read.invalid("learn", 'true, false or "force"')

    return MnxOptions(
        subject_id=read.identifier("subject_id", max_length=MAX_ID_LENGTH) or new_subject_id(),
        chat_id=read.identifier("chat_id", max_length=MAX_ID_LENGTH) or new_chat_id(),
        log=read.flag("log", default=defaults.log, numbers=False),
        learn=learn,
        recall=read.flag("recall", default=defaults.recall, numbers=False),
        history=read.flag("history", default=defaults.history if history_default is None else history_default,
                          numbers=False),
        system_prompt=read.flag_or_id("system_prompt", default=defaults.system_prompt),
        memory_policy=read.flag_or_id("memory_policy", default=True),
        profile=read.flag("profile", default=False, numbers=False),
        metadata=read.obj("metadata"),
        state=_parse_state(read, read.obj("state")),
        records=_parse_records(read, read.obj("records")),
        cache=_parse_cache(read, defaults.cache),
        summarize=parse_summarize(read, defaults),
        explain=read.flag("explain", default=False, numbers=False),
        given=frozenset(options.given),
    )
