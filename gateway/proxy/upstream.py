"""Calling the provider a model names, in the wire format the client spoke.

Each format (``WireFormat``, declared by its module: chat_format.py, responses_format.py,
anthropic_format.py, gemini_format.py) travels one of two paths:

* When the provider speaks the request's format natively (an OpenAI-compatible
  upstream for OpenAI formats, Anthropic for Messages, Google for Gemini), the request is forwarded
  as-is over pooled keep-alive connections (provider_http.py). Nothing needs translating, and skipping
  LiteLLM here saves ~2.4 ms of CPU per call (~6 ms streamed).
* Otherwise LiteLLM translates the request and the answer (streamed events
  included) to and from the provider's format. LiteLLM gets the fields named in
  the format's ``translated`` allow-list and the gateway's own arguments, nothing else: its
  call functions also take control arguments (``api_base``, ``callbacks``...) that
  would hand the operator's keys to whoever sets them.

Provider failures surface as ``UpstreamError`` carrying the provider's own status
(502/504 when it could not be reached or timed out) and its rate-limit headers.
No client for a provider keeps cookies: one tenant's provider cookies would
otherwise travel with the next tenant's requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import weakref
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import httpx

from gateway.config import ProviderConfig, ProvidersConfig
from gateway.errors import UpstreamError
from gateway.proxy.litellm_guard import freeze_global_callbacks
from gateway.proxy.provider_http import ProviderHTTP, ProviderResponse
from gateway.proxy.stale_retry import StaleConnectionRetry
from gateway.proxy.wire import UpstreamCall, WireFormat
from gateway.redaction import redact
from gateway.store import codec

log = logging.getLogger("gateway.upstream")

# Provider response headers a client's SDK reads to pace itself (its retry logic reads
# retry-after; dashboards read the x-ratelimit-* budget), passed on by name.
_RATE_LIMIT_HEADERS = ("retry-after", "retry-after-ms")
_RATE_LIMIT_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")


def rate_limit_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The rate-limit hints among a provider's response headers (an allow-list, by name)."""
    if not headers:
        return {}
    hints = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith("llm_provider-"):  # LiteLLM's name for a provider's raw header
            lowered = lowered[len("llm_provider-"):]
        if lowered in _RATE_LIMIT_HEADERS or lowered.startswith(_RATE_LIMIT_PREFIXES):
            text = str(value)
            if text.isascii() and text.isprintable():
                hints[lowered] = text
    return hints


def cookieless_jar() -> CookieJar:
    """A cookie jar that never stores a cookie, so a pooled client sends none."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=()))


class LoopLocalClient(httpx.AsyncClient):
    """The HTTP client LiteLLM hands the OpenAI SDK (``litellm.aclient_session``): cookie-less,
    no redirects, a stale kept-alive connection retried once, and one pool per event loop.

    LiteLLM's own clients keep cookies and follow redirects, and are cached per event loop
    (pooled connections belong to the loop that opened them). One object has to stand in
    for all of them, so it sends each request through a client of the running loop's own.
    """

    def __init__(self) -> None:
        super().__init__(cookies=cookieless_jar(), follow_redirects=False)
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary())

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        loop = asyncio.get_running_loop()
        client = self._per_loop.get(loop)
        if client is None:
            client = self._per_loop[loop] = httpx.AsyncClient(
                cookies=cookieless_jar(), follow_redirects=False,
                transport=StaleConnectionRetry(httpx.AsyncHTTPTransport()))
        return await client.send(request, **kwargs)


@dataclass(frozen=True)
class UpstreamAnswer:
    """A whole answer in the client's format, and the provider headers passed on with it."""

    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class UpstreamStream:
    """An open streamed answer: iterate for its SSE bytes; ``aclose`` releases the connection.
    ``headers`` are the provider headers passed on to the client (rate-limit hints)."""

    def __init__(self, chunks: AsyncIterator[bytes], close: Callable[[], Awaitable[None]],
                 headers: dict[str, str] | None = None) -> None:
        self._chunks = chunks
        self._close = close
        self.headers = headers or {}

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def aclose(self) -> None:
        await self._close()


