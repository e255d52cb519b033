"""Stored documents, job payloads and the JSON the gateway sends on (provider request bodies,
recalled memories in a prompt) as JSON text.

orjson writes a document in about a ninth of the standard library's time and reads it
in about a quarter, and every turn writes and reads several (the stdlib's encoder and
decoder showed in the stores' own profile under load). What orjson refuses to write
(an integer beyond 64 bits in a client's metadata) or read (NaN, which the standard
library wrote for a float nan before this module existed) goes through the standard
library, so nothing that was storable before fails now.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def encode(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value, ensure_ascii=False)


def encode_bytes(value: Any) -> bytes:
    """``encode``'s JSON as UTF-8 bytes (a request body), without the round trip through str.
    (``encode`` is not written as this one's ``.decode()``: its fallback text may hold a lone
    surrogate a client escaped, which a str keeps and UTF-8 bytes cannot.)"""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(value, ensure_ascii=False).encode()


def decode(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
