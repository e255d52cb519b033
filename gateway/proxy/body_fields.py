"""The request-body fields each provider surface accepts, and the part of them LiteLLM gets: the checks.

Each format declares its two allow-lists on its ``WireFormat`` (gateway/proxy/*_format.py).

Why allow-lists: LiteLLM's call functions take the provider API's fields and its own
control arguments in one keyword namespace (``api_base``, ``base_url``,
``custom_llm_provider``, ``extra_headers``, ``model_list``, ``mock_response``,
``callbacks``, ``langsmith_base_url``... some 300 of them). Spreading a request body into
that call let a tenant send the operator's provider keys to a URL of its choosing and
install process-wide loggers. So the boundary is named field by field:

* ``WireFormat.accepted``: the provider API's own request fields, as its official SDK sends
  them (openai 2.x ``CompletionCreateParams`` / ``ResponseCreateParams``, anthropic
  ``MessageCreateParams`` and its beta fields, Gemini's ``GenerateContentRequest``).
  A body with any other top-level field is a 400 ``unknown_parameter`` naming it, on
  every surface and whichever provider the model routes to, as the providers themselves
  answer an unknown field (nothing is stored or forwarded). An operator whose
  OpenAI-compatible server takes more (vLLM's ``top_k``...) names those fields in
  ``providers.<name>.extra_body_fields``: they are forwarded to that provider's native
  passthrough only, never to LiteLLM.
* ``WireFormat.translated``: what LiteLLM receives when it translates the request for another
  provider. A subset of ``accepted``: fields with no meaning at the other provider
  (``store``, OpenAI's stored-prompt ``prompt``), or that LiteLLM reads as its own
  (``metadata`` is LiteLLM's logging metadata), are not sent.

``tests/security/test_litellm_arguments.py`` walks every keyword of LiteLLM's own call
signatures through every surface, so a LiteLLM upgrade that starts reading one of these
fields as a control argument fails a test instead of opening a hole.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Collection, Iterable

from gateway.errors import BadRequest
from gateway.proxy.wire import WireFormat


def reject_unknown_fields(sent: Iterable[str], wire: WireFormat, extra: Collection[str] = ()) -> None:
    """400 ``unknown_parameter`` for the first top-level field the client ``sent`` that is
    neither the API's own nor one of ``extra`` (the operator's extra fields for the provider
    the model routes to)."""
    accepted = wire.accepted
    for name in sent:
        if name not in accepted and name not in extra:
            raise BadRequest(f"unknown parameter: {name!r} is not a field of this API",
                             code="unknown_parameter", param=name)


def translated_fields(body: dict[str, Any], wire: WireFormat) -> dict[str, Any]:
    """The fields of ``body`` LiteLLM may receive for ``wire``; null ones are left out."""
    allowed = wire.translated
    return {name: value for name, value in body.items() if name in allowed and value is not None}
