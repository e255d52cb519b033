"""A model on one of the configured providers, as plugins call it through LiteLLM.

Whose key pays: the plugin's own configured key; else the caller's key for that
provider (the per-request headers chat requests use); else the provider's key
from gateway.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import SecretStr

from gateway.config import ProvidersConfig
from gateway.proxy.providers import litellm_model, provider_key, provider_settings, route_model


class ProviderModel:
    def __init__(self, model: str, api_key: SecretStr | None, api_base: str | None,
                 providers: ProvidersConfig) -> None:
        route = route_model(model)
        self.provider = route.provider
        self.settings = provider_settings(providers, route.provider)
        # LiteLLM's name for it: the provider made explicit.
        self.litellm_model = litellm_model(route)
        self.api_base = api_base or self.settings.api_base
        self._own_key = api_key.get_secret_value() if api_key else None

    def key_for(self, caller_keys: Mapping[str, str]) -> str | None:
        """The key a request would pay with (raises BadRequest when there is none at all)."""
        if self._own_key:
            return self._own_key
        return provider_key(self.provider, caller_keys, None, self.settings)

    def key(self, caller_key: str | None) -> str | None:
        configured = self.settings.api_key.get_secret_value() if self.settings.api_key else None
        return caller_key or self._own_key or configured
