"""The request-body fields each provider surface accepts, and the part of them LiteLLM gets.

Why allow-lists: LiteLLM's call functions take the provider API's fields and its own
control arguments in one keyword namespace (``api_base``, ``base_url``,
``custom_llm_provider``, ``extra_headers``, ``model_list``, ``mock_response``,
``callbacks``, ``langsmith_base_url``... some 300 of them). Spreading a request body into
that call let a tenant send the operator's provider keys to a URL of its choosing and
install process-wide loggers. So the boundary is named field by field:

* ``ACCEPTED[wire]``: the provider API's own request fields, as its official SDK sends
  them (openai 2.x ``CompletionCreateParams`` / ``ResponseCreateParams``, anthropic
  ``MessageCreateParams`` and its beta fields, Gemini's ``GenerateContentRequest``).
  A body with any other top-level field is a 400 ``unknown_parameter`` naming it, on
  every surface and whichever provider the model routes to, as the providers themselves
  answer an unknown field (nothing is stored or forwarded). An operator whose
  OpenAI-compatible server takes more (vLLM's ``top_k``...) names those fields in
  ``providers.<name>.extra_body_fields``: they are forwarded to that provider's native
  passthrough only, never to LiteLLM.
* ``TRANSLATED[wire]``: what LiteLLM receives when it translates the request for another
  provider. A subset of ``ACCEPTED``: fields with no meaning at the other provider
  (``store``, OpenAI's stored-prompt ``prompt``), or that LiteLLM reads as its own
  (``metadata`` is LiteLLM's logging metadata), are not sent.

``tests/security/test_litellm_arguments.py`` walks every keyword of LiteLLM's own call
signatures through every surface, so a LiteLLM upgrade that starts reading one of these
fields as a control argument fails a test instead of opening a hole.
"""

from __future__ import annotations

from typing import Any, Collection, Iterable

from gateway.errors import BadRequest
from gateway.proxy.wire import WireFormat

# OpenAI Chat Completions (openai 2.x CompletionCreateParams, plus stream).
_CHAT = frozenset({
    "model", "messages", "stream", "stream_options", "audio", "frequency_penalty", "function_call", "functions",
    "logit_bias", "logprobs", "max_completion_tokens", "max_tokens", "metadata", "modalities", "moderation", "n",
    "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key", "prompt_cache_options",
    "prompt_cache_retention", "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier",
    "stop", "store", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
    "web_search_options",
})
# What litellm.acompletion gets when a Chat Completions request goes to Claude or Gemini.
_CHAT_TRANSLATED = frozenset({
    "messages", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
    "max_completion_tokens", "max_tokens", "n", "parallel_tool_calls", "presence_penalty", "reasoning_effort",
    "response_format", "seed", "stop", "stream_options", "temperature", "tool_choice", "tools", "top_logprobs",
    "top_p", "user", "web_search_options",
})

# OpenAI Responses (openai 2.x ResponseCreateParams, plus stream).
_RESPONSES = frozenset({
    "model", "input", "stream", "stream_options", "background", "context_management", "conversation", "include",
    "instructions", "max_output_tokens", "max_tool_calls", "metadata", "moderation", "parallel_tool_calls",
    "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
    "reasoning", "safety_identifier", "service_tier", "store", "temperature", "text", "tool_choice", "tools",
    "top_logprobs", "top_p", "truncation", "user",
})
# What litellm.aresponses gets when a Responses request goes to Claude or Gemini.
_RESPONSES_TRANSLATED = frozenset({
    "input", "include", "instructions", "max_output_tokens", "parallel_tool_calls", "reasoning", "temperature",
    "text", "tool_choice", "tools", "top_p", "truncation", "user",
})

# Anthropic Messages (anthropic MessageCreateParams and its beta fields, plus the sampling
# parameters older models take). ``betas`` is not a body field: the SDK sends anthropic-beta.
_MESSAGES = frozenset({
    "model", "messages", "max_tokens", "stream", "system", "metadata", "stop_sequences", "temperature", "top_k",
    "top_p", "tool_choice", "tools", "thinking", "service_tier", "container", "cache_control", "diagnostics",
    "inference_geo", "output_config", "speed", "user_profile_id", "workspace_id", "mcp_servers",
    "context_management", "compaction", "fallbacks", "fallback_credit_token", "billing_policy", "thread",
})
# What LiteLLM's Anthropic-format interface gets when a Messages request goes to a GPT model.
_MESSAGES_TRANSLATED = frozenset({
    "messages", "max_tokens", "system", "stop_sequences", "temperature", "thinking", "tool_choice", "tools", "top_k",
    "top_p",
})

# Google's JSON parser takes proto field names too, and its own REST examples use them;
# the Gemini surface renames them to the camelCase the gateway reads.
GEMINI_SNAKE_CASE = {"system_instruction": "systemInstruction", "tool_config": "toolConfig",
                     "safety_settings": "safetySettings", "generation_config": "generationConfig",
                     "cached_content": "cachedContent", "service_tier": "serviceTier"}
# Gemini GenerateContentRequest (the model and the streaming choice travel in the URL).
_GEMINI = frozenset({
    "model", "contents", "systemInstruction", "tools", "toolConfig", "safetySettings", "generationConfig",
    "cachedContent", "labels", "serviceTier", "store", *GEMINI_SNAKE_CASE,
})
# The Gemini bridge names each argument of litellm's agenerate_content itself (upstream.py).
_GEMINI_TRANSLATED = frozenset({"contents", "systemInstruction", "tools", "generationConfig"})

ACCEPTED: dict[WireFormat, frozenset[str]] = {
    WireFormat.CHAT: _CHAT, WireFormat.RESPONSES: _RESPONSES, WireFormat.MESSAGES: _MESSAGES,
    WireFormat.GEMINI: _GEMINI,
}
TRANSLATED: dict[WireFormat, frozenset[str]] = {
    WireFormat.CHAT: _CHAT_TRANSLATED, WireFormat.RESPONSES: _RESPONSES_TRANSLATED,
    WireFormat.MESSAGES: _MESSAGES_TRANSLATED, WireFormat.GEMINI: _GEMINI_TRANSLATED,
}


def reject_unknown_fields(sent: Iterable[str], wire: WireFormat, extra: Collection[str] = ()) -> None:
    """400 ``unknown_parameter`` for the first top-level field the client ``sent`` that is
    neither the API's own nor one of ``extra`` (the operator's extra fields for the provider
    the model routes to)."""
    accepted = ACCEPTED[wire]
    for name in sent:
        if name not in accepted and name not in extra:
            raise BadRequest(f"unknown parameter: {name!r} is not a field of this API",
                             code="unknown_parameter", param=name)


def translated_fields(body: dict[str, Any], wire: WireFormat) -> dict[str, Any]:
    """The fields of ``body`` LiteLLM may receive for ``wire``; null ones are left out."""
    allowed = TRANSLATED[wire]
    return {name: value for name, value in body.items() if name in allowed and value is not None}


def camel_case_gemini_fields(body: dict[str, Any]) -> None:
    """Rename Gemini's snake_case request fields to the camelCase the gateway reads (both
    spellings of one field is a 400: which one would win is not the caller's to guess)."""
    for snake, camel in GEMINI_SNAKE_CASE.items():
        if snake in body:
            if camel in body:
                raise BadRequest(f"{snake} and {camel} are the same field: send one", code="duplicate_parameter",
                                 param=snake)
            body[camel] = body.pop(snake)
