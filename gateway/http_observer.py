"""The ASGI layer around the whole app that sees every HTTP request: it gives the request its
id (gateway/request_id.py), puts it in the ``X-Request-Id`` header of whatever answers it
(errors, 404s and event streams included), and, when metrics are on, counts the answer by
surface, route template, method and status (gateway/metrics.py). With tracing on, it makes the
gateway's tracer the request's (gateway/tracing.py), for the proxied turn to open its spans.

A plain ASGI wrapper rather than a Starlette middleware class: it adds no task, no
request object and no body buffering, so a stream passes through untouched. Its cost per
request is a header scan, a context variable set and reset, and (metrics on) one counter.
"""

from __future__ import annotations

from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import metrics as gateway_metrics
from gateway import tracing
from gateway.metrics import GatewayMetrics
from gateway.request_id import HEADER, current_request_id, request_id_from
from gateway.tracing import GatewayTracer

# Methods counted by name; any other (a client can send any token) is "other", so that a
# stranger cannot grow the label set.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


class HttpObserver:
    def __init__(self, app: ASGIApp, metrics: GatewayMetrics | None, tracer: GatewayTracer | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.tracer = tracer
        # (root path, id of the route) -> template: the routes live as long as the app (Route is unhashable).
        self._templates: dict[tuple[str, int], str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        header = (HEADER, request_id.encode("ascii"))
        status = 500  # what the server answers if the app fails before starting a response

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [item for item in message.get("headers", ()) if item[0].lower() != HEADER]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        id_token = current_request_id.set(request_id)
        metrics_token = gateway_metrics.activate(self.metrics)
        # (Tracing off: not even the context variable is set; its default is None.)
        tracer_token = tracing.activate(self.tracer) if self.tracer is not None else None
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if tracer_token is not None:
                tracing.deactivate(tracer_token)
            gateway_metrics.deactivate(metrics_token)
            current_request_id.reset(id_token)
            if self.metrics is not None:
                self._count(scope, status)

    def _count(self, scope: Scope, status: int) -> None:
        # The router leaves the matched route in the scope it was given (and a Mount its prefix
        # in root_path): the template is known only once the app has run.
        route = scope.get("route")
        if isinstance(route, Route):
            key = (scope.get("root_path", ""), id(route))
            template = self._templates.get(key)
            if template is None:
                prefix = key[0][len(scope.get("app_root_path", "")):]
                template = self._templates[key] = prefix + route.path
        else:
            template = UNMATCHED
        shape = getattr(scope.get("endpoint"), "surface", None)
        surface = shape.name if shape is not None and template != UNMATCHED else "gateway"
        method = scope["method"] if scope["method"] in _METHODS else "other"
        assert self.metrics is not None
        self.metrics.labelled(self.metrics.requests, surface, template, method, str(status)).inc()
