"""The application factory: the one place routes, lifespan and error pages are wired."""

from __future__ import annotations

import contextlib
import gc
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.api import history, jobs, memories, memory_policies, prompts, state, subjects
from gateway.config import GatewayConfig
from gateway.errors import GatewayError, Surface, error_response
from gateway.proxy.chat_completions import chat_completions
from gateway.proxy.gemini import generate_content
from gateway.proxy.messages import messages
from gateway.proxy.responses import responses
from gateway.redaction import install_log_redaction
from gateway.routing import endpoint
from gateway.services import Services

API = "/api/v1"


def _routes() -> list[Route]:
    chat = endpoint(chat_completions, scope="chat:write", surface=Surface.OPENAI)
    anthropic_messages = endpoint(messages, scope="chat:write", surface=Surface.ANTHROPIC)
    # One rule for every provider surface: chat:write (and, on /responses, the contract's
    # responses:write); what a turn reads and writes beyond that: gateway/feature_scopes.py.
    openai_responses = endpoint(responses, scope=("chat:write", "responses:write"), surface=Surface.OPENAI)
    gemini = endpoint(generate_content, scope="chat:write", surface=Surface.GEMINI)
    return [
        # The OpenAI surface, also at /v1 so a plain OpenAI base_url of http://host/v1 works.
        Route(f"{API}/chat/completions", chat, methods=["POST"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route(f"{API}/responses", openai_responses, methods=["POST"]),
        Route("/v1/responses", openai_responses, methods=["POST"]),
        # The Anthropic surface, also at /v1/messages where the Anthropic SDK's base_url leads.
        Route(f"{API}/messages", anthropic_messages, methods=["POST"]),
        Route("/v1/messages", anthropic_messages, methods=["POST"]),
        Route(f"{API}/chat/history/list", endpoint(history.list_chats, scope="history:read"), methods=["GET"]),
        Route(f"{API}/chat/history/read", endpoint(history.read_chat, scope="history:read"), methods=["GET"]),
        Route(f"{API}/chat/history/delete", endpoint(history.delete_chat, scope="history:delete"),
              methods=["DELETE"]),
        # Fixed paths before /memories/{memory_id}, so "search" is never taken for an id.
        Route(f"{API}/memories", endpoint(memories.list_memories, scope="memories:read"), methods=["GET"]),
        Route(f"{API}/memories", endpoint(memories.create_memory, scope="memories:write"), methods=["POST"]),
        Route(f"{API}/memories/search", endpoint(memories.search_memories, scope="memories:search"),
              methods=["GET"]),
        Route(f"{API}/memories/superseded", endpoint(memories.list_superseded, scope="memories:read"),
              methods=["GET"]),
        Route(f"{API}/memories/recalls", endpoint(memories.list_recalls, scope="memories:read"), methods=["GET"]),
        Route(f"{API}/memories/{{memory_id}}", endpoint(memories.get_memory, scope="memories:read"),
              methods=["GET"]),
        Route(f"{API}/memories/{{memory_id}}", endpoint(memories.update_memory, scope="memories:write"),
              methods=["PATCH"]),
        Route(f"{API}/memories/{{memory_id}}", endpoint(memories.delete_memory, scope="memories:delete"),
              methods=["DELETE"]),
        Route(f"{API}/memories/{{memory_id}}/restore", endpoint(memories.restore_memory, scope="memories:write"),
              methods=["POST"]),
        Route(f"{API}/memories/{{memory_id}}/claims", endpoint(memories.memory_claims, scope="memories:read"),
              methods=["GET"]),
        Route(f"{API}/jobs", endpoint(jobs.list_jobs, scope="jobs:read"), methods=["GET"]),
        Route(f"{API}/subjects/{{subject_id}}", endpoint(subjects.erase_subject, scope="subjects:delete"),
              methods=["DELETE"]),
        Route(f"{API}/prompts", endpoint(prompts.list_prompts, scope="prompts:read"), methods=["GET"]),
        Route(f"{API}/prompts", endpoint(prompts.create_prompt, scope="prompts:write"), methods=["POST"]),
        # Declared before /prompts/{id} so "resolve" is never taken for an id.
        Route(f"{API}/prompts/resolve", endpoint(prompts.resolve_prompts, scope="prompts:read"), methods=["GET"]),
        Route(f"{API}/prompts/{{prompt_id}}", endpoint(prompts.get_prompt, scope="prompts:read"), methods=["GET"]),
        Route(f"{API}/prompts/{{prompt_id}}", endpoint(prompts.update_prompt, scope="prompts:write"),
              methods=["PATCH"]),
        Route(f"{API}/prompts/{{prompt_id}}", endpoint(prompts.delete_prompt, scope="prompts:write"),
              methods=["DELETE"]),
        Route(f"{API}/memory/policies", endpoint(memory_policies.list_policies, scope="memory_policies:read"),
              methods=["GET"]),
        Route(f"{API}/memory/policies", endpoint(memory_policies.create_policy, scope="memory_policies:write"),
              methods=["POST"]),
        Route(f"{API}/memory/policies/resolve",
              endpoint(memory_policies.resolve_policies, scope="memory_policies:read"), methods=["GET"]),
        Route(f"{API}/memory/policies/{{policy_id}}",
              endpoint(memory_policies.get_policy, scope="memory_policies:read"), methods=["GET"]),
        Route(f"{API}/memory/policies/{{policy_id}}",
              endpoint(memory_policies.update_policy, scope="memory_policies:write"), methods=["PATCH"]),
        Route(f"{API}/memory/policies/{{policy_id}}",
              endpoint(memory_policies.delete_policy, scope="memory_policies:delete"), methods=["DELETE"]),
        Route(f"{API}/state/{{key:path}}", endpoint(state.get_state, scope="state:read"), methods=["GET"]),
        Route(f"{API}/state/{{key:path}}", endpoint(state.put_state, scope="state:write"), methods=["PUT"]),
        Route(f"{API}/state/{{key:path}}", endpoint(state.delete_state, scope="state:delete"), methods=["DELETE"]),
        # Gemini-native, at the root where the google-genai SDK's base_url leads (v1beta, or
        # v1, the default API version of google-genai 3.x).
        Route("/v1beta/models/{target}", gemini, methods=["POST"]),
        Route("/v1/models/{target}", gemini, methods=["POST"]),
        Route("/health", _health, methods=["GET"]),
    ]


async def _health(request: Request) -> Response:
    """Liveness and storage reachability; no key needed, nothing about the data revealed."""
    try:
        await request.app.state.services.store.ping()
    except Exception:
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})


