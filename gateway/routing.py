"""The one wrapper every API route goes through: authenticate, check scope, render errors.

Authentication happens per route rather than in a middleware because the error
envelope depends on the surface the route speaks (OpenAI or Mnexium REST).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from gateway.auth import Credentials
from gateway.errors import GatewayError, Surface, error_response
from gateway.services import Services
from gateway.store.errors import STORAGE_ERRORS

log = logging.getLogger("gateway")


@dataclass(frozen=True)
class Call:
    request: Request
    services: Services
    credentials: Credentials

    @property
    def project_id(self) -> str:
        return self.credentials.principal.project_id


Handler = Callable[[Call], Awaitable[Response]]


def endpoint(handler: Handler, *, scope: str | tuple[str, ...],
             surface: Surface = Surface.MNEXIUM) -> Callable[[Request], Awaitable[Response]]:
    """The route's handler behind authentication and ``scope`` (a tuple: any one of them)."""
    async def run(request: Request) -> Response:
        services: Services = request.app.state.services
        try:
            credentials = services.keys.authenticate(request.headers)
            credentials.principal.require(scope, request.method)
            return await handler(Call(request, services, credentials))
        except GatewayError as error:
            return error_response(error, surface, headers=error.headers)
        except STORAGE_ERRORS as error:
            log.warning("storage unavailable on %s %s: %s", request.method, request.url.path, type(error).__name__)
            return error_response(GatewayError("the gateway's storage is unavailable; retry later",
                                               code="storage_unavailable", status=503), surface)
        except Exception:
            # The traceback goes to the log (never to the caller, never with request headers).
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return error_response(GatewayError("internal error"), surface)

    run.__name__ = handler.__name__
    run.scope = scope  # type: ignore[attr-defined]  # read by the route-table tests
    run.surface = surface  # type: ignore[attr-defined]
    return run
