"""The gateway's route table as the security tests read it, and what they share.

The security tests are generated from ``gateway.app``'s routes rather than from a
hand-written list, so a route added later is probed automatically. This module turns
the Starlette route table into ``Endpoint`` values (one per route and method), fills
path templates, builds the request bodies of the provider surfaces (the proxy
routes), and knows each surface's error envelope, as docs/features.md documents them.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from collections.abc import Iterator, Mapping, Sequence

import httpx
from starlette.routing import BaseRoute, Mount, Route

from gateway.app import create_app
from gateway.config import parse_config
from gateway.routing import PathOwner
from tests.conftest import PROVIDER_KEY

ANTHROPIC_CALLER_KEY = "sk-ant-caller-key"
GOOGLE_CALLER_KEY = "goog-caller-key"
# The caller's provider keys, sent on every request (the REST routes ignore them).
PROVIDER_HEADERS = {"x-openai-key": PROVIDER_KEY, "x-api-key": ANTHROPIC_CALLER_KEY,
                    "x-goog-api-key": GOOGLE_CALLER_KEY}

_PARAMETER = re.compile(r"{(\w+)(?::\w+)?}")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class Endpoint:
    """One route and one of its methods, as the app serves it."""

    method: str
    path: str  # the route's template, e.g. /api/v1/memories/{memory_id}
    handler: str  # the wrapped handler's name (the endpoint wrapper copies it)
    params: tuple[str, ...]  # path parameter names, in order
    # What gateway.routing's wrapper says it enforces, when it exposes it (its ``scope`` and
    # ``surface`` attributes): None for a route without the wrapper, or a gateway that does not.
    declared_scopes: tuple[str, ...] | None = None
    declared_surface: str | None = None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def reads(self) -> bool:
        return self.method in ("GET", "HEAD")

    @property
    def writes(self) -> bool:
        return self.method in WRITE_METHODS

    def url(self, values: Mapping[str, str]) -> str:
        """The path with each parameter replaced by ``values[name]``, percent-encoded."""
        return _PARAMETER.sub(lambda m: urllib.parse.quote(values[m[1]], safe=":"), self.path)


@lru_cache(maxsize=1)
def endpoints() -> tuple[Endpoint, ...]:
    """Every (route, method) of the app, in route-table order.

    The table does not depend on the configuration, so a minimal one builds it; the
    app is constructed but never started. Starlette adds HEAD to every GET route: it
    runs the GET handler, so it is an endpoint too.
    """
    app = create_app(parse_config({"projects": [{"id": "route-table", "keys": [{"key": "unused"}]}]}))
    found = []
    for path, route in _leaves(app.routes):
        scope = getattr(route.endpoint, "scope", None)
        surface = getattr(route.endpoint, "surface", None)
        for method in sorted(route.methods or ()):
            found.append(Endpoint(method, path, route.endpoint.__name__, tuple(route.param_convertors),
                                  declared_scopes=(scope,) if isinstance(scope, str) else scope,
                                  declared_surface=getattr(surface, "name", surface)))
    return tuple(found)


def _leaves(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, Route]]:
    """Every Route of the table with its full path: a Mount adds its prefix, a PathOwner (the
    provider surface that owns the error shape of a family of paths) adds nothing."""
    for route in routes:
        if isinstance(route, Mount):
            yield from _leaves(route.routes, prefix + route.path)
        elif isinstance(route, PathOwner):
            yield from _leaves(route.routes, prefix)
        else:
            assert isinstance(route, Route), (
                f"{route!r} is not a starlette Route: teach tests/security/route_table.py to enumerate it")
            yield prefix + route.path, route


def endpoint_id(endpoint: Endpoint) -> str:
    """A pytest id for a parametrized endpoint."""
    return str(endpoint)


# -- surfaces and their error envelopes (docs/features.md: "Clear errors") -------------------------------

def surface_of(path: str) -> str:
    """Which error envelope a client of ``path`` reads: provider SDKs get their provider's own."""
    if path.endswith(("/chat/completions", "/responses")):
        return "openai"
    if path.endswith("/messages"):
        return "anthropic"
    if "/models/" in path:
        return "gemini"
    return "mnexium"


