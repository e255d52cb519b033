"""mnx.cache (issue 27): a chat's forwarded prompt keeps a byte-stable prefix for provider prompt caches.

Provider prompt caches (OpenAI's automatic one, Anthropic's breakpoints, Gemini's implicit one)
reuse the longest prefix of a request they have seen before. In the contract's order the gateway
writes this turn's recalled memories and agent state into the system message at position 0, so
every turn changes the very first bytes and nothing is reused. In cache mode those volatile layers
go into the latest user message instead: everything before it (the system message, then the
replayed history) is byte-identical from one turn to the next, and only the last message changes.

These tests run a 20-turn chat with recall, agent state and history on through a real gateway in
front of the fake provider, on each surface, and measure what the provider received.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.pipeline.context import SECTION_SEPARATOR, VOLATILE_PREAMBLE
from gateway.pipeline.recall import PREAMBLE
from tests.conftest import KEY, PROVIDER_KEY, Gateway
from tests.prompt_prefix import canonical, canonical_lines, shared_prefix_length

ANTHROPIC_KEY = "sk-ant-caller-key"
GOOGLE_KEY = "goog-caller-key"
PROJECT_PROMPT = "You are the assistant of a travel agency. Answer briefly."
STATE_KEY = "trip-planner"

# Each memory has words of its own, so that each question recalls a different few of them.
MEMORIES = [
    "Ada keeps bees on her balcony in Lisbon",
    "Ada plays the cello in an amateur orchestra",
    "Ada is allergic to peanuts and carries an epipen",
    "Ada drives an old green Volvo estate",
    "Ada's daughter Mira studies marine biology",
    "Ada runs marathons and her best time is three hours forty",
    "Ada works as a structural engineer designing bridges",
    "Ada collects vintage fountain pens from Japan",
]
# Twenty questions: consecutive ones never ask about the same memories, so that in the contract's
# order the system message differs from each turn to the next.
TOPICS = ["bees balcony", "cello orchestra", "peanuts epipen", "Volvo estate", "Mira marine biology",
          "marathons best time", "engineer bridges", "fountain pens Japan"]
QUESTIONS = [f"Turn {n}: what do you remember about {TOPICS[n % 8]} and {TOPICS[(n * 3 + 1) % 8]}?"
             for n in range(20)]
TURNS = len(QUESTIONS)


def state_value(turn: int) -> dict[str, Any]:
    """The agent state the app writes: a new step every fourth turn."""
    step = turn // 4
    return {"step": step, "booked": [f"leg {n}" for n in range(step)], "next": f"book leg {step}"}


# -- the surfaces -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Surface:
    name: str
    path: str
    headers: dict[str, str]
    # The request body for one user message (``mnx`` added by the caller).
    body: Callable[[str], dict[str, Any]]
    # From a forwarded body, in the provider's own format: the system text or blocks...
    system: Callable[[dict[str, Any]], Any]
    # ...and the message list (messages, contents or input items).
    messages: Callable[[dict[str, Any]], list[dict[str, Any]]]


def _openai_system(body: dict[str, Any]) -> Any:
    first = body["messages"][0]
    return first if first["role"] == "system" else None


def _openai_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return body["messages"][1:] if _openai_system(body) is not None else body["messages"]


CHAT = Surface(
    "chat_completions", "/v1/chat/completions", {"x-openai-key": PROVIDER_KEY},
    lambda text: {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
    _openai_system, _openai_messages)
MESSAGES = Surface(
    "messages", "/v1/messages", {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"},
    lambda text: {"model": "claude-gateway-test", "max_tokens": 64, "messages": [{"role": "user", "content": text}]},
    lambda body: body.get("system"), lambda body: body["messages"])
GEMINI = Surface(
    "gemini", "/v1beta/models/gemini-2.0-flash:generateContent", {"x-goog-api-key": GOOGLE_KEY},
    lambda text: {"contents": [{"role": "user", "parts": [{"text": text}]}]},
    lambda body: body.get("systemInstruction"), lambda body: body["contents"])
RESPONSES = Surface(
    "responses", "/v1/responses", {"x-openai-key": PROVIDER_KEY},
    lambda text: {"model": "gpt-4o-mini", "input": text},
    lambda body: body.get("instructions"),
    lambda body: body["input"] if isinstance(body["input"], list) else [{"role": "user", "content": body["input"]}])
SURFACES = [CHAT, MESSAGES, GEMINI, RESPONSES]


# -- measuring what the provider received -------------------------------------------------------


def without_breakpoints(value: Any) -> Any:
    """``value`` without Anthropic ``cache_control`` marks: a breakpoint marks where a cached prefix
    ends (it moves to the newest history message each turn) and is not part of the cached content."""
    if isinstance(value, dict):
        return {k: without_breakpoints(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [without_breakpoints(v) for v in value]
    return value


@dataclass(frozen=True)
class Forwarded:
    """One request as the provider received it, split where cache mode splits it."""

    system: Any
    messages: list[dict[str, Any]]
    # Where the latest user message is in ``messages``.
    latest_user: int

    @classmethod
    def of(cls, surface: Surface, body: dict[str, Any]) -> Forwarded:
        body = without_breakpoints(body)
        messages = surface.messages(body)
        latest = max(i for i, m in enumerate(messages) if m.get("role", "user") == "user")
        return cls(surface.system(body), messages, latest)

    def serialized(self, messages: list[dict[str, Any]]) -> bytes:
        """The system, then each message, one canonical JSON line each."""
        return canonical_lines([self.system, *messages])

    @property
    def prefix(self) -> bytes:
        """The system and every message before the latest user message: what cache mode keeps stable."""
        return self.serialized(self.messages[:self.latest_user])

    @property
    def whole(self) -> bytes:
        return self.serialized(self.messages)

    @property
    def latest_user_message(self) -> dict[str, Any]:
        return self.messages[self.latest_user]


def text_parts(message: dict[str, Any]) -> list[str]:
    """The texts of a message's parts in order, in any of the four formats."""
    content = message.get("content", message.get("parts"))
    if isinstance(content, str):
        return [content]
    return [part["text"] for part in content or [] if isinstance(part, dict) and isinstance(part.get("text"), str)]


