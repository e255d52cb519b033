"""The outbound call of a pull integration, and what it can fail with.

Every failure is a ``FetchResult`` with a reason, never an exception: the caller (a REST
``test``/``sync``, or a prompt being rendered) decides what to do with it. Limits:

* the host is resolved and checked first (``addresses``), then the call goes to that very
  address, with the original Host header and TLS server name, so DNS cannot swap it;
* redirects are not followed (``redirect_refused``): the next hop would not be checked;
* the whole call, resolution included, stops at min(timeout_ms, integrations.max_timeout_ms);
* the body is read in chunks and dropped past integrations.max_response_bytes;
* no proxy from the environment is used (``trust_env=False``): the checked address is where it goes.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from gateway.config import IntegrationsConfig
from gateway.integrations import templates
from gateway.integrations.addresses import AddressRefused, resolve_checked
from gateway.validation import InvalidJson, parse_json

# httpx logs every request's URL at INFO; an integration's URL may carry its secret or a subject
# id in its query (templates), so those lines stay out of the log (warnings still show).
logging.getLogger("httpx").setLevel(logging.WARNING)


@dataclass
class FetchResult:
    ok: bool
    reason: str
    latency_ms: int
    # The parsed JSON answer (ok only).
    document: Any = None
    # The endpoint's HTTP status, when it answered.
    status: int | None = None
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Built once: loading the CA bundle costs tens of milliseconds per client otherwise.
    return httpx.create_ssl_context()


@dataclass(frozen=True)
class PullRequest:
    method: str
    url: str
    headers: dict[str, str]
    params: dict[str, str]
    body: Any


def build_request(integration: Mapping[str, Any], secret: str | None,
                  variables: Mapping[str, str | None]) -> PullRequest:
    """The request the integration's templates and auth describe, placeholders filled in."""
    values = {**variables, "secret": secret}
    headers = {name: _text(value) for name, value in templates.render(integration["headers_template"], values).items()}
    params = {name: _text(value) for name, value in templates.render(integration["query_template"], values).items()}
    auth_type = integration["auth_type"]
    if auth_type != "none" and secret:
        if auth_type == "bearer":
            headers["Authorization"] = f"Bearer {secret}"
        elif auth_type == "api_key_header":
            headers[integration["auth_config"].get("header_name") or "x-api-key"] = secret
        elif auth_type == "basic":
            pair = f"{integration['auth_config'].get('username', '')}:{secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    body = None
    if integration["method"] != "GET" and integration["body_template"]:
        body = templates.render(integration["body_template"], values)
    return PullRequest(integration["method"], integration["endpoint_url"], headers, params, body)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


async def fetch(request: PullRequest, *, timeout_ms: int, settings: IntegrationsConfig) -> FetchResult:
    """Call the endpoint and parse its JSON answer, within the limits above."""
    started = time.monotonic()

    def result(ok: bool, reason: str, **fields: Any) -> FetchResult:
        return FetchResult(ok, reason, round((time.monotonic() - started) * 1000), **fields)

    seconds = min(timeout_ms, settings.max_timeout_ms) / 1000
    try:
        async with asyncio.timeout(seconds):
            return await _call(request, settings, result)
    except TimeoutError:
        return result(False, "timeout", detail=f"no complete answer within {seconds:g} s")


async def _call(request: PullRequest, settings: IntegrationsConfig, result: Callable[..., FetchResult]) -> FetchResult:
    parts = urlsplit(request.url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        address = await resolve_checked(host, port, settings)
    except AddressRefused as refused:
        return result(False, refused.reason, detail=str(refused))
    except OSError:
        return result(False, "resolve_failed", detail=f"cannot resolve {host}")
    # The URL names the checked address; Host and the TLS server name stay the original host's.
    pinned_host = f"[{address}]" if address.version == 6 else str(address)
    pinned_url = urlunsplit((parts.scheme, f"{pinned_host}:{port}", parts.path or "/", parts.query, ""))
    # Identity only: the size limit counts the bytes that arrive, and a compressed answer
    # could expand a thousandfold past it in one chunk.
    headers = {**request.headers, "Host": parts.netloc, "Accept-Encoding": "identity"}
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False, verify=_tls_context(),
                                 timeout=None) as client:
        outbound = client.build_request(request.method, pinned_url, headers=headers, params=request.params or None,
                                        json=request.body, extensions={"sni_hostname": host})
        try:
            response = await client.send(outbound, stream=True)
        except httpx.HTTPError as error:
            return result(False, "connect_failed", detail=type(error).__name__)
        try:
            if response.is_redirect or 300 <= response.status_code < 400:
                return result(False, "redirect_refused", status=response.status_code,
                              detail="redirects are not followed")
            if response.headers.get("content-encoding", "identity").lower() != "identity":
                return result(False, "unsupported_encoding", status=response.status_code)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > settings.max_response_bytes:
                return result(False, "response_too_large", status=response.status_code)
            body = bytearray()
            try:
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > settings.max_response_bytes:
                        return result(False, "response_too_large", status=response.status_code)
            except httpx.HTTPError as error:
                return result(False, "connect_failed", status=response.status_code, detail=type(error).__name__)
        finally:
            await response.aclose()
    if not 200 <= response.status_code < 300:
        return result(False, "http_error", status=response.status_code)
    try:
        document = parse_json(bytes(body))
    except InvalidJson:
        return result(False, "invalid_json", status=response.status_code)
    return result(True, "ok", status=response.status_code, document=document)