def load_litellm() -> Any:
    """Import LiteLLM once, offline (its default import fetches a price list from the
    internet), configured for a multi-tenant process."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    if getattr(litellm, "_mnx_configured", False):
        return litellm
    litellm.suppress_debug_info = True
    litellm.telemetry = False
    litellm.drop_params = True  # Provider-specific knobs another provider lacks are dropped, not fatal.
    # Messages-format requests for OpenAI models go to /chat/completions, which every
    # OpenAI-compatible upstream serves, not to the Responses API, which most don't.
    litellm.use_chat_completions_url_for_anthropic_messages = True
    # The client LiteLLM's OpenAI-compatible calls use (the Messages bridge to GPT models,
    # embeddings): without it each gets a client that keeps cookies and follows redirects.
    litellm.aclient_session = LoopLocalClient()
    freeze_global_callbacks(litellm)
    litellm._mnx_configured = True
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


def _status_error(status: int, raw: bytes, headers: Mapping[str, str], call: UpstreamCall) -> UpstreamError:
    message, code = _provider_message(status, raw)
    if status >= 500:
        log.warning("%s answered HTTP %d (%s)", call.route.provider, status, code or "no code")
    # A provider may echo the key it was sent (a 401 quoting "Bearer sk-..."): when that
    # key is the operator's configured one, the caller must not read it back.
    error = UpstreamError(redact(f"provider error: {message}", (call.api_key,)), status=status,
                          code=code or "upstream_error")
    error.headers = rate_limit_headers(headers)
    return error


def _transport_error(error: httpx.HTTPError, provider: str) -> UpstreamError:
    # Sent twice when the first went out on a stale kept-alive connection (stale_retry.py).
    attempts = 2 if getattr(error, "sent_again", False) else 1
    if isinstance(error, httpx.TimeoutException) and not isinstance(error, httpx.ConnectTimeout):
        log.warning("%s did not answer in time (%s); answered 504", provider, type(error).__name__)
        return UpstreamError(f"{provider} did not answer in time", status=504, code="upstream_timeout")
    log.warning("cannot reach %s (%s, %d attempt%s); answered 502", provider, type(error).__name__, attempts,
                "" if attempts == 1 else "s")
    return UpstreamError(f"cannot reach {provider}: {type(error).__name__}", status=502, code="upstream_unreachable")


def _timeout(settings: ProviderConfig) -> httpx.Timeout:
    return httpx.Timeout(connect=settings.timeout.connect, read=settings.timeout.read,
                         write=settings.timeout.read, pool=settings.timeout.connect)


@dataclass(frozen=True)
class _NativeCall:
    url: httpx.URL
    headers: dict[str, str]
    body: bytes
    timeout: httpx.Timeout


class Upstream:
    def __init__(self, providers: ProvidersConfig) -> None:
        # One pool of keep-alive connections for every native passthrough; timeouts are set per
        # request, from the provider being called. No cookies, no redirects.
        self._http = ProviderHTTP(max_connections=250, max_idle_per_origin=32)
        self._litellm: Any = None
        # Parsed once per endpoint: httpx's URL parsing is a visible share of a passthrough call.
        self._urls: dict[str, httpx.URL] = {}

    def warm_up(self) -> None:
        """Import LiteLLM now (it takes seconds), not on the first translated request."""
        self._litellm = load_litellm()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- public interface -----------------------------------------------------------------

    async def complete(self, call: UpstreamCall, wire: WireFormat) -> UpstreamAnswer:
        """A whole answer, in ``wire`` format."""
        if call.route.provider == wire.native_provider:
            return await self._native_complete(call, self._native_call(call, wire))
        return await self._bridge(call, wire, stream=False)

    async def open_stream(self, call: UpstreamCall, wire: WireFormat) -> UpstreamStream:
        """Start a streamed answer in ``wire`` format's events; provider errors raise here, before any
        byte is relayed."""
        if call.route.provider == wire.native_provider:
            return await self._native_stream(call, self._native_call(call, wire))
        return await self._bridge(call, wire, stream=True)

    # -- native passthrough ---------------------------------------------------------------

    def _url(self, address: str) -> httpx.URL:
        url = self._urls.get(address)
        if url is None:
            url = self._urls[address] = httpx.URL(address)
        return url

    def _native_call(self, call: UpstreamCall, wire: WireFormat) -> _NativeCall:
        native = wire.native_request(call)
        url = self._url(native.url) if native.fixed_url else httpx.URL(native.url)
        return _NativeCall(url, {**native.headers, "content-type": "application/json"},
                           codec.encode_bytes(native.body), _timeout(call.settings))

    async def _open(self, native: _NativeCall) -> ProviderResponse:
        """The provider's answer, once its headers are in (provider_http raises httpx's exceptions)."""
        return await self._http.post(native.url, native.headers, native.body, native.timeout)

    async def _native_complete(self, call: UpstreamCall, native: _NativeCall) -> UpstreamAnswer:
        try:
            response = await self._open(native)
            raw = await response.read()
        except httpx.HTTPError as error:
            raise _transport_error(error, call.route.provider) from None
        if response.status_code >= 400:
            raise _status_error(response.status_code, raw, response.headers, call)
        try:
            answer = codec.decode(raw)
        except ValueError:
            raise UpstreamError("provider answered with invalid JSON", status=502,
                                code="upstream_invalid_response") from None
        if not isinstance(answer, dict):
            raise UpstreamError("provider answered with unexpected JSON", status=502, code="upstream_invalid_response")
        return UpstreamAnswer(answer, rate_limit_headers(response.headers))

    async def _native_stream(self, call: UpstreamCall, native: _NativeCall) -> UpstreamStream:
        try:
            response = await self._open(native)
            if response.status_code >= 400:
                raw = await response.read()
                raise _status_error(response.status_code, raw, response.headers, call)
        except httpx.HTTPError as error:
            raise _transport_error(error, call.route.provider) from None
        body = response.chunks()

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in body:
                    yield chunk
            except httpx.HTTPError as error:
                # A stream cut mid-way ends here; the caller sees an incomplete stream.
                log.warning("%s stream broke off: %s", call.route.provider, type(error).__name__)

        async def close() -> None:
            await body.aclose()
            await response.aclose()

        return UpstreamStream(chunks(), close, rate_limit_headers(response.headers))

    async def _bridge(self, call: UpstreamCall, wire: WireFormat, *, stream: bool) -> Any:
        """Translate through LiteLLM for a provider that doesn't speak ``wire``."""
        if self._litellm is None:
            self.warm_up()
        bridge = wire.bridge(self._litellm, call)
        first: list[Any] = []
        items: AsyncIterator[Any] | None = None
        try:
            answer = await bridge.request(stream)
            if stream:
                # Some of LiteLLM's streams (Gemini's) only call the provider when their first
                # item is read: read it here, so a provider error is still the call's status
                # (a 429 with its retry-after), not an error event after a 200.
                items = answer.__aiter__()
                try:
                    first.append(await items.__anext__())
                except StopAsyncIteration:
                    pass
                except asyncio.CancelledError:  # the client left: release the provider's connection
                    closer = getattr(answer, "aclose", None)
                    if closer is not None:
                        await closer()
                    raise
        except Exception as error:  # LiteLLM raises its own tree, all carrying status_code.
            raise _litellm_error(error, call) from None
        hints = rate_limit_headers((getattr(answer, "_hidden_params", None) or {}).get("additional_headers"))
        if items is None:
            return UpstreamAnswer(bridge.whole(answer), hints)
        return _litellm_stream(answer, items, first, bridge.frames, bridge.trailer, hints)