def volatile_block(message: dict[str, Any], words: str) -> str:
    """The turn's context at the start of a forwarded user message whose own words are ``words``,
    checked to be in the documented shape: a string content stays one string (some OpenAI-compatible
    servers take no parts), the block, a blank line, then the words; a parts list (Gemini's) gets the
    block as a part of its own, first."""
    content = message.get("content", message.get("parts"))
    if isinstance(content, str):
        assert content.endswith(SECTION_SEPARATOR + words), content
        return content[:-len(SECTION_SEPARATOR + words)]
    first, own = content
    assert own == {"text": words} and set(first) == {"text"}, content
    return first["text"]


def as_text(value: Any) -> str:
    """Everything readable in a system value (a string, blocks, a Gemini content or an OpenAI message)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(as_text(v) for v in value)
    if "parts" in value or "content" in value:
        return "\n".join(text_parts(value))
    return str(value.get("text", ""))


def injected_memories(text: str) -> list[str]:
    """The memory texts of the recall section in ``text`` (the JSON list after the preamble)."""
    if PREAMBLE not in text:
        return []
    after = text.split(PREAMBLE + "\n", 1)[1].split("\n", 1)[0]
    return [fact["memory"] for fact in json.loads(after)]


# -- driving a chat -----------------------------------------------------------------------------


def seed(gateway: Gateway, subject: str) -> dict[str, str]:
    """The subject's memories (text -> id) and the state's first value."""
    ids = {}
    with gateway.rest() as rest:
        for text in MEMORIES:
            response = rest.post("/memories", json={"subject_id": subject, "text": text})
            assert response.status_code == 201, response.text
            ids[text] = response.json()["id"]
        put_state(rest, subject, 0)
    return ids


def put_state(rest: httpx.Client, subject: str, turn: int) -> None:
    response = rest.put(f"/state/{STATE_KEY}", headers={"x-subject-id": subject}, json={"value": state_value(turn)})
    assert response.status_code == 200, response.text


def send(gateway: Gateway, surface: Surface, text: str, mnx: dict[str, Any],
         headers: dict[str, str] | None = None) -> Forwarded:
    """One turn; what the provider received for it."""
    before = len(gateway.forwarded())
    response = httpx.post(gateway.url + surface.path, json={**surface.body(text), "mnx": mnx},
                          headers={"x-mnexium-key": KEY, **surface.headers, **(headers or {})}, timeout=30)
    assert response.status_code == 200, response.text
    received = [r for r in gateway.forwarded()[before:] if r["path"].endswith(surface.path.rsplit("/", 1)[-1])]
    assert len(received) == 1, received
    return Forwarded.of(surface, received[0]["body"])


def chat_options(subject: str, chat_id: str, cache: Any) -> dict[str, Any]:
    return {"subject_id": subject, "chat_id": chat_id, "recall": True, "history": True, "cache": cache,
            "state": {"load": True, "key": STATE_KEY}}


def run_chats(gateway: Gateway, surface: Surface, subject: str) -> dict[bool, list[Forwarded]]:
    """The 20 turns in cache mode and in the contract's order (two chats of one subject), turn by
    turn side by side so that both see the same memories and state."""
    turns: dict[bool, list[Forwarded]] = {True: [], False: []}
    with gateway.rest() as rest:
        for n, question in enumerate(QUESTIONS):
            if n and n % 4 == 0:
                put_state(rest, subject, n)
            for cache in (True, False):
                options = chat_options(subject, f"{surface.name}-{'cache' if cache else 'contract'}", cache)
                turns[cache].append(send(gateway, surface, question, options))
    return turns


@pytest.fixture(scope="module")
def cache_gateway(module_gateway) -> Gateway:
    gateway = module_gateway()
    with gateway.rest() as rest:
        response = rest.post("/prompts", json={"name": "agency", "prompt_text": PROJECT_PROMPT, "is_default": True})
        assert response.status_code in (200, 201), response.text
    return gateway


@pytest.fixture(scope="module")
def chats(cache_gateway) -> dict[str, tuple[dict[str, str], dict[bool, list[Forwarded]]]]:
    """Each surface's two 20-turn chats, run once for the module's tests: (memory ids, turns)."""
    done = {}
    for surface in SURFACES:
        subject = f"ada-{surface.name}"
        ids = seed(cache_gateway, subject)
        done[surface.name] = (ids, run_chats(cache_gateway, surface, subject))
    return done


# -- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("surface", SURFACES, ids=[s.name for s in SURFACES])
def test_in_cache_mode_only_the_latest_message_changes_from_turn_to_turn(surface, chats):
    turns = chats[surface.name][1][True]
    shared = []
    for n in range(1, TURNS):
        before, after = turns[n - 1], turns[n]
        # Everything before turn N's user message reaches the provider again, byte for byte, in turn N+1.
        assert after.whole.startswith(before.prefix), f"turn {n + 1} rewrote the prefix of turn {n}"
        assert after.prefix.startswith(before.prefix)
        shared.append(shared_prefix_length(before.whole, after.whole))
        assert shared[-1] >= len(before.prefix)
    # The reusable prefix grows every turn (by the previous turn's messages, replayed from history).
    assert all(b > a for a, b in zip(shared, shared[1:])), shared
    last = turns[-1]
    assert shared[-1] / len(last.whole) > 0.75, (shared[-1], len(last.whole))
    # The system message is the same at every turn: the project's prompt and nothing of this turn.
    assert len({canonical(t.system) for t in turns}) == 1
    assert PROJECT_PROMPT in as_text(last.system)
    assert PREAMBLE not in as_text(last.system) and STATE_KEY not in as_text(last.system)


@pytest.mark.parametrize("surface", SURFACES, ids=[s.name for s in SURFACES])
def test_the_volatile_block_opens_the_latest_user_message_and_never_enters_history(surface, chats, cache_gateway):
    turns = chats[surface.name][1][True]
    for n, forwarded in enumerate(turns):
        # The volatile block first, with its preamble; then the user's own words, unchanged
        # (a string content stays a string: a surface whose client sent parts gets a part).
        block = volatile_block(forwarded.latest_user_message, QUESTIONS[n])
        assert block.startswith(VOLATILE_PREAMBLE)
        assert injected_memories(block), f"turn {n + 1} recalled nothing"
        state = json.dumps(state_value(n), ensure_ascii=False, sort_keys=True)
        assert f'"{STATE_KEY}"' in block and state in block
        # The user messages replayed from history are the user's words alone. (The assistant's come
        # back as the provider answered: the fake one echoes the whole user message it received.)
        replayed = [m for m in forwarded.messages[:forwarded.latest_user] if m.get("role", "user") == "user"]
        assert [text_parts(m) for m in replayed] == [[question] for question in QUESTIONS[:n]]
    with cache_gateway.rest() as rest:
        stored = rest.get("/chat/history/read", params={"chat_id": f"{surface.name}-cache",
                                                        "subject_id": f"ada-{surface.name}"}).json()["messages"]
    assert [m["message"] for m in stored if m["role"] == "user"] == QUESTIONS


@pytest.mark.parametrize("surface", SURFACES, ids=[s.name for s in SURFACES])
def test_in_the_contracts_order_the_context_is_in_the_system_message_and_the_prefix_changes(surface, chats):
    turns = chats[surface.name][1][False]
    for n, forwarded in enumerate(turns):
        system = as_text(forwarded.system)
        assert PROJECT_PROMPT in system and injected_memories(system)
        assert json.dumps(state_value(n), ensure_ascii=False, sort_keys=True) in system
        assert text_parts(forwarded.latest_user_message) == [QUESTIONS[n]]
    for n in range(1, TURNS):
        before, after = turns[n - 1], turns[n]
        # This turn's memories changed the system message: the provider can reuse nothing past it.
        assert canonical(before.system) != canonical(after.system)
        assert not after.whole.startswith(before.prefix)
        assert shared_prefix_length(before.whole, after.whole) < len(canonical(after.system))


@pytest.mark.parametrize("surface", SURFACES, ids=[s.name for s in SURFACES])
def test_recall_is_the_same_in_both_orders(surface, chats, cache_gateway):
    ids, turns = chats[surface.name]
    for n in range(TURNS):
        cached = injected_memories(volatile_block(turns[True][n].latest_user_message, QUESTIONS[n]))
        contract = injected_memories(as_text(turns[False][n].system))
        assert cached == contract and cached, (n, cached, contract)
    with cache_gateway.rest() as rest:
        events = {cache: rest.get("/memories/recalls", params={
            "chat_id": f"{surface.name}-{'cache' if cache else 'contract'}", "limit": 1000}).json()["data"]
            for cache in (True, False)}
    recalled = {cache: collections.Counter(e["memory_id"] for e in events[cache]) for cache in (True, False)}
    assert recalled[True] == recalled[False]
    # Every memory injected was logged as recalled, under its id.
    injected = collections.Counter(ids[text] for n, t in enumerate(turns[True]) for text in injected_memories(
        volatile_block(t.latest_user_message, QUESTIONS[n])))
    assert recalled[True] == injected


def test_a_turn_without_a_user_message_keeps_its_context_in_the_system_message(cache_gateway):
    """A tool-result continuation has no user message to carry the block: the contract's place then."""
    subject = "ada-tools"
    seed(cache_gateway, subject)
    options = chat_options(subject, "tools-chat", True)
    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}
    response = httpx.post(cache_gateway.url + "/v1/chat/completions", headers={"x-mnexium-key": KEY,
                                                                               "x-openai-key": PROVIDER_KEY},
                          json={"model": "gpt-4o-mini", "mnx": {**options, "history": False},
                                "messages": [call, {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]})
    assert response.status_code == 200, response.text
    messages = cache_gateway.forwarded()[-1]["body"]["messages"]
    assert messages[0]["role"] == "system" and STATE_KEY in messages[0]["content"]
    assert messages[1:] == [call, {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]


# -- the option ---------------------------------------------------------------------------------


def _user_parts(gateway: Gateway, mnx: dict[str, Any], headers: dict[str, str] | None = None) -> list[str]:
    forwarded = send(gateway, CHAT, "What about the bees?", {"subject_id": "ada-option", "history": False,
                                                             "state": {"load": True, "key": STATE_KEY}, **mnx},
                     headers)
    return text_parts(forwarded.latest_user_message)


@pytest.mark.parametrize("value", [True, "auto"])
def test_cache_true_or_auto_turns_the_mode_on(cache_gateway, value):
    with cache_gateway.rest() as rest:
        put_state(rest, "ada-option", 0)
    parts = _user_parts(cache_gateway, {"cache": value})
    assert len(parts) == 1 and parts[0].startswith(VOLATILE_PREAMBLE)
    assert parts[0].endswith(SECTION_SEPARATOR + "What about the bees?")
    assert _user_parts(cache_gateway, {"cache": False}) == ["What about the bees?"]
    assert _user_parts(cache_gateway, {}) == ["What about the bees?"]  # the configured default: the contract


@pytest.mark.parametrize("value", [1, 0, "yes", [], {"on": True}])
def test_any_other_cache_value_is_a_400_naming_the_option(shared_gateway, value):
    response = httpx.post(shared_gateway.url + "/v1/chat/completions",
                          headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY},
                          json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                                "mnx": {"subject_id": "ada-bad", "cache": value}})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_mnx" and "mnx.cache" in error["message"], error
    assert shared_gateway.forwarded() == []