def _surface_of(path: str) -> Surface:
    """Which error shape a client of ``path`` reads: a provider SDK gets its own."""
    for prefix in (API + "/", "/v1/"):
        if path.startswith(prefix):
            rest = path[len(prefix):]
            if rest.startswith(("chat/completions", "responses")):
                return Surface.OPENAI
            if rest.startswith("messages"):
                return Surface.ANTHROPIC
    if path.startswith(("/v1beta/", "/v1/models/")):
        return Surface.GEMINI
    return Surface.MNEXIUM


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    surface = _surface_of(request.url.path)
    if surface is not Surface.MNEXIUM and exc.status_code in (404, 405):
        code, message = (("not_found", f"no route {request.url.path}") if exc.status_code == 404 else
                         ("method_not_allowed", f"{request.method} is not allowed on {request.url.path}"))
        return error_response(GatewayError(message, code=code, status=exc.status_code), surface,
                              headers=exc.headers)
    if exc.status_code == 404:
        body = {"error": "not_found", "message": "no such route", "path": request.url.path, "method": request.method}
    elif exc.status_code == 405:
        body = {"error": "method_not_allowed", "message": f"{request.method} is not allowed here",
                "path": request.url.path, "method": request.method}
    else:
        body = {"error": "http_error", "message": str(exc.detail)}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def create_app(config: GatewayConfig, services: Services | None = None) -> Starlette:
    # Whatever logs in this process (the gateway, LiteLLM, httpx, uvicorn) logs no key.
    install_log_redaction()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        built = services or Services.build(config)
        built.upstream.warm_up()
        await built.start()
        # Importing LiteLLM leaves hundreds of thousands of long-lived objects. Freezing
        # them keeps every later full collection from rescanning them mid-request (p99).
        gc.collect()
        gc.freeze()
        app.state.services = built
        try:
            yield
        finally:
            await built.aclose()

    return Starlette(routes=_routes(), lifespan=lifespan, exception_handlers={HTTPException: _http_error})
