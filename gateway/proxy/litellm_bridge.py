"""What every format's LiteLLM bridge shares: the arguments LiteLLM is called with, and its answers as JSON.

LiteLLM's call functions take the provider API's fields and its own control arguments
(``api_base``, ``callbacks``...) in one keyword namespace, so a bridge passes the fields
named in its format's ``translated`` allow-list and the gateway's own arguments, nothing else.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.proxy.body_fields import translated_fields
from gateway.proxy.providers import litellm_model
from gateway.proxy.wire import UpstreamCall, WireFormat

# The gateway answers with the provider's first error and leaves retrying to the caller's
# SDK: LiteLLM's own retries (and those of the provider SDK it drives) would multiply the
# calls and stretch a timeout past the configured one.
NO_RETRIES = {"num_retries": 0, "max_retries": 0}


def gateway_arguments(call: UpstreamCall) -> dict[str, Any]:
    """The gateway's own arguments to any LiteLLM call: the provider, key, address and timeout."""
    return {"model": litellm_model(call.route), "api_key": call.api_key, "api_base": call.settings.api_base,
            "timeout": call.settings.timeout.read, **NO_RETRIES}


def litellm_arguments(call: UpstreamCall, wire: WireFormat) -> dict[str, Any]:
    """Everything LiteLLM is called with, named: the request's translatable fields
    (``wire.translated``) and the gateway's own arguments, which always win."""
    return {**translated_fields(call.body, wire), **gateway_arguments(call)}


def model_json(model: Any) -> dict[str, Any]:
    """A LiteLLM (pydantic) answer as the JSON the client reads."""
    return json.loads(model.model_dump_json(exclude_none=True))
