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


def endpoint(handler: Handler, *, scope: str, surface: Surface = Surface.MNEXIUM) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        services: Services = request.app.state.services
        try:
            credentials = services.keys.authenticate(request.headers)
            credentials.principal.require(scope, request.method)
            return await handler(Call(request, services, credentials))
        except GatewayError as error:
            return error_response(error, surface, headers=error.headers)
        except Exception:
            # The traceback goes to the log (never to the caller, never with request headers).
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return error_response(GatewayError("internal error"), surface)

    run.__name__ = handler.__name__
    return run