def test_the_x_mnx_cache_header(cache_gateway):
    with cache_gateway.rest() as rest:
        put_state(rest, "ada-option", 0)
    for header in ("true", "auto", "AUTO"):
        assert _user_parts(cache_gateway, {}, {"x-mnx-cache": header})[0].startswith(VOLATILE_PREAMBLE)
    assert _user_parts(cache_gateway, {}, {"x-mnx-cache": "false"}) == ["What about the bees?"]
    # The body wins over the header.
    assert _user_parts(cache_gateway, {"cache": False}, {"x-mnx-cache": "true"}) == ["What about the bees?"]
    bad = httpx.post(cache_gateway.url + "/v1/chat/completions",
                     headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY, "x-mnx-cache": "sometimes"},
                     json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert bad.status_code == 400 and "mnx.cache" in bad.json()["error"]["message"]


def test_defaults_cache_in_the_config_turns_it_on_for_every_request(module_gateway):
    gateway = module_gateway(defaults={"learn": False, "cache": True})
    assert gateway.config.defaults.cache is True
    with gateway.rest() as rest:
        put_state(rest, "ada-option", 0)
    assert _user_parts(gateway, {})[0].startswith(VOLATILE_PREAMBLE)
    assert _user_parts(gateway, {"cache": False}) == ["What about the bees?"]
    projects = [{"id": "p", "keys": [{"key": KEY}]}]
    assert parse_config({"projects": projects}).defaults.cache is False
    with pytest.raises(ConfigError, match="defaults.cache"):
        parse_config({"projects": projects, "defaults": {"cache": "sometimes"}})



