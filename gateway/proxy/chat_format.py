"""The OpenAI Chat Completions format: its request fields, its native request, its LiteLLM bridge.

Chat Completions messages are the form history is stored in, so this format needs no
conversion to or from it (the other formats' modules have theirs).
"""

from __future__ import annotations

from typing import Any

from gateway.proxy.litellm_bridge import litellm_arguments, model_json
from gateway.proxy.sse import DONE_FRAME, sse_frame
from gateway.proxy.wire import Bridge, NativeRequest, UpstreamCall, WireFormat

# openai 2.x CompletionCreateParams, plus stream.
_ACCEPTED = frozenset({
    "model", "messages", "stream", "stream_options", "audio", "frequency_penalty", "function_call", "functions",
    "logit_bias", "logprobs", "max_completion_tokens", "max_tokens", "metadata", "modalities", "moderation", "n",
    "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key", "prompt_cache_options",
    "prompt_cache_retention", "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier",
    "stop", "store", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
    "web_search_options",
})
# What litellm.acompletion gets when a Chat Completions request goes to Claude or Gemini.
_TRANSLATED = frozenset({
    "messages", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
    "max_completion_tokens", "max_tokens", "n", "parallel_tool_calls", "presence_penalty", "reasoning_effort",
    "response_format", "seed", "stop", "stream_options", "temperature", "tool_choice", "tools", "top_logprobs",
    "top_p", "user", "web_search_options",
})


def _native_request(call: UpstreamCall) -> NativeRequest:
    return NativeRequest(call.settings.api_base + "/chat/completions", {"authorization": f"Bearer {call.api_key}"},
                         call.body)


def _bridge(litellm: Any, call: UpstreamCall) -> Bridge:
    arguments = litellm_arguments(call, CHAT_FORMAT)
    return Bridge(request=lambda stream: litellm.acompletion(**arguments, stream=stream),
                  whole=model_json, frames=lambda chunk: [sse_frame(model_json(chunk))], trailer=DONE_FRAME)


CHAT_FORMAT = WireFormat(
    name="chat", native_provider="openai", accepted=_ACCEPTED, translated=_TRANSLATED,
    native_request=_native_request, bridge=_bridge,
)
