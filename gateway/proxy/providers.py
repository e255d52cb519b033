"""Which provider a model belongs to, and whose key pays for the call.

The caller's own key (per request) always wins over a configured default key;
neither is ever stored or logged, and a project key is never one of them: it
never leaves the gateway.

Model names are checked against one documented character set before anything
else happens, because a model name reaches places a caller must not steer: the
Gemini URL path (``gemini/../../v1/chat/completions#`` walked to another path with
the operator's key) and LiteLLM's provider routing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from collections.abc import Mapping

from gateway.config import ProviderConfig, ProvidersConfig
from gateway.errors import BadRequest

ProviderName = Literal["openai", "anthropic", "gemini"]


@dataclass(frozen=True)
class Provider:
    """Everything the gateway knows about one provider, in one place.

    Which request formats a provider speaks natively is said by each format
    (``WireFormat.native_provider`` in gateway/proxy/*_format.py): OpenAI speaks two.
    """

    name: ProviderName
    # Model-name prefixes that name this provider explicitly ("anthropic/claude-...").
    prefixes: tuple[str, ...]
    # The headers a caller may put its own key in, in order of preference.
    key_headers: tuple[str, ...]
    # The error code of a call that has no key for this provider.
    key_required_code: str
    # The environment variable the shipped gateway.yaml reads providers.<name>.api_key from.
    key_variable: str
    # LiteLLM's name for the provider (the "<prefix>/<model>" it routes by).
    litellm_prefix: str


PROVIDERS: dict[ProviderName, Provider] = {provider.name: provider for provider in (
    Provider("openai", prefixes=("openai/",), key_headers=("x-openai-key",), key_required_code="openai_key_required",
             key_variable="OPENAI_API_KEY", litellm_prefix="openai"),
    Provider("anthropic", prefixes=("anthropic/",), key_headers=("x-anthropic-key",),
             key_required_code="anthropic_key_required", key_variable="ANTHROPIC_API_KEY",
             litellm_prefix="anthropic"),
    Provider("gemini", prefixes=("gemini/", "google/"), key_headers=("x-google-key", "x-goog-api-key"),
             key_required_code="google_key_required", key_variable="GEMINI_API_KEY", litellm_prefix="gemini"),
)}

# Every header that can carry a caller's provider key: the gateway's own, and the native
# SDKs' (x-goog-api-key is google-genai's, x-api-key the Anthropic SDK's, read on /messages only).
PROVIDER_KEY_HEADERS = (*(header for provider in PROVIDERS.values() for header in provider.key_headers), "x-api-key")

MAX_MODEL_LENGTH = 200
# A model name: letters, digits and . _ - : @ + (fine-tuned OpenAI models have colons,
# Vertex-style names an @), starting with a letter or digit. Nothing that means something
# in a URL (? # % / \ whitespace) and no "..". Only an OpenAI-compatible upstream may get
# "/" inside a name (vLLM and OpenRouter name models "org/model"): that name travels in the
# JSON body alone, while Gemini's goes into the request URL's path.
_MODEL_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._:@+-]*"
_MODEL_NAME = re.compile(_MODEL_SEGMENT)
_ORG_MODEL_NAME = re.compile(rf"{_MODEL_SEGMENT}(?:/{_MODEL_SEGMENT})*")
MODEL_RULE = ("letters, digits and . _ - : @ + (starting with a letter or digit), no '..'; "
              "'/' only after a provider prefix, or between the parts of an OpenAI-compatible model's name")


@dataclass(frozen=True)
class Route:
    provider: ProviderName
    # The model name as the provider knows it (an explicit "provider/" prefix removed).
    model: str


def _invalid_model(reason: str, param: str) -> BadRequest:
    return BadRequest(f"{param} {reason}: a model name has {MODEL_RULE}", code="invalid_model", param=param)


def route_model(model: str, *, param: str = "model") -> Route:
    """The mnexium SDK's rule: claude -> Anthropic, gemini/palm -> Google, anything else -> OpenAI.

    An explicit ``openai/``, ``anthropic/``, ``gemini/`` prefix overrides the rule, so
    any OpenAI-compatible model (vLLM, OpenRouter...) can be named whatever it is called.
    Raises BadRequest (naming ``param``) for a name outside the documented character set.
    """
    route = _route(model)
    if len(model) > MAX_MODEL_LENGTH:
        raise _invalid_model(f"is longer than {MAX_MODEL_LENGTH} characters", param)
    if ".." in route.model:
        raise _invalid_model("must not contain '..'", param)
    pattern = _ORG_MODEL_NAME if route.provider == "openai" else _MODEL_NAME
    if not pattern.fullmatch(route.model):
        raise _invalid_model("has a character a model name cannot have", param)
    return route


def _route(model: str) -> Route:
    for provider in PROVIDERS.values():
        for prefix in provider.prefixes:
            if model.startswith(prefix):
                return Route(provider.name, model[len(prefix):])
    lowered = model.lower()
    if "claude" in lowered:
        return Route("anthropic", model)
    if "gemini" in lowered or "palm" in lowered:
        return Route("gemini", model)
    return Route("openai", model)


def litellm_model(route: Route) -> str:
    """The model as LiteLLM routes it: ``<LiteLLM's provider name>/<model>``."""
    return f"{PROVIDERS[route.provider].litellm_prefix}/{route.model}"


def provider_settings(providers: ProvidersConfig, name: ProviderName) -> ProviderConfig:
    return getattr(providers, name)


def provider_key(name: ProviderName, caller_keys: Mapping[str, str], provider_bearer: str | None,
                 settings: ProviderConfig, *, native_header: str | None = None) -> str:
    """The key for this call: a per-request header, then a spare Bearer token, then the configured one.

    ``caller_keys`` are the provider-key headers the caller sent (``Credentials.provider_keys``:
    project keys already removed). ``native_header`` is the header the surface's own SDK
    puts the key in (``x-api-key`` for the Anthropic SDK on /messages), checked first.
    """
    provider = PROVIDERS[name]
    for header in ((native_header,) if native_header else ()) + provider.key_headers:
        value = caller_keys.get(header)
        if value:
            return _sendable(value, header)
    if provider_bearer:
        return _sendable(provider_bearer, "authorization")
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    raise BadRequest(f"no {name} API key: send it in the {provider.key_headers[0]} header, or set "
                     f"{provider.key_variable} (read by the shipped gateway.yaml as providers.{name}.api_key)",
                     code=provider.key_required_code, param=provider.key_headers[0])


def _sendable(key: str, header: str) -> str:
    """A caller's key as it can go upstream: printable ASCII, as every provider's keys are
    (anything else could not even be written into the provider request's header)."""
    if not (key.isascii() and key.isprintable()):
        raise BadRequest(f"the provider key in the {header} header must be printable ASCII",
                         code="invalid_provider_key", param=header)
    return key