# -- tool loops, strings and chained Responses turns ----------------------------------------------
# One placement rule on every surface: the block goes first into the latest user message that holds
# words of its own. In a tool loop that is the question the loop started from, which every step
# repeats byte for byte; a message of tool results (Anthropic's tool_result blocks, Gemini's
# functionResponse parts) is left as the client sent it, which providers require.

TOOL_QUESTION = "What about the bees on the balcony? Check the weather in Lisbon first."


def forwarded_for(gateway: Gateway, path: str, body: dict[str, Any], headers: dict[str, str],
                  subject: str) -> dict[str, Any]:
    """One cache-mode turn (recall and state on, no history) of a seeded subject; the request the
    provider received."""
    seed(gateway, subject)
    mnx = {"subject_id": subject, "history": False, "recall": True, "cache": True,
           "state": {"load": True, "key": STATE_KEY}}
    before = len(gateway.forwarded())
    response = httpx.post(gateway.url + path, json={**body, "mnx": mnx}, timeout=30,
                          headers={"x-mnexium-key": KEY, **headers})
    assert response.status_code == 200, response.text
    received = gateway.forwarded()[before:]
    assert len(received) == 1, received
    return received[0]


def assert_this_turns_block(block: str) -> None:
    assert block.startswith(VOLATILE_PREAMBLE)
    assert f'"{STATE_KEY}"' in block and "Ada keeps bees on her balcony in Lisbon" in injected_memories(block)


