"""No request field can steer LiteLLM: every keyword LiteLLM's call functions take is walked
through every provider surface, on the paths LiteLLM translates and the native ones.

The finding this keeps closed: body fields were spread into ``litellm.acompletion(**params)``,
so ``base_url`` + ``custom_llm_provider`` sent the operator's configured provider keys to
a URL of the caller's choosing (and the caller read that URL's answer back), and
``extra_headers``, ``model_list``, ``mock_response``, ``callbacks`` with
``langsmith_base_url`` were honoured too. The keywords are read from LiteLLM itself (its
call signatures and its list of its own parameters), so a LiteLLM release that adds one
is walked too; a field the gateway passes on to LiteLLM that LiteLLM also reads as a
keyword must be in ``REVIEWED``, so a release that starts reading one fails here until
someone has looked at it.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterator

import httpx
import pytest

from gateway.proxy.anthropic_format import MESSAGES_FORMAT
from gateway.proxy.chat_format import CHAT_FORMAT
from gateway.proxy.gemini_format import GEMINI_FORMAT
from gateway.proxy.litellm_guard import callback_snapshot
from gateway.proxy.responses_format import RESPONSES_FORMAT
from gateway.proxy.upstream import load_litellm
from gateway.proxy.wire import WireFormat, declared_formats
from tests.conftest import KEY
from tests.security.trap import Trap

OPERATOR_KEYS = {"openai": "sk-operator-openai-SECRET", "anthropic": "sk-ant-operator-SECRET",
                 "gemini": "AIzaOperatorGoogleKeySECRET0000000000"}


_KWARGS_READ = re.compile(r"""kwargs(?:\.get|\.pop|\.setdefault)?\(?\[?\s*["']([A-Za-z_][A-Za-z0-9_-]*)["']""")


def litellm_keywords() -> set[str]:
    """Every keyword LiteLLM's entry points take: their signatures, the parameters LiteLLM
    calls its own, and every name its call path reads out of ``**kwargs`` (``callbacks``,
    ``success_callback``... are read that way, declared nowhere)."""
    load_litellm()  # Imports and configures LiteLLM; the import below binds the same module.
    import litellm.main
    import litellm.utils
    from litellm.anthropic_interface import messages
    from litellm.google_genai import agenerate_content, agenerate_content_stream
    from litellm.types.utils import StandardCallbackDynamicParams, all_litellm_params

    names = set(all_litellm_params) | set(StandardCallbackDynamicParams.__annotations__)
    for function in (litellm.acompletion, litellm.completion, litellm.aresponses, litellm.aembedding,
                     messages.acreate, agenerate_content, agenerate_content_stream):
        names |= {name for name, parameter in inspect.signature(function).parameters.items()
                  if parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL)}
    for module in (litellm.main, litellm.utils):
        names |= set(_KWARGS_READ.findall(inspect.getsource(module)))
    return names - {"self"}


# The fields the gateway hands LiteLLM that LiteLLM also knows as keywords: each was checked
# to be the provider API's own data for LiteLLM (translated, not obeyed as a control argument).
REVIEWED = {
    CHAT_FORMAT: {"messages", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
                  "max_completion_tokens", "max_tokens", "n", "parallel_tool_calls", "presence_penalty",
                  "reasoning_effort", "response_format", "seed", "stop", "stream_options", "temperature",
                  "tool_choice", "tools", "top_logprobs", "top_p", "user", "web_search_options"},
    RESPONSES_FORMAT: {"input", "include", "instructions", "max_output_tokens", "parallel_tool_calls",
                       "reasoning", "temperature", "text", "tool_choice", "tools", "top_p", "truncation", "user"},
    MESSAGES_FORMAT: {"messages", "max_tokens", "system", "stop_sequences", "temperature", "thinking",
                      "tool_choice", "tools", "top_k", "top_p"},
    GEMINI_FORMAT: {"contents", "tools"},
}


@dataclass(frozen=True)
class Surface:
    name: str
    path: str
    wire: WireFormat
    body: dict[str, Any]
    through_litellm: bool

    def __str__(self) -> str:
        return self.name


_CHAT = [{"role": "user", "content": "hello"}]
_CONTENTS = [{"role": "user", "parts": [{"text": "hello"}]}]
SURFACES = [
    Surface("chat -> Claude via LiteLLM", "/v1/chat/completions", CHAT_FORMAT,
            {"model": "claude-3-5-haiku", "messages": _CHAT}, True),
    Surface("chat -> Gemini via LiteLLM", "/v1/chat/completions", CHAT_FORMAT,
            {"model": "gemini-2.0-flash", "messages": _CHAT}, True),
    Surface("chat native", "/v1/chat/completions", CHAT_FORMAT, {"model": "gpt-4o-mini", "messages": _CHAT}, False),
    Surface("messages -> GPT via LiteLLM", "/v1/messages", MESSAGES_FORMAT,
            {"model": "gpt-4o-mini", "max_tokens": 50, "messages": _CHAT}, True),
    Surface("messages native", "/v1/messages", MESSAGES_FORMAT,
            {"model": "claude-3-5-haiku", "max_tokens": 50, "messages": _CHAT}, False),
    Surface("responses -> Claude via LiteLLM", "/v1/responses", RESPONSES_FORMAT,
            {"model": "claude-3-5-haiku", "input": "hello"}, True),
    Surface("responses native", "/v1/responses", RESPONSES_FORMAT, {"model": "gpt-4o-mini", "input": "hello"},
            False),
    Surface("gemini -> Claude via LiteLLM", "/v1beta/models/claude-3-5-haiku:generateContent", GEMINI_FORMAT,
            {"contents": _CONTENTS}, True),
    Surface("gemini native", "/v1beta/models/gemini-2.0-flash:generateContent", GEMINI_FORMAT,
            {"contents": _CONTENTS}, False),
]


@pytest.fixture(scope="module")
def trap() -> Iterator[Trap]:
    listener = Trap()
    yield listener
    listener.close()


@pytest.fixture
def operator_gateway(start_gateway, storage_sqlite, provider):
    """A gateway whose providers all have a configured (operator) key, and a caller that
    sends none of its own: whatever a caller steers goes out with the operator's keys."""
    providers = {
        "openai": {"api_base": provider.url + "/v1", "api_key": OPERATOR_KEYS["openai"]},
        "anthropic": {"api_base": provider.url, "api_key": OPERATOR_KEYS["anthropic"]},
        "gemini": {"api_base": provider.url + "/v1beta", "api_key": OPERATOR_KEYS["gemini"]},
    }
    return start_gateway(storage_sqlite, providers=providers)


def attack_value(keyword: str, trap: Trap) -> Any:
    """What an attacker would send in ``keyword``: the trap's address wherever one fits."""
    if keyword in ("model_list",):
        return [{"model_name": "x", "litellm_params": {"model": "openai/x", "api_base": trap.url, "api_key": "k"}}]
    if keyword in ("extra_headers", "headers"):
        return {"host": f"127.0.0.1:{trap.port}", "x-forwarded-host": trap.url}
    if "callback" in keyword:
        return ["langsmith"]
    if keyword == "custom_llm_provider":
        return "openai"
    if keyword in ("mock_response",):
        return "mocked by the caller"
    return trap.url


def _post(client: httpx.Client, surface: Surface, extra: dict[str, Any]) -> httpx.Response:
    return client.post(surface.path, json={**surface.body, **extra, "mnx": {"log": False, "learn": False}})


@pytest.mark.parametrize("surface", SURFACES, ids=str)
def test_every_litellm_keyword_outside_the_api_is_a_400_and_reaches_nothing(operator_gateway, trap, surface):
    keywords = sorted(litellm_keywords() - surface.wire.accepted)
    assert {"api_base", "base_url", "custom_llm_provider", "extra_headers", "model_list", "mock_response",
            "callbacks", "success_callback", "langsmith_base_url"} <= set(keywords)
    before = callback_snapshot(load_litellm())
    with httpx.Client(base_url=operator_gateway.url, headers={"x-mnexium-key": KEY}, timeout=30) as client:
        for keyword in keywords:
            response = _post(client, surface, {keyword: attack_value(keyword, trap)})
            # 400 naming the field: unknown_parameter (or, for /responses' "messages", a more specific code).
            assert response.status_code == 400, (keyword, response.text)
            assert repr(keyword) in response.text or f'"{keyword}"' in response.text, (keyword, response.text)
    assert operator_gateway.forwarded() == [], "a request with a LiteLLM keyword reached the provider"
    assert trap.untouched(), trap.contacts[:1]
    assert callback_snapshot(load_litellm()) == before


def test_the_reviewed_litellm_fields_are_the_ones_passed_on():
    """A field the gateway gives LiteLLM that LiteLLM also reads as a keyword is reviewed:
    a LiteLLM release that starts reading another one fails this test."""
    keywords = litellm_keywords()
    for wire in declared_formats():
        assert wire.translated <= wire.accepted
        assert wire.translated & keywords == REVIEWED[wire], wire


@pytest.mark.parametrize("surface", [s for s in SURFACES if s.through_litellm], ids=str)
def test_the_api_fields_litellm_also_reads_cannot_steer_it(operator_gateway, trap, provider, surface):
    """The accepted fields LiteLLM knows by name, with attacker values: the call still goes to
    the configured provider with the operator's key, and nothing reaches the trap."""
    steering = {"metadata": {"api_base": trap.url, "langsmith_base_url": trap.url, "callbacks": ["langsmith"]},
                "user": "end-user-42", "store": True, "prompt_cache_key": trap.url, "safety_identifier": trap.url}
    extra = {field: value for field, value in steering.items() if field in surface.wire.accepted}
    with httpx.Client(base_url=operator_gateway.url, headers={"x-mnexium-key": KEY}, timeout=30) as client:
        response = _post(client, surface, extra)
    assert response.status_code == 200, response.text
    assert trap.untouched(), trap.contacts[:1]
    [forwarded] = operator_gateway.forwarded()
    # It reached the fake provider the model names, with that provider's configured key...
    assert set(forwarded["headers"].values()) & {f"Bearer {OPERATOR_KEYS['openai']}", OPERATOR_KEYS["anthropic"],
                                                  OPERATOR_KEYS["gemini"]}
    # ...and the caller's metadata went nowhere (not even on, as a provider field).
    assert trap.url not in str(forwarded["body"])


def test_finding_1_base_url_with_custom_llm_provider_cannot_take_the_operator_key(operator_gateway, trap):
    """The reproduction from the review, as an attacker sent it."""
    attack = {"model": "claude-3-5-haiku", "messages": _CHAT, "base_url": trap.url + "/v1", "api_base": trap.url,
              "custom_llm_provider": "openai"}
    response = httpx.post(operator_gateway.url + "/v1/chat/completions", json=attack,
                          headers={"x-mnexium-key": KEY}, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_parameter"
    assert trap.untouched() and operator_gateway.forwarded() == []


def test_litellms_callback_lists_cannot_change_after_startup(operator_gateway):
    litellm = load_litellm()
    before = callback_snapshot(litellm)
    litellm.callbacks.append("langsmith")
    litellm.success_callback += ["langsmith"]
    litellm.failure_callback.insert(0, "langsmith")
    litellm.callbacks = ["langsmith"]
    litellm._async_success_callback = ["langsmith"]
    assert callback_snapshot(litellm) == before
