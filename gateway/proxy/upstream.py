"""Calling the provider a model names, in OpenAI Chat Completions form.

Two paths, one interface:

* OpenAI-compatible upstreams get the request as-is over a pooled httpx client.
  Nothing needs translating, and skipping LiteLLM here saves ~2.4 ms of CPU per
  call (~6 ms streamed), the bulk of a passthrough's cost.
* Anthropic and Gemini go through LiteLLM, which translates the request and the
  answer (streamed chunks included) to and from the OpenAI shape.

Provider failures surface as ``UpstreamError`` carrying the provider's own status
(502/504 when it could not be reached or timed out).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

import httpx

from gateway.config import ProviderConfig, ProvidersConfig
from gateway.errors import UpstreamError
from gateway.proxy.providers import Route
from gateway.proxy.sharded_transport import ShardedTransport
from gateway.proxy.sse import DONE_FRAME, sse_frame

log = logging.getLogger("gateway.upstream")

_LITELLM_PREFIX = {"anthropic": "anthropic", "gemini": "gemini"}


@dataclass(frozen=True)
class UpstreamCall:
    route: Route
    # An OpenAI Chat Completions body: final messages, no ``mnx``; ``model`` as the provider knows it.
    body: dict[str, Any]
    api_key: str
    settings: ProviderConfig


class UpstreamStream:
    """An open streamed answer: iterate for OpenAI SSE bytes; ``aclose`` releases the connection."""

    def __init__(self, chunks: AsyncIterator[bytes], close: Callable[[], Awaitable[None]]) -> None:
        self._chunks = chunks
        self._close = close

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def aclose(self) -> None:
        await self._close()


def load_litellm() -> Any:
    """Import LiteLLM once, offline: its default import fetches a price list from the internet."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    litellm.drop_params = True  # Provider-specific knobs another provider lacks are dropped, not fatal.
    return litellm


def _provider_message(status: int, raw: bytes) -> tuple[str, str | None]:
    """The provider's own error message and code, from whichever envelope it used."""
    try:
        body = json.loads(raw)
    except ValueError:
        text = raw.decode(errors="replace").strip()[:500]
        return text or f"provider answered HTTP {status}", None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type") or error.get("status")
        return str(error.get("message") or error), str(code) if code else None
    if isinstance(error, str):
        return str(body.get("message") or error), error
    return str(body)[:500], None


def _status_error(status: int, raw: bytes) -> UpstreamError:
    message, code = _provider_message(status, raw)
    return UpstreamError(f"provider error: {message}", status=status, code=code or "upstream_error")


def _transport_error(error: httpx.HTTPError, provider: str) -> UpstreamError:
    if isinstance(error, httpx.TimeoutException) and not isinstance(error, httpx.ConnectTimeout):
        return UpstreamError(f"{provider} did not answer in time", status=504, code="upstream_timeout")
    return UpstreamError(f"cannot reach {provider}: {type(error).__name__}", status=502, code="upstream_unreachable")