_SHAPES = {
    # surface: (how to read the envelope, what 401 and 403 are called in it)
    "mnexium": {401: "unauthorized", 403: "forbidden"},
    "openai": {401: "authentication_error", 403: "permission_error"},
    "anthropic": {401: "authentication_error", 403: "permission_error"},
    "gemini": {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"},
}


def error_shape_problem(response: httpx.Response, surface: str, status: int) -> str | None:
    """None if ``response`` is a ``status`` error in ``surface``'s envelope, else what is wrong."""
    if response.status_code != status:
        return f"status {response.status_code}, expected {status}"
    try:
        body = response.json()
    except ValueError:
        return f"not JSON: {response.text[:200]!r}"
    name = _SHAPES[surface][status]
    if surface == "mnexium":
        ok = body.get("error") == name and isinstance(body.get("message"), str)
    elif surface == "openai":
        error = body.get("error")
        ok = isinstance(error, dict) and error.get("type") == name and isinstance(error.get("message"), str)
    elif surface == "anthropic":
        error = body.get("error")
        ok = body.get("type") == "error" and isinstance(error, dict) and error.get("type") == name
    else:
        error = body.get("error")
        ok = isinstance(error, dict) and error.get("code") == status and error.get("status") == name
    return None if ok else f"not the {surface} envelope of a {status} ({name}): {body}"


def error_message(response: httpx.Response) -> str:
    """The human-readable message of an error response, whatever its envelope."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", ""))
    return str(body.get("message", "")) if isinstance(body, dict) else ""


def error_code(response: httpx.Response) -> str | None:
    """The machine-readable error code of an error response, whatever its envelope (None: no error)."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        for detail in error.get("details") or ():
            if isinstance(detail, dict) and detail.get("reason"):
                return str(detail["reason"])
        return str(error.get("code") or error.get("type"))
    return None


# -- the provider surfaces (proxy routes) ------------------------------------------------------

@dataclass(frozen=True)
class ProxyRequest:
    path_values: dict[str, str]
    json: dict[str, Any]
    headers: dict[str, str]


def mnx_headers(mnx: Mapping[str, Any]) -> dict[str, str]:
    """``mnx`` options as the x-mnx-* headers SDKs that drop unknown body fields send."""
    headers = {}
    for field, value in mnx.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (dict, list)):
            text = json.dumps(value)
        else:
            text = str(value)
        headers["x-mnx-" + field.replace("_", "-")] = text
    return headers


def _chat_completions(text: str, mnx: Mapping[str, Any], stream: bool) -> ProxyRequest:
    return ProxyRequest({}, {"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": text}],
                             "mnx": dict(mnx)}, {})


def _responses(text: str, mnx: Mapping[str, Any], stream: bool) -> ProxyRequest:
    return ProxyRequest({}, {"model": "gpt-4o-mini", "stream": stream, "input": text, "mnx": dict(mnx)}, {})


def _messages(text: str, mnx: Mapping[str, Any], stream: bool) -> ProxyRequest:
    # A Claude model is forwarded natively to the (fake) Anthropic API.
    return ProxyRequest({}, {"model": "claude-gateway-test", "max_tokens": 64, "stream": stream,
                             "messages": [{"role": "user", "content": text}], "mnx": dict(mnx)}, {})


def _generate_content(text: str, mnx: Mapping[str, Any], stream: bool) -> ProxyRequest:
    # Gemini carries model and streaming in the path, and mnx in headers (the google-genai SDK's way).
    method = "streamGenerateContent" if stream else "generateContent"
    return ProxyRequest({"target": f"gemini-2.0-flash:{method}"},
                        {"contents": [{"role": "user", "parts": [{"text": text}]}]}, mnx_headers(mnx))


# Handler name -> how to build a turn in that surface's own request format.
PROXY_REQUESTS = {
    "chat_completions": _chat_completions,
    "responses": _responses,
    "messages": _messages,
    "generate_content": _generate_content,
}


def is_proxy(endpoint: Endpoint) -> bool:
    return endpoint.handler in PROXY_REQUESTS


def proxy_request(endpoint: Endpoint, text: str, mnx: Mapping[str, Any], *, stream: bool = False) -> ProxyRequest:
    return PROXY_REQUESTS[endpoint.handler](text, mnx, stream)


# -- reading everything a key can read --------------------------------------------------------

# Fields whose value moves with the clock alone (recency decay), not with the data.
VOLATILE_FIELDS = frozenset({"effective_score"})


def without_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in VOLATILE_FIELDS}
    if isinstance(value, list):
        return [without_volatile(v) for v in value]
    return value


def send(client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """``client.request(...)``, except that an event stream (GET /events/memories, which never ends
    by itself) is read up to the end of its first frame and closed: the response holds that much."""
    with client.stream(method, url, **kwargs) as response:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            response.read()
            return response
        head = b""
        for chunk in response.iter_bytes():
            head += chunk
            if b"\n\n" in head:
                break
        return httpx.Response(response.status_code, headers=response.headers, request=response.request,
                              content=head.split(b"\n\n", 1)[0] + b"\n\n")


def comparable(response: httpx.Response) -> tuple[int, Any]:
    """A response as a value two reads of unchanged data agree on (an event stream's first frame
    without its timestamp)."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return response.status_code, re.sub(r'"timestamp":"[^"]*"', "", response.text)
    try:
        body: Any = without_volatile(response.json())
    except ValueError:
        body = response.text
    return response.status_code, body
