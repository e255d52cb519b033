"""How requests reach handlers: the wrapper every API route goes through (authenticate,
check scope, render errors), and what a path no route serves is answered.

Authentication happens per route rather than in a middleware because the error
envelope depends on the surface the route speaks (OpenAI or Mnexium REST).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from re import Pattern
from collections.abc import Awaitable, Callable, Iterator, Sequence

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.datastructures import URL, URLPath
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route, Router, compile_path, get_route_path
from starlette.types import Receive, Scope, Send

from gateway.auth import Credentials
from gateway.errors import MNEXIUM, ErrorShape, GatewayError, error_response
from gateway.keys.trial import provisioned
from gateway.store.errors import STORAGE_ERRORS

if TYPE_CHECKING:
    # For the annotation only: the handlers read what they need off it, and gateway.services
    # (which builds everything, the proxy included) is not a dependency of the routing layer.
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

# The scope of a route any valid key may call, whatever its scopes: one that tells the caller
# only about its own key (GET /keys/self).
ANY_VALID_KEY = None


def endpoint(handler: Handler, *, scope: str | tuple[str, ...] | None,
             surface: ErrorShape = MNEXIUM, trial: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """The route's handler behind authentication and ``scope`` (a tuple: any one of them;
    ``ANY_VALID_KEY``: authentication only); its errors are answered in the ``surface``'s shape.
    ``trial``: a key-less request may be served with a trial key, when auth.trial is enabled
    (gateway/keys/trial.py)."""
    async def run(request: Request) -> Response:
        response = await respond(request)
        minted = provisioned(request)
        if minted is not None:  # on any answer, errors too: the SDK takes the key from any of them
            response.headers.update(minted.headers())
        return response

    async def respond(request: Request) -> Response:
        services: Services = request.app.state.services
        try:
            credentials = await services.keys.admit(request, trial=trial)
            if scope is not None:  # None: ANY_VALID_KEY
                credentials.principal.require(scope, request.method)
            # Usage limits (gateway/usage_limits.py): counted and checked before any work.
            await services.usage.admit(credentials.principal, get_route_path(request.scope),
                                       proxy=surface is not MNEXIUM)
            # A write is answered only once its memory events are stored (on Redis, the sender's
            # next round trip): a crash after the answer cannot lose them (gateway/memory/events.py).
            async with services.memories.events.acknowledged():
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


# -- paths no route serves ---------------------------------------------------------------------

# Where a PathOwner leaves its error shape in the request scope, for ``not_served``.
_SHAPE_KEY = "mnx.error_shape"


def mount(prefix: str, routes: Sequence[BaseRoute]) -> Mount:
    """``routes`` under ``prefix``. Slash redirects are ``not_served``'s (see there), not the mount's."""
    mounted = Mount(prefix, app=Router(routes=list(routes), redirect_slashes=False))
    # Starlette's pattern for the rest of the path (".*") stops at a newline, which a route's own
    # "{name}" ([^/]+) takes in: matched across newlines, the mount leaves every path to its routes
    # (a model name with a %0A in it is the Gemini route's to refuse), as a flat table did.
    mounted.path_regex = re.compile(mounted.path_regex.pattern, re.DOTALL)
    return mounted


class PathOwner(BaseRoute):
    """Every path that starts with ``prefix`` (relative to the enclosing Mount), served by ``routes``.

    A provider SDK reads errors in its provider's shape only, so a path it might call
    that no route serves (a wrong method, ``/v1/messages/count_tokens``...) must answer
    in that shape too. The surface that owns a family of paths says so with a PathOwner;
    ``not_served`` renders the 404 or 405 in its shape. ``prefix`` need not end at a path
    segment ("/chat/completions" owns "/chat/completionsX"), as the owners always have.
    """

    def __init__(self, prefix: str, shape: ErrorShape, routes: Sequence[BaseRoute]) -> None:
        self.prefix = prefix
        self.shape = shape
        self._router = Router(routes=list(routes), redirect_slashes=False)

    @property
    def routes(self) -> list[BaseRoute]:
        return self._router.routes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and get_route_path(scope).startswith(self.prefix):
            return Match.FULL, {_SHAPE_KEY: self.shape}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._router(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        return self._router.url_path_for(name, **path_params)

    def __repr__(self) -> str:
        return f"PathOwner(prefix={self.prefix!r}, shape={self.shape.name!r}, routes={self.routes!r})"


def leaf_routes(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, Route]]:
    """Every Route under ``routes``, with its full path template (Mount prefixes added)."""
    for route in routes:
        if isinstance(route, Mount):
            yield from leaf_routes(route.routes, prefix + route.path)
        elif isinstance(route, PathOwner):
            yield from leaf_routes(route.routes, prefix)
        elif isinstance(route, Route):
            yield prefix + route.path, route
        else:
            raise TypeError(f"{route!r}: a route kind gateway.routing does not know")


@lru_cache(maxsize=4)
def _full_paths(app: Any) -> tuple[Pattern[str], ...]:
    return tuple(compile_path(path)[0] for path, _ in leaf_routes(app.routes))


async def not_served(request: Request, exc: Exception) -> Response:
    """The app's HTTPException handler: a 404 or 405 in the shape of the surface that owns the
    path (a provider's, by its PathOwner), else in the gateway's own.

    A path that a route serves but for its trailing slash is redirected there (307), as
    Starlette's router does for a flat table. It is done here, against the full paths of
    the routes themselves, because a router's own check would also redirect to a path
    only a Mount or PathOwner prefix matches (``/v1`` to ``/v1/``), which no route serves.
    """
    assert isinstance(exc, HTTPException)
    path, method = request.url.path, request.method
    raw_path = request.scope["path"]
    if exc.status_code == 404 and raw_path != "/":
        toggled = raw_path.rstrip("/") if raw_path.endswith("/") else raw_path + "/"
        if any(pattern.match(toggled) for pattern in _full_paths(request.app)):
            return RedirectResponse(url=str(URL(scope={**request.scope, "path": toggled})))
    shape = request.scope.get(_SHAPE_KEY, MNEXIUM)
    if shape is not MNEXIUM and exc.status_code in (404, 405):
        code, message = (("not_found", f"no route {path}") if exc.status_code == 404 else
                         ("method_not_allowed", f"{method} is not allowed on {path}"))
        return error_response(GatewayError(message, code=code, status=exc.status_code), shape, headers=exc.headers)
    if exc.status_code == 404:
        body = {"error": "not_found", "message": "no such route", "path": path, "method": method}
    elif exc.status_code == 405:
        body = {"error": "method_not_allowed", "message": f"{method} is not allowed here", "path": path,
                "method": method}
    else:
        body = {"error": "http_error", "message": str(exc.detail)}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
