"""Which provider a model belongs to, and whose key pays for the call.

The caller's own key (per request) always wins over a configured default key;
neither is ever stored or logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.datastructures import Headers

from gateway.config import ProviderConfig, ProvidersConfig
from gateway.errors import BadRequest

ProviderName = Literal["openai", "anthropic", "gemini"]

_EXPLICIT_PREFIXES: dict[str, ProviderName] = {"openai/": "openai", "anthropic/": "anthropic",
                                               "gemini/": "gemini", "google/": "gemini"}
# The headers a caller may put its own key in, in order of preference, per provider.
_KEY_HEADERS: dict[ProviderName, tuple[str, ...]] = {
    "openai": ("x-openai-key",),
    "anthropic": ("x-anthropic-key",),
    "gemini": ("x-google-key", "x-goog-api-key"),
}
_KEY_ERROR_CODES: dict[ProviderName, str] = {"openai": "openai_key_required", "anthropic": "anthropic_key_required",
                                             "gemini": "google_key_required"}


@dataclass(frozen=True)
class Route:
    provider: ProviderName
    # The model name as the provider knows it (an explicit "provider/" prefix removed).
    model: str


def route_model(model: str) -> Route:
    """The mnexium SDK's rule: claude -> Anthropic, gemini/palm -> Google, anything else -> OpenAI.

    An explicit ``openai/``, ``anthropic/``, ``gemini/`` prefix overrides the rule, so
    any OpenAI-compatible model (vLLM, OpenRouter...) can be named whatever it is called.
    """
    if not model.isprintable():
        raise BadRequest("model must be printable text without control characters", code="invalid_model",
                         param="model")
    for prefix, provider in _EXPLICIT_PREFIXES.items():
        if model.startswith(prefix):
            return Route(provider, model[len(prefix):])
    lowered = model.lower()
    if "claude" in lowered:
        return Route("anthropic", model)
    if "gemini" in lowered or "palm" in lowered:
        return Route("gemini", model)
    return Route("openai", model)


def provider_settings(providers: ProvidersConfig, name: ProviderName) -> ProviderConfig:
    return getattr(providers, name)


def provider_key(name: ProviderName, headers: Headers, provider_bearer: str | None, settings: ProviderConfig,
                 *, native_header: str | None = None) -> str:
    """The key for this call: a per-request header, then a spare Bearer token, then the configured one.

    ``native_header`` is the header the surface's own SDK puts the key in (``x-api-key``
    for the Anthropic SDK on /messages), checked first.
    """
    for header in ((native_header,) if native_header else ()) + _KEY_HEADERS[name]:
        value = headers.get(header)
        if value and value.strip():
            return _sendable(value.strip(), header)
    if provider_bearer:
        return _sendable(provider_bearer, "authorization")
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    header = _KEY_HEADERS[name][0]
    raise BadRequest(f"no {name} API key: send it in the {header} header or configure providers.{name}.api_key",
                     code=_KEY_ERROR_CODES[name])


def _sendable(key: str, header: str) -> str:
    """A caller's key as it can go upstream: printable ASCII, as every provider's keys are
    (anything else could not even be written into the provider request's header)."""
    if not (key.isascii() and key.isprintable()):
        raise BadRequest(f"the provider key in the {header} header must be printable ASCII",
                         code="invalid_provider_key", param=header)
    return key
