"""The request/answer formats a provider surface speaks, as each format module declares it.

A ``WireFormat`` is everything the proxy needs to know about one format, declared once
by the module that owns the format (gateway/proxy/chat_format.py, responses_format.py,
anthropic_format.py, gemini_format.py): which provider speaks it natively, the request
fields it accepts and the part of them LiteLLM may receive (the security allow-lists,
see body_fields.py), how a native request is addressed, and how it travels through
LiteLLM to any other provider.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from collections.abc import Awaitable, Callable

from gateway.config import ProviderConfig
from gateway.proxy.providers import ProviderName, Route


@dataclass(frozen=True)
class UpstreamCall:
    route: Route
    # The request body in the client's format: final messages, no ``mnx``; ``model`` as the provider knows it.
    body: dict[str, Any]
    api_key: str
    settings: ProviderConfig
    # Provider headers the client sent that a native passthrough forwards (e.g. anthropic-version).
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NativeRequest:
    """A request as the native provider takes it: where to, with which headers, which body."""

    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    # Whether the URL is the same for every call (parsed once and cached); one that names the
    # model (Gemini's) is not, and caching it would keep every name a caller ever sent.
    fixed_url: bool = True


@dataclass(frozen=True)
class Bridge:
    """How one call travels through LiteLLM: the call, a whole answer, and stream items as frames."""

    request: Callable[[bool], Awaitable[Any]]
    whole: Callable[[Any], dict[str, Any]]
    frames: Callable[[Any], list[bytes]]
    trailer: bytes = b""  # sent after the last item when the stream ends normally


_DECLARED: list[WireFormat] = []


# eq=False: a format is itself (hashable by identity), not the sum of its fields.
@dataclass(frozen=True, eq=False)
class WireFormat:
    name: str
    # The provider that speaks this format natively, and so gets the request untranslated.
    native_provider: ProviderName
    # The API's own top-level request fields: any other is a 400 unknown_parameter.
    accepted: frozenset[str]
    # What LiteLLM receives when it translates the request for another provider (within ``accepted``).
    translated: frozenset[str]
    # The request to the native provider, at its configured api_base.
    native_request: Callable[[UpstreamCall], NativeRequest]
    # The call through LiteLLM for any other provider: (the litellm module, the call) -> Bridge.
    bridge: Callable[[Any, UpstreamCall], Bridge]

    def __post_init__(self) -> None:
        # A security invariant, so not an assert (python -O would skip it): LiteLLM gets nothing a client
        # could not send in the first place.
        if not self.translated <= self.accepted:
            raise ValueError(f"{self.name}: LiteLLM may only get accepted fields, not "
                             f"{sorted(self.translated - self.accepted)}")
        _DECLARED.append(self)

    def __repr__(self) -> str:
        return f"WireFormat({self.name!r})"


def declared_formats() -> tuple[WireFormat, ...]:
    """Every format declared so far (by the format modules imported): the security tests walk them."""
    return tuple(_DECLARED)
