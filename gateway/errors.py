"""The one exception tree, and the error shapes the API surfaces render it in.

Handlers raise these; the route wrapper in ``gateway.routing`` catches them and
renders the envelope native to the surface the client speaks. Each surface declares
its ``ErrorShape`` next to its routes:

* Mnexium REST (here, the gateway's own): ``{"error": "snake_code", "message": "...", ...extra}``
* OpenAI (gateway/proxy/chat_completions.py): ``{"error": {"message", "type", "param", "code"}}``
* Anthropic (gateway/proxy/messages.py): ``{"type": "error", "error": {"type", "message"}}``
* Gemini (gateway/proxy/gemini.py): ``{"error": {"code", "message", "status", "details"}}``

Messages are written for the caller and never contain a secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from collections.abc import Mapping
from collections.abc import Callable

from starlette.responses import JSONResponse


class ConfigError(Exception):
    """gateway.yaml is missing, unreadable or invalid. Raised at startup only."""


class GatewayError(Exception):
    status: int = 500
    code: str = "server_error"
    # Response headers the error must still carry (e.g. X-Mnx-Chat-Id on a failed proxy call).
    headers: dict[str, str] | None = None

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.extra = extra


class BadRequest(GatewayError):
    status = 400
    code = "invalid_request"


class Unauthorized(GatewayError):
    status = 401
    code = "unauthorized"


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class Conflict(GatewayError):
    status = 409
    code = "conflict"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "payload_too_large"


class UpstreamError(GatewayError):
    """The provider answered with an error, or could not be reached.

    ``status`` is the provider's own status (or 502/504 when it was unreachable),
    so clients see the same retry semantics they would see talking to it directly.
    """

    code = "upstream_error"


@dataclass(frozen=True)
class ErrorShape:
    """How the clients of one API surface read an error: the envelope ``render`` builds."""

    # What the route-table tests call the shape ("mnexium", "openai", "anthropic", "gemini").
    name: str
    render: Callable[[GatewayError], dict[str, Any]]


def _mnexium_body(error: GatewayError) -> dict[str, Any]:
    return {"error": error.code, "message": error.message, **error.extra}


# The gateway's own REST shape: every path no provider surface owns answers in it.
MNEXIUM = ErrorShape("mnexium", _mnexium_body)


def error_response(error: GatewayError, shape: ErrorShape,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(shape.render(error), status_code=error.status, headers=headers)