# -- LiteLLM translation ------------------------------------------------------------------


def _litellm_error(error: Exception, call: UpstreamCall) -> UpstreamError:
    """A LiteLLM exception as the caller should see it: with the provider's own status, which
    LiteLLM's adapters may wrap in a generic error of theirs (a Gemini-format call to a 503
    surfaced as a 500), its rate-limit headers, and a message without the Python traceback
    LiteLLM appends or any key."""
    chain = _causes(error)
    provider = call.route.provider
    for cause in chain:
        if isinstance(cause, httpx.HTTPError) and not isinstance(cause, httpx.HTTPStatusError):
            return _transport_error(cause, provider)
    statuses = [status for status in (getattr(cause, "status_code", None) for cause in chain)
                if isinstance(status, int)]
    # The innermost status is the one closest to the provider's HTTP answer.
    status = next((s for s in reversed(statuses) if 400 <= s <= 599), 502)
    if any(type(cause).__name__ == "Timeout" for cause in chain):
        status = 504  # LiteLLM's Timeout says 408, but the provider is what ran out of time, as on the native path.
    message = (getattr(error, "message", None) or str(error)).split("Traceback (most recent call last)", 1)[0]
    code = "upstream_timeout" if status == 504 else "upstream_error"
    if status >= 500:
        log.warning("%s call through LiteLLM failed: HTTP %d (%s)", provider, status, type(error).__name__)
    failure = UpstreamError(redact(f"provider error: {message.strip()}", (call.api_key,))[:2000], status=status,
                            code=code)
    for cause in chain:
        response = getattr(cause, "response", None)
        hints = rate_limit_headers(getattr(response, "headers", None))
        if hints:
            failure.headers = hints
            break
    return failure


def _causes(error: BaseException) -> list[BaseException]:
    """``error`` and what it was raised from or during, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain and len(chain) < 20:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _litellm_stream(source: Any, items: AsyncIterator[Any], first: list[Any], frames: Callable[[Any], list[bytes]],
                    trailer: bytes, headers: dict[str, str]) -> UpstreamStream:
    """``source``'s items as SSE frames: ``first`` (already read from ``items``), then the rest."""
    async def chunks() -> AsyncIterator[bytes]:
        try:
            for item in first:
                for frame in frames(item):
                    yield frame
            if first:  # an empty stream has nothing more to read
                async for item in items:
                    for frame in frames(item):
                        yield frame
        except Exception as error:  # Mid-stream failure: no end marker follows, so the turn stays incomplete.
            log.warning("upstream stream through LiteLLM broke off: %s", type(error).__name__)
            return
        if trailer:
            yield trailer

    async def close() -> None:
        closer = getattr(source, "aclose", None)
        if closer is not None:
            await closer()

    return UpstreamStream(chunks(), close, headers)
