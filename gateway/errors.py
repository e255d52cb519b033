"""The one exception tree, and how each API surface renders it.

Handlers raise these; the route wrapper in ``gateway.routing`` catches them and
renders the envelope native to the surface the client speaks:

* Mnexium REST:  ``{"error": "snake_code", "message": "...", ...extra}``
* OpenAI:        ``{"error": {"message", "type", "param", "code"}}``
* Anthropic:     ``{"type": "error", "error": {"type", "message"}}``
* Gemini:        ``{"error": {"code", "message", "status", "details"}}``

Messages are written for the caller and never contain a secret.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

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


class Surface(str, Enum):
    MNEXIUM = "mnexium"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"


_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
                 429: "rate_limit_error"}


_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large", 429: "rate_limit_error",
                    529: "overloaded_error"}


_GRPC_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                405: "UNIMPLEMENTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
                504: "DEADLINE_EXCEEDED"}


def error_body(error: GatewayError, surface: Surface) -> dict[str, Any]:
    if surface is Surface.GEMINI:
        # Google's ErrorInfo detail is the native place for a machine-readable reason.
        return {"error": {"code": error.status, "message": error.message,
                          "status": _GRPC_STATUS.get(error.status, "INTERNAL"),
                          "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": error.code,
                                       "domain": "mnx-gateway"}]}}
    if surface is Surface.ANTHROPIC:
        # "code" is ours (Anthropic has none); the SDK keeps unknown keys in the error body.
        return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(error.status, "api_error"),
                                           "message": error.message, "code": error.code}}
    if surface is Surface.OPENAI:
        body: dict[str, Any] = {
            "error": {
                "message": error.message,
                "type": _OPENAI_TYPES.get(error.status, "api_error"),
                "param": error.extra.get("param"),
                "code": error.code,
            }
        }
        # The mnexium SDK reads a top-level "message"; OpenAI clients ignore it.
        body["message"] = error.message
        return body
    return {"error": error.code, "message": error.message, **error.extra}


def error_response(error: GatewayError, surface: Surface, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(error, surface), status_code=error.status, headers=headers)
