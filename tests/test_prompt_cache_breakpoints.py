"""Anthropic prompt-cache breakpoints in cache mode (``mnx.cache``), and the provider's cached-token usage.

In cache mode the gateway marks ``cache_control`` at the end of its stable system text and at
the end of the replayed history on requests to Anthropic, natively (/messages) and through
LiteLLM (/chat/completions with a claude model), unless the request marks its own. What the
fake provider received is what Anthropic would have read. Cached-token counts in ``usage``
come back to the client as the provider (or LiteLLM) reported them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gateway.history import content_text
from gateway.pipeline.context import VOLATILE_PREAMBLE
from tests.conftest import KEY, PROVIDER_KEY, Gateway, serve_gateway
from tests.fake_upstream import FakeProvider, ServerThread, stop_all

ANTHROPIC_KEY = "sk-ant-caller-key"
CLAUDE = "claude-gateway-test"
PROMPT = "PROJECT PROMPT: answer as a travel agent."
MEMORY = "User loves pizza"
EPHEMERAL = {"type": "ephemeral"}
HEADERS = {"x-mnexium-key": KEY, "x-api-key": ANTHROPIC_KEY, "x-anthropic-key": ANTHROPIC_KEY,
           "x-openai-key": PROVIDER_KEY}


@pytest.fixture(scope="module")
def gw(module_gateway) -> Gateway:
    """One gateway for the module, with a default system prompt (the stable system text) and
    a memory for subject "pat" (the volatile text, recalled by "pizza")."""
    gateway = module_gateway()
    with gateway.rest() as rest:
        assert rest.post("/prompts", json={"name": "p", "prompt_text": PROMPT, "is_default": True}).is_success
        assert rest.post("/memories", json={"subject_id": "pat", "text": MEMORY}).is_success
    return gateway


def mnx(chat: str, cache: bool = True) -> dict[str, Any]:
    return {"subject_id": "pat", "chat_id": chat, "cache": cache, "history": True, "recall": True, "learn": False}


def turn_on(path: str) -> Callable[..., dict[str, Any]]:
    """A function running one turn on ``path`` (/v1/messages or /v1/chat/completions) and returning
    the body the provider received; named after the surface, for test ids and chat ids."""
    def turn(gateway: Gateway, chat: str, messages: list[dict[str, Any]], cache: bool = True,
             model: str = CLAUDE, more_mnx: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        response = httpx.post(gateway.url + path, headers=HEADERS, timeout=30, json={
            "model": model, "max_tokens": 64, "messages": messages, "mnx": {**mnx(chat, cache), **(more_mnx or {})},
            **fields})
        assert response.status_code == 200, response.text
        return gateway.forwarded()[-1]["body"]

    turn.__name__ = "on_" + path.rsplit("/", 1)[-1]
    return turn


on_messages = turn_on("/v1/messages")
on_chat = turn_on("/v1/chat/completions")


def marks(value: Any) -> list[Any]:
    """Every ``cache_control`` in a forwarded body, wherever it is."""
    if isinstance(value, dict):
        own = [value["cache_control"]] if "cache_control" in value else []
        return own + [mark for item in value.values() for mark in marks(item)]
    if isinstance(value, list):
        return [mark for item in value for mark in marks(item)]
    return []


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assert_marked_at_the_two_prefix_ends(body: dict[str, Any], first_question: str) -> None:
    """The Anthropic request of a chat's second turn in cache mode: system and history marked,
    this turn's recalled memory first in the latest user message, unmarked. The client sent that
    message as a string, which stays one text: a string natively, one text block as LiteLLM
    translates a string."""
    assert body["system"] == [{"type": "text", "text": PROMPT, "cache_control": EPHEMERAL}]
    first, answer, latest = body["messages"]
    assert first == {"role": "user", "content": [{"type": "text", "text": first_question}]}
    assert answer == {"role": "assistant", "content": [
        {"type": "text", "text": "echo: " + first_question, "cache_control": EPHEMERAL}]}
    assert latest["role"] == "user"
    if isinstance(latest["content"], str):
        text = latest["content"]
    else:
        (block,) = latest["content"]
        assert block["type"] == "text" and "cache_control" not in block
        text = block["text"]
    volatile, separator, question = text.rpartition("\n\n")
    assert volatile.startswith(VOLATILE_PREAMBLE) and MEMORY in volatile
    assert (separator, question) == ("\n\n", "Any pizza ideas?")
    assert MEMORY not in json.dumps(body["system"])
    assert marks(body) == [EPHEMERAL, EPHEMERAL]


def test_native_messages_carry_two_breakpoints_system_and_history_end(gw):
    first = on_messages(gw, "native-marks", [user("Plan a trip to Rome")])
    # No history yet: only the system text is marked.
    assert first["system"] == [{"type": "text", "text": PROMPT, "cache_control": EPHEMERAL}]
    assert marks(first) == [EPHEMERAL]
    second = on_messages(gw, "native-marks", [user("Any pizza ideas?")])
    assert_marked_at_the_two_prefix_ends(second, "Plan a trip to Rome")


def test_the_clients_string_system_follows_the_marked_gateway_block(gw):
    body = on_messages(gw, "native-system", [user("Any pizza ideas?")], system="CLIENT SYSTEM")
    assert body["system"] == [{"type": "text", "text": PROMPT, "cache_control": EPHEMERAL},
                              {"type": "text", "text": "CLIENT SYSTEM"}]
    assert marks(body) == [EPHEMERAL]


def test_claude_through_litellm_carries_the_same_two_breakpoints(gw):
    first = on_chat(gw, "translated-marks", [user("Plan a trip to Rome")])
    assert marks(first) == [EPHEMERAL]
    second = on_chat(gw, "translated-marks", [user("Any pizza ideas?")])
    assert gw.forwarded()[-1]["path"] == "/v1/messages"
    assert_marked_at_the_two_prefix_ends(second, "Plan a trip to Rome")


@pytest.mark.parametrize("turn", [on_messages, on_chat])
def test_contract_order_adds_no_breakpoint(gw, turn):
    turn(gw, f"no-cache-{turn.__name__}", [user("Plan a trip to Rome")], cache=False)
    body = turn(gw, f"no-cache-{turn.__name__}", [user("Any pizza ideas?")], cache=False)
    assert marks(body) == []
    assert MEMORY in content_text(body["system"])


def test_a_clients_own_block_mark_is_left_exactly_as_sent_and_none_added(gw):
    on_messages(gw, "client-block", [user("Plan a trip to Rome")])
    sent = [{"role": "user", "content": [{"type": "text", "text": "Any pizza ideas?", "cache_control": EPHEMERAL}]}]
    body = on_messages(gw, "client-block", copy.deepcopy(sent))
    assert body["messages"][-1]["content"][-1] == sent[0]["content"][0]
    assert body["system"] == PROMPT  # not turned into blocks, not marked
    assert marks(body) == [EPHEMERAL]


def test_a_clients_own_system_mark_is_left_exactly_as_sent_and_none_added(gw):
    on_messages(gw, "client-system", [user("Plan a trip to Rome")])
    system = [{"type": "text", "text": "CLIENT SYSTEM", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    body = on_messages(gw, "client-system", [user("Any pizza ideas?")], system=copy.deepcopy(system))
    assert body["system"] == [{"type": "text", "text": PROMPT}, *system]
    assert marks(body) == [{"type": "ephemeral", "ttl": "1h"}]


def test_a_clients_own_tool_mark_on_the_translated_path_means_no_gateway_marks(gw):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}},
              "cache_control": EPHEMERAL}]
    on_chat(gw, "client-tool", [user("Plan a trip to Rome")], tools=tools)
    body = on_chat(gw, "client-tool", [user("Any pizza ideas?")], tools=tools)
    assert marks(body) == [EPHEMERAL] and "cache_control" in body["tools"][0]


def test_a_clients_own_part_mark_on_the_translated_path_is_kept_and_none_added(gw):
    on_chat(gw, "client-part", [user("Plan a trip to Rome")])
    body = on_chat(gw, "client-part", [
        {"role": "system", "content": [{"type": "text", "text": "CLIENT SYSTEM", "cache_control": EPHEMERAL}]},
        user("Any pizza ideas?")])
    assert {"type": "text", "text": "CLIENT SYSTEM", "cache_control": EPHEMERAL} in body["system"]
    assert marks(body) == [EPHEMERAL]


WEATHER_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def test_history_ending_in_tool_calls_is_marked_at_the_closest_earlier_text(gw):
    on_chat(gw, "tool-history", [user("Weather in Rome?")], model="claude-x-tool-call", tools=WEATHER_TOOLS)
    # The stored answer is a tool call with no text: the mark falls back to the question before it.
    # (The request answers the call and asks more: its question carries this turn's context.)
    body = on_chat(gw, "tool-history", [{"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
                                        user("And pizza in Rome?")], tools=WEATHER_TOOLS)
    question, call, latest = body["messages"]
    assert question["content"] == [{"type": "text", "text": "Weather in Rome?", "cache_control": EPHEMERAL}]
    assert call["role"] == "assistant" and "tool_use" in [block["type"] for block in call["content"]]
    assert not marks(call)
    # LiteLLM joins the tool's answer and the new question in one user message, the result first.
    assert [block["type"] for block in latest["content"]] == ["tool_result", "text"] and not marks(latest)
    assert latest["content"][1]["text"].startswith(VOLATILE_PREAMBLE)
    assert latest["content"][1]["text"].endswith("\n\nAnd pizza in Rome?")
    assert len(marks(body)) == 2 and body["system"][0]["cache_control"] == EPHEMERAL


def test_a_claude_tool_only_continuation_gets_no_marks_and_its_context_in_the_system(gw):
    """A request of tool results alone has no words of the user to carry this turn's context: it
    stays in the system text, which then changes from step to step of the tool loop; a mark there
    would pay for a cache write at every step and never be read."""
    with gw.rest() as rest:
        assert rest.put("/state/tour", headers={"x-subject-id": "pat"}, json={"value": {"step": 2}}).is_success
    state = {"state": {"load": True, "key": "tour"}}
    on_chat(gw, "tool-only", [user("Pizza places near the Pantheon?")], model="claude-x-tool-call",
            tools=WEATHER_TOOLS, more_mnx=state)
    body = on_chat(gw, "tool-only", [{"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}],
                   tools=WEATHER_TOOLS, more_mnx=state)
    assert gw.forwarded()[-1]["path"] == "/v1/messages"
    assert marks(body) == []
    system = content_text(body["system"])
    assert system.startswith(PROMPT) and '"step": 2' in system
    question, call, result = body["messages"]
    assert question["content"] == [{"type": "text", "text": "Pizza places near the Pantheon?"}]
    assert [block["type"] for block in result["content"]] == ["tool_result"]
    assert VOLATILE_PREAMBLE not in json.dumps(body["messages"])


@pytest.mark.parametrize("turn, model", [(on_chat, "gpt-4o-mini"), (on_messages, "gpt-4o-mini")])
def test_an_openai_model_in_cache_mode_gets_no_cache_control(gw, turn, model):
    turn(gw, f"openai-{turn.__name__}", [user("Plan a trip to Rome")], model=model)
    body = turn(gw, f"openai-{turn.__name__}", [user("Any pizza ideas?")], model=model)
    assert gw.forwarded()[-1]["path"] == "/v1/chat/completions"
    assert "cache_control" not in json.dumps(body)
    latest = body["messages"][-1]
    assert latest["role"] == "user" and MEMORY in content_text(latest["content"])
    assert MEMORY not in content_text(body["messages"][0]["content"])


# -- usage: cached-token counts reach the client ----------------------------------------------

OPENAI_CACHED = 6
CACHE_READ = 7
CACHE_WRITE = 3


class CachingProvider(FakeProvider):
    """The fake provider, its whole answers reporting prompt-cache use as each provider does:
    OpenAI's ``prompt_tokens_details.cached_tokens``, Anthropic's ``cache_read_input_tokens``
    and ``cache_creation_input_tokens``."""

    async def _respond(self, send: Any, status: int, payload: dict[str, Any],
                       headers: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
        usage = payload.get("usage")
        if isinstance(usage, dict) and "prompt_tokens" in usage and "data" not in payload:
            usage["prompt_tokens_details"] = {"cached_tokens": OPENAI_CACHED}
        elif isinstance(usage, dict) and "input_tokens" in usage and "total_tokens" not in usage:
            usage.update(cache_read_input_tokens=CACHE_READ, cache_creation_input_tokens=CACHE_WRITE)
        await super()._respond(send, status, payload, headers)


@pytest.fixture(scope="module")
def caching_gw(tmp_path_factory) -> Iterator[Gateway]:
    provider = CachingProvider()
    servers = [ServerThread(provider).start()]
    provider.url = servers[0].url  # type: ignore[attr-defined]
    storage = {"backend": "sqlite", "sqlite": {"path": str(tmp_path_factory.mktemp("db") / "gateway.db")}}
    yield serve_gateway(provider, storage, tmp_path_factory, servers)
    stop_all(servers)


def test_openai_cached_tokens_pass_through_unchanged(caching_gw):
    answer = caching_gw.openai().chat.completions.create(
        model="gpt-4o-mini", messages=[user("hello")], extra_body={"mnx": mnx("usage-openai")})
    assert answer.usage is not None and answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == OPENAI_CACHED
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (10, 15)


def test_anthropic_cache_read_and_creation_tokens_pass_through_unchanged(caching_gw):
    response = httpx.post(caching_gw.url + "/v1/messages", headers=HEADERS, timeout=30, json={
        "model": CLAUDE, "max_tokens": 64, "messages": [user("hello")], "mnx": mnx("usage-native")})
    assert response.json()["usage"] == {"input_tokens": 10, "output_tokens": 5,
                                        "cache_read_input_tokens": CACHE_READ,
                                        "cache_creation_input_tokens": CACHE_WRITE}


def test_claude_through_litellm_reports_the_cached_tokens(caching_gw):
    response = httpx.post(caching_gw.url + "/v1/chat/completions", headers=HEADERS, timeout=30, json={
        "model": CLAUDE, "max_tokens": 64, "messages": [user("hello")], "mnx": mnx("usage-translated")})
    usage = response.json()["usage"]
    # LiteLLM's OpenAI shape for Anthropic's counts: cache reads as cached prompt tokens, and
    # Anthropic's own two fields alongside.
    assert usage["prompt_tokens_details"]["cached_tokens"] == CACHE_READ
    assert usage["cache_read_input_tokens"] == CACHE_READ
    assert usage["cache_creation_input_tokens"] == CACHE_WRITE


@pytest.mark.parametrize("surface", [on_messages, on_chat])
@pytest.mark.parametrize("cache", [True, False])
def test_a_client_that_marks_every_turn_never_sends_more_than_its_own_mark(gw, surface, cache):
    """Replayed history carries none of the client's earlier cache_control marks: a client that
    marks its latest message every turn would otherwise pile up past Anthropic's 4 (a 400)."""
    chat = f"marks-every-turn-{surface.__name__}-{cache}"
    for turn in range(6):
        mine = {"type": "text", "text": f"question {turn} about pizza", "cache_control": EPHEMERAL}
        body = surface(gw, chat, [{"role": "user", "content": [mine]}], cache=cache)
        assert len(marks(body)) == 1, (turn, json.dumps(body)[:600])