class Upstream:
    def __init__(self, providers: ProvidersConfig) -> None:
        timeout = providers.openai.timeout
        self._openai = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=timeout.connect, read=timeout.read, write=timeout.read, pool=timeout.connect),
            transport=ShardedTransport(shards=8, limits=httpx.Limits(max_connections=250, max_keepalive_connections=32)),
        )
        self._litellm: Any = None
        # Parsed once per upstream: httpx's URL parsing is a visible share of a passthrough call.
        self._chat_urls: dict[str, httpx.URL] = {}

    def warm_up(self) -> None:
        """Import LiteLLM now (it takes seconds), not on the first Claude or Gemini request."""
        self._litellm = load_litellm()

    async def aclose(self) -> None:
        await self._openai.aclose()

    # -- public interface -----------------------------------------------------------------

    async def complete(self, call: UpstreamCall) -> dict[str, Any]:
        if call.route.provider == "openai":
            return await self._openai_complete(call)
        return await self._litellm_complete(call)

    async def open_stream(self, call: UpstreamCall) -> UpstreamStream:
        """Start a streamed answer; provider errors raise here, before any byte reaches the client."""
        if call.route.provider == "openai":
            return await self._openai_stream(call)
        return await self._litellm_stream(call)

    # -- OpenAI-compatible passthrough ----------------------------------------------------

    def _openai_request(self, call: UpstreamCall) -> httpx.Request:
        url = self._chat_urls.get(call.settings.api_base)
        if url is None:
            url = self._chat_urls[call.settings.api_base] = httpx.URL(f"{call.settings.api_base}/chat/completions")
        return self._openai.build_request(
            "POST", url,
            content=json.dumps(call.body, ensure_ascii=False).encode(),
            headers={"authorization": f"Bearer {call.api_key}", "content-type": "application/json"},
        )

    async def _openai_complete(self, call: UpstreamCall) -> dict[str, Any]:
        try:
            response = await self._openai.send(self._openai_request(call))
        except httpx.HTTPError as error:
            raise _transport_error(error, "the OpenAI-compatible provider") from None
        if response.status_code >= 400:
            raise _status_error(response.status_code, response.content)
        try:
            answer = response.json()
        except ValueError:
            raise UpstreamError("provider answered with invalid JSON", status=502, code="upstream_invalid_response") from None
        if not isinstance(answer, dict):
            raise UpstreamError("provider answered with unexpected JSON", status=502, code="upstream_invalid_response")
        return answer

    async def _openai_stream(self, call: UpstreamCall) -> UpstreamStream:
        try:
            response = await self._openai.send(self._openai_request(call), stream=True)
        except httpx.HTTPError as error:
            raise _transport_error(error, "the OpenAI-compatible provider") from None
        if response.status_code >= 400:
            raw = await response.aread()
            await response.aclose()
            raise _status_error(response.status_code, raw)

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            except httpx.HTTPError as error:
                # A stream cut mid-way ends here; the caller sees an incomplete stream.
                log.warning("upstream stream broke off: %s", type(error).__name__)

        return UpstreamStream(chunks(), response.aclose)

    # -- LiteLLM translation --------------------------------------------------------------

    def _litellm_arguments(self, call: UpstreamCall) -> dict[str, Any]:
        if self._litellm is None:
            self.warm_up()
        params = {k: v for k, v in call.body.items() if k not in ("model", "messages", "stream")}
        return {
            **params,
            "model": f"{_LITELLM_PREFIX[call.route.provider]}/{call.route.model}",
            "messages": call.body["messages"],
            "api_key": call.api_key,
            "api_base": call.settings.api_base,
            "timeout": call.settings.timeout.read,
            "num_retries": 0,
        }

    def _litellm_error(self, error: Exception) -> UpstreamError:
        status = getattr(error, "status_code", None)
        if not isinstance(status, int):
            status = 502
        message = getattr(error, "message", None) or str(error)
        return UpstreamError(f"provider error: {message}"[:2000], status=status, code="upstream_error")

    async def _litellm_complete(self, call: UpstreamCall) -> dict[str, Any]:
        try:
            response = await self._litellm.acompletion(**self._litellm_arguments(call))
        except Exception as error:  # LiteLLM raises its own tree, all carrying status_code.
            raise self._litellm_error(error) from None
        return json.loads(response.model_dump_json(exclude_none=True))

    async def _litellm_stream(self, call: UpstreamCall) -> UpstreamStream:
        try:
            stream = await self._litellm.acompletion(**self._litellm_arguments(call), stream=True)
        except Exception as error:
            raise self._litellm_error(error) from None

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in stream:
                    yield sse_frame(json.loads(chunk.model_dump_json(exclude_none=True)))
            except Exception as error:  # Mid-stream failure: stop without [DONE], an incomplete turn.
                log.warning("upstream stream broke off: %s", type(error).__name__)
                return
            yield DONE_FRAME

        async def close() -> None:
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()

        return UpstreamStream(chunks(), close)
