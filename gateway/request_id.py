"""The request id: one per request, echoed in the ``X-Request-Id`` answer header and put on
every log record written while the request is served.

Why: an operator who gets a complaint ("my call at 10:02 failed") needs the log lines of
that one call among thousands. The caller, or a proxy in front of the gateway, may send its
own ``x-request-id`` so the same id follows the call across services; it is kept when it is
a sane token (a few ASCII characters, nothing a log reader or a header could misread),
otherwise replaced by a fresh one, never echoed as sent.

The id lives in a context variable set for the request (gateway/http_observer.py), so any
code on the request path logs with it without being handed it. ``install_request_id_logging``
gives every log record a ``request_id`` attribute ("-" outside a request), for log formats
(``%(request_id)s``) and the JSON log format (gateway/json_logs.py).
"""

from __future__ import annotations

import logging
import re
import os
from contextvars import ContextVar
from typing import Any

HEADER = b"x-request-id"
# Letters, digits and . _ : - only, up to 128 characters: UUIDs, ULIDs, hex, "req_..." and
# W3C trace ids fit; spaces, quotes, control characters and anything non-ASCII do not.
_SANE = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")

current_request_id: ContextVar[str | None] = ContextVar("mnx_request_id", default=None)

NO_REQUEST = "-"


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's ``x-request-id`` when it is sane, else a new random id (32 hex digits)."""
    for name, value in headers:
        if name == HEADER:
            if _SANE.fullmatch(value):
                return value.decode("ascii")
            break
    return os.urandom(16).hex()


_installed = False


def install_request_id_logging() -> None:
    """Give every log record the process creates a ``request_id`` attribute (idempotent)."""
    global _installed
    if _installed:
        return
    make_record = logging.getLogRecordFactory()

    def with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        record.request_id = current_request_id.get() or NO_REQUEST
        return record

    logging.setLogRecordFactory(with_request_id)
    _installed = True
