"""The browser dashboard (``dashboard.enabled``, at ``dashboard.path``): one HTML page, one script,
one stylesheet, shipped inside the package and served as they are.

The page holds no data and no secret: its script asks the project key of whoever opens it
(kept in the tab's sessionStorage only) and calls the same REST API as any client, so it shows
and changes exactly what that key's scopes allow (GET /api/v1/keys/self tells it which, to hide
what would be refused; the API still refuses it). Nothing is built at install or run time and
nothing is fetched from elsewhere: no CDN, no bundler.

Every answer carries a strict Content-Security-Policy: scripts only from this gateway and never
inline, no framing, no plugins, requests only to this origin. The script renders API text as
text nodes only (``textContent``), never as HTML, so a memory that reads ``<img onerror=...>``
stays words on the page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.config import DashboardConfig

# The page's own files, package data (pyproject: [tool.setuptools.package-data]).
SCRIPT, STYLESHEET, PAGE = "dashboard.js", "dashboard.css", "page.html"

# img-src data: only for the page's empty icon (data:,), which spares a request for /favicon.ico.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'",
    "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
])
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # A new gateway version serves new files at the same names: the browser revalidates.
    "Cache-Control": "no-cache",
}


def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


def _serving(body: bytes, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        return Response(body, media_type=media_type, headers=SECURITY_HEADERS)
    return serve


def routes(config: DashboardConfig, api_prefix: str) -> list[Route]:
    """The page and its two files at ``config.path``; none when the dashboard is off."""
    if not config.enabled:
        return []
    base = config.path
    # The shell is rendered once: where its files are and where the API is (read by the script from
    # data attributes, since no inline script may run).
    page = (_asset(PAGE).decode().replace("{{base}}", base).replace("{{api}}", api_prefix)).encode()
    return [
        Route(base, _serving(page, "text/html; charset=utf-8"), methods=["GET"], name="dashboard"),
        Route(f"{base}/{SCRIPT}", _serving(_asset(SCRIPT), "text/javascript; charset=utf-8"), methods=["GET"],
              name="dashboard_script"),
        Route(f"{base}/{STYLESHEET}", _serving(_asset(STYLESHEET), "text/css; charset=utf-8"), methods=["GET"],
              name="dashboard_stylesheet"),
    ]
