"""How ``mnx-gateway serve`` writes its log: text lines for a person, or one JSON object per
line for a log pipeline (``server.log_format``).

Both carry the request id (gateway/request_id.py) of the request a record was written for,
"-" outside one, so a complaint's ``X-Request-Id`` finds its log lines. Records are already
redacted when they are made (gateway/redaction.py), so neither format can print a key.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from gateway.config import ServerConfig
from gateway.redaction import redact
from gateway.request_id import install_request_id_logging

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, request_id, message,
    and the traceback as ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            # exc_text is the traceback redaction already made (gateway/redaction.py): formatting
            # exc_info again would write a key an exception message carries in clear.
            entry["exception"] = record.exc_text or redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(server: ServerConfig) -> None:
    """The root logger's handler and level, in the configured format."""
    # First: the formats read record.request_id, which every record must then have.
    install_request_id_logging()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if server.log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=server.log_level.upper(), handlers=[handler])
