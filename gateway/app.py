"""The application factory: the one place routes are mounted and the lifespan is wired.

Each module declares its own routes (gateway/api/*.py the REST resources, gateway/proxy/
the provider surfaces), relative to the prefix it is mounted at, with its scopes and,
for a provider surface, the error shape of every path it owns (gateway.routing.PathOwner).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.api import (audit, claims, events, extraction, history, integrations, jobs, key_info, memories,
                         memory_policies, profiles, prompts, records, state, subject_export, subjects)
from gateway import dashboard, metrics, tracing
from gateway.config import GatewayConfig
from gateway.http_observer import HttpObserver
from gateway.proxy import chat_completions, gemini, messages, responses
from gateway.redaction import install_log_redaction
from gateway.request_id import install_request_id_logging
from gateway.routing import endpoint, mount, not_served
from gateway.server import BEFORE_SHUTDOWN
from gateway.services import Services

API = "/api/v1"

# The provider surfaces served under both /api/v1 and /v1, where the OpenAI and Anthropic SDKs' base_url leads.
_OPENAI_AND_ANTHROPIC = [*chat_completions.routes, *responses.routes, *messages.routes]
_REST = [*history.routes, *memories.routes, *extraction.routes, *claims.routes, *jobs.routes, *subjects.routes,
         *prompts.routes, *memory_policies.routes, *state.routes, *profiles.routes, *records.routes, *events.routes,
         *integrations.routes, *audit.routes, *subject_export.routes, *key_info.routes]


async def _health(request: Request) -> Response:
    """Liveness and storage reachability; no key needed, nothing about the data revealed."""
    try:
        await request.app.state.services.store.ping()
    except Exception:
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})


def _routes(config: GatewayConfig) -> list[BaseRoute]:
    return [
        mount(API, [*_OPENAI_AND_ANTHROPIC, *_REST]),
        # Gemini-native, where the google-genai SDK's base_url leads: v1 (google-genai 3.x's default) and v1beta.
        mount("/v1", [*_OPENAI_AND_ANTHROPIC, *gemini.routes]),
        mount("/v1beta", gemini.v1beta_routes),
        Route("/health", _health, methods=["GET"]),
        # Prometheus text format, this process's only (gateway/metrics.py).
        Route("/metrics", endpoint(metrics.serve_metrics, scope="metrics:read"), methods=["GET"]),
        # The browser dashboard, a client of the REST API above (gateway/dashboard/).
        *dashboard.routes(config.dashboard, API),
    ]


def create_app(config: GatewayConfig, services: Services | None = None, *, span_exporter: Any = None) -> Starlette:
    """The gateway's ASGI app. ``span_exporter`` (tracing on): where spans go instead of OTLP,
    a callable given each turn's finished spans (tests; see gateway.tracing.start_tracing)."""
    # Whatever logs in this process (the gateway, LiteLLM, httpx, uvicorn) logs no key.
    install_log_redaction()
    # Every log record carries the id of the request it was written for (gateway/request_id.py).
    install_request_id_logging()
    observed = metrics.GatewayMetrics() if config.server.metrics.enabled else None
    tracer = tracing.start_tracing(config.tracing, span_exporter)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Callable[[], None]]]:
        # The tasks started from here (the job worker's) count into this gateway's metrics.
        metrics.activate(observed)
        tracing.activate(tracer)
        built = services or Services.build(config)
        built.upstream.warm_up()
        await built.start()
        # Importing LiteLLM leaves hundreds of thousands of long-lived objects. Freezing
        # them keeps every later full collection from rescanning them mid-request (p99).
        # Once per process: a later start (the test suite starts hundreds) would only pay
        # another full collection and pin whatever the earlier gateways left behind.
        if not gc.get_freeze_count():
            gc.collect()
            gc.freeze()
        app.state.services = built
        try:
            # For the server, which calls it when it begins to stop (gateway.server.GatewayServer).
            yield {BEFORE_SHUTDOWN: built.begin_shutdown}
        finally:
            await built.aclose()
            if tracer is not None:
                await asyncio.to_thread(tracer.shutdown)  # exports the spans still pending

    app = Starlette(routes=_routes(config), lifespan=lifespan, exception_handlers={HTTPException: not_served})
    # Trailing-slash redirects are not_served's: the router's own would also redirect a path only
    # a mount prefix matches ("/v1" to "/v1/"), which no route serves.
    app.router.redirect_slashes = False
    # Every answer carries X-Request-Id; with metrics on, each is counted (gateway/http_observer.py).
    app.add_middleware(HttpObserver, metrics=observed, tracer=tracer)
    return app
