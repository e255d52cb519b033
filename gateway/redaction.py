"""Secrets out of every text the gateway stores, logs or returns.

Provider keys pass through the gateway on every request, and providers, LiteLLM and
httpx put them back into error texts (a 401 that echoes ``Bearer sk-...``, a Gemini URL
with ``?key=...``). Any such text can end up in a job's ``last_error`` (readable through
``GET /jobs``), in a log line, or in the error a client reads, so all three go through
``redact``:

* secrets the gateway knows exactly (configured provider keys, plain project keys, the
  caller's key of the call that failed) are replaced wherever they appear;
* anything shaped like a credential is replaced too: ``Bearer <token>``, OpenAI and
  Anthropic ``sk-`` keys, Google ``AIza`` keys, ``mnx_`` project keys, and the value of a
  credential-named field (``api_key=``, ``x-api-key:``, a URL's ``key=``, ``password``...).

``install_log_redaction`` makes every log record of the process pass through it, so a
library's message or a traceback cannot carry a key into the log either.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from typing import Any
from collections.abc import Iterable

REDACTED = "[redacted]"
# Shorter strings are not treated as secrets: replacing them would garble ordinary text.
_MIN_SECRET_LENGTH = 8

_SHAPES = [
    # An Authorization header's credential, whatever the scheme's case.
    re.compile(r"(?i)(\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=:-]{6,}"),
    # OpenAI (sk-..., sk-proj-...) and Anthropic (sk-ant-...) keys.
    re.compile(r"()\bsk-[A-Za-z0-9_-]{6,}"),
    # Google API keys.
    re.compile(r"()\bAIza[0-9A-Za-z_-]{20,}"),
    # Project keys of this gateway and of Mnexium.
    re.compile(r"()\bmnx_(?:live|trial|test)[A-Za-z0-9_.-]{4,}"),
    # The value of a credential-named field, header or URL parameter: api_key='...',
    # "x-api-key": "...", x-goog-api-key: ..., ?key=..., password=...
    re.compile(r"(?i)((?:\b(?:api[_-]?key|x-(?:goog-api|api|openai|anthropic|google|mnexium)-key|authorization|"
               r"access[_-]?token|secret|password|passwd)\b|[?&]key)['\"]?\s*[=:]\s*['\"]?)[^\s'\"&,;)}\]]{6,}"),
]

_known_lock = threading.Lock()
_known: frozenset[str] = frozenset()


def register_secrets(secrets: Iterable[str | None]) -> None:
    """Secrets to redact by value from now on (configured keys, read at startup)."""
    global _known
    fresh = {s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH}
    with _known_lock:
        _known = _known | fresh


def redact(text: str, extra: Iterable[str | None] = ()) -> str:
    """``text`` with every known secret, every secret in ``extra`` and anything shaped like a
    credential replaced by ``[redacted]``."""
    for secret in (*_known, *extra):
        if secret and len(secret) >= _MIN_SECRET_LENGTH and secret in text:
            text = text.replace(secret, REDACTED)
    for shape in _SHAPES:
        text = shape.sub(lambda match: match.group(1) + REDACTED, text)
    return text


# -- logs -----------------------------------------------------------------------------------

_PLAIN_ARGUMENTS = (int, float, bool, type(None))
_installed = False


def _redacted_argument(argument: Any) -> Any:
    if isinstance(argument, _PLAIN_ARGUMENTS):
        return argument
    text = argument if isinstance(argument, str) else str(argument)
    cleaned = redact(text)
    # Keep the original object (and so its %-formatting) unless it carried a secret.
    return cleaned if cleaned != text or isinstance(argument, str) else argument


def _redact_record(record: logging.LogRecord) -> None:
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(_redacted_argument(argument) for argument in record.args)
    if record.exc_info and not record.exc_text:
        # Formatters use exc_text when it is set: the traceback is formatted once, redacted.
        record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install_log_redaction() -> None:
    """Redact every log record the process creates, whichever library logs it (idempotent)."""
    global _installed
    if _installed:
        return
    make_record = logging.getLogRecordFactory()

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        _redact_record(record)
        return record

    logging.setLogRecordFactory(redacting_factory)
    _installed = True