GEMINI_CALL = {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Lisbon"}}}]}
GEMINI_ANSWER = {"role": "user", "parts": [
    {"functionResponse": {"name": "get_weather", "response": {"forecast": "sunny"}}}]}


def test_a_gemini_function_response_turn_carries_the_block_in_the_question(cache_gateway):
    request = [{"role": "user", "parts": [{"text": TOOL_QUESTION}]}, GEMINI_CALL, GEMINI_ANSWER]
    received = forwarded_for(cache_gateway, "/v1beta/models/gemini-2.0-flash:generateContent",
                             {"contents": request}, GEMINI.headers, "ada-gemini-tools")
    question, call, answer = received["body"]["contents"]
    assert_this_turns_block(volatile_block(question, TOOL_QUESTION))
    # The function's answer stays a content of function responses alone, right after its call.
    assert (call, answer) == (GEMINI_CALL, GEMINI_ANSWER)
    assert VOLATILE_PREAMBLE not in as_text(received["body"]["systemInstruction"])


def test_a_gpt_model_on_the_gemini_surface_keeps_each_tool_call_right_before_its_result(cache_gateway):
    """Translated by LiteLLM for an OpenAI model, a function response is a ``tool`` message, which
    must follow the assistant's ``tool_calls`` at once: the block cannot go next to it."""
    request = [{"role": "user", "parts": [{"text": TOOL_QUESTION}]}, GEMINI_CALL, GEMINI_ANSWER]
    received = forwarded_for(cache_gateway, "/v1beta/models/gpt-4o-mini:generateContent",
                             {"contents": request}, {**GEMINI.headers, "x-openai-key": PROVIDER_KEY},
                             "ada-gemini-gpt-tools")
    assert received["path"] == "/v1/chat/completions"
    messages = received["body"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]
    system, question, call, answer = messages
    assert PROJECT_PROMPT in as_text(system) and VOLATILE_PREAMBLE not in as_text(system)
    # LiteLLM turns the Gemini parts of the question into text parts: the block's, then the words.
    block, words = text_parts(question)
    assert_this_turns_block(block)
    assert words == TOOL_QUESTION
    assert [c["function"]["name"] for c in call["tool_calls"]] == ["get_weather"]
    assert answer["tool_call_id"] == call["tool_calls"][0]["id"]
    assert VOLATILE_PREAMBLE not in json.dumps(answer)


def test_a_messages_tool_continuation_carries_the_block_in_the_question(cache_gateway):
    call = {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Lisbon"}}]}
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}
    body = {"model": "claude-gateway-test", "max_tokens": 64,
            "messages": [{"role": "user", "content": TOOL_QUESTION}, call, result]}
    received = forwarded_for(cache_gateway, "/v1/messages", body, MESSAGES.headers, "ada-messages-tools")
    question, forwarded_call, forwarded_result = received["body"]["messages"]
    assert_this_turns_block(volatile_block(question, TOOL_QUESTION))
    # The tool's answer holds its tool_result blocks and nothing else, as Anthropic reads it.
    assert (forwarded_call, forwarded_result) == (call, result)
    assert VOLATILE_PREAMBLE not in json.dumps(received["body"]["system"])


def test_a_responses_function_call_output_continuation_carries_the_block_in_the_question(cache_gateway):
    loop = [{"type": "function_call", "call_id": "call_1", "name": "get_weather",
             "arguments": "{\"city\": \"Lisbon\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]
    body = {"model": "gpt-4o-mini", "input": [{"role": "user", "content": TOOL_QUESTION}, *loop]}
    received = forwarded_for(cache_gateway, "/v1/responses", body, RESPONSES.headers, "ada-responses-tools")
    question, *forwarded_loop = received["body"]["input"]
    assert_this_turns_block(volatile_block(question, TOOL_QUESTION))
    assert forwarded_loop == loop
    assert VOLATILE_PREAMBLE not in received["body"]["instructions"]


def test_a_string_user_message_stays_a_string_on_chat_completions(cache_gateway):
    """An OpenAI-compatible server that takes only string contents (many local ones) still reads
    every message of a cache-mode request."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": TOOL_QUESTION}]}
    received = forwarded_for(cache_gateway, "/v1/chat/completions", body, CHAT.headers, "ada-strings")
    messages = received["body"]["messages"]
    assert all(isinstance(m["content"], str) for m in messages), messages
    assert [m["role"] for m in messages] == ["system", "system", "user"]
    assert_this_turns_block(volatile_block(messages[-1], TOOL_QUESTION))
    assert VOLATILE_PREAMBLE not in messages[0]["content"]


@pytest.mark.parametrize("chained", [{"previous_response_id": "resp_fake"}, {"conversation": "conv_ada"}],
                         ids=["previous_response_id", "conversation"])
def test_a_responses_turn_chained_to_a_stored_one_carries_its_context_in_the_instructions(cache_gateway, chained):
    """OpenAI carries a stored turn's input into the next one: a block in the input would pile up
    there turn after turn. A chained turn's context goes into the instructions, which are not
    carried over."""
    subject = f"ada-chained-{next(iter(chained))}"
    first = forwarded_for(cache_gateway, "/v1/responses", {"model": "gpt-4o-mini", "input": QUESTIONS[0]},
                          RESPONSES.headers, subject)["body"]
    # Not chained: the block is in the input, the instructions are the stable system text.
    assert VOLATILE_PREAMBLE in json.dumps(first["input"]) and VOLATILE_PREAMBLE not in first["instructions"]
    with cache_gateway.rest() as rest:
        put_state(rest, subject, 4)  # this turn's state differs from the first turn's
    mnx = {"subject_id": subject, "history": False, "recall": True, "cache": True,
           "state": {"load": True, "key": STATE_KEY}}
    response = httpx.post(cache_gateway.url + "/v1/responses", timeout=30,
                          headers={"x-mnexium-key": KEY, **RESPONSES.headers},
                          json={"model": "gpt-4o-mini", "input": QUESTIONS[1], "mnx": mnx, **chained})
    assert response.status_code == 200, response.text
    second = cache_gateway.forwarded()[-1]["body"]
    assert second["input"] == QUESTIONS[1]  # the user's words only, as sent
    instructions = second["instructions"]
    assert instructions.startswith(PROJECT_PROMPT) and VOLATILE_PREAMBLE in instructions
    assert json.dumps(state_value(4), ensure_ascii=False, sort_keys=True) in instructions
    assert json.dumps(state_value(0), ensure_ascii=False, sort_keys=True) not in instructions
    assert injected_memories(instructions.split(VOLATILE_PREAMBLE, 1)[1])
