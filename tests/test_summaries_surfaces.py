"""Rolling summaries (mnx.summarize) of chats with tool calls, replayed on every surface.

A chat long enough to be summarized holds tool loops at varied places: the model answers a tool
call, and the client's next request carries only the tool's result, in its surface's own shape
(an OpenAI ``tool`` message, an Anthropic ``tool_result`` block, a Gemini ``functionResponse``
part, a Responses ``function_call_output`` item), as the history docs say a follow-up does. Once
the fold jobs have run, what the provider receives must be, in its own format: the summary in the
system part, then the messages after the summary, a valid sequence for that provider (no tool
result without its call right before it; on Anthropic and Gemini, which refuse anything else, the
user's turn first). A tool loop inside the folded range is folded as a pair:
the summary names the tool and says what it answered.

Through the real gateway on SQLite in front of the fake provider; the summarizer is the built-in
extractive one (the default), so the summary is made of the chat's own words.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.summaries.folding import summary_section
from gateway.summaries.store import ChatSummary
from tests.conftest import KEY, PROVIDER_KEY, Gateway, wait_until
from tests.fake_upstream import FakeProvider

# Small numbers, so a chat crosses them in a few turns.
SMALL = {"start_at_tokens": 300, "chunk_size": 120, "keep_recent_messages": 4, "summary_target": 200}
SUBJECT = "tool-summaries"
SUMMARY_HEADING = "Summary of the earlier part of this conversation"
FIRST_FACT = "My daughter Zoe was born on 3 March 2019 in Lisbon."
# Plain chat between the tool loops: no names, numbers or dates, so the extractive summarizer
# ranks the tool loops and the first fact above it.
FILLER = "let us keep chatting about nothing much in particular, just passing the time pleasantly here"
# The plain turns that come before each tool loop (so loops land early, in the middle and last).
LOOP_AFTER = (1, 4, 7, 9, 12, 14)
PARAMETERS = {"type": "object", "properties": {"loop": {"type": "integer"}}}
TOOLS = ("get_weather", "find_flight", "convert_currency", "book_table", "track_parcel", "check_stock")


def plain_text(turn: int) -> str:
    return FIRST_FACT if turn == 0 else f"Plain turn {'abcdefghijklmnopqrstuvwxyz'[turn % 26]}: {FILLER}."


def loop_question(loop: int) -> str:
    return f"Tool loop {loop}: please look this up for me with the tool."


def loop_result(loop: int) -> str:
    # What the tool answered: a word of its own per loop, to find in the summary.
    return f"outcome-{loop}-{['amber', 'basalt', 'cobalt', 'dahlia', 'ember', 'fjord'][loop]}"


# -- the surfaces -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Surface:
    name: str
    headers: dict[str, str]
    # Path and body of a turn asking ``text`` of ``model`` (``mnx`` added by the caller).
    ask: Callable[[str, str], tuple[str, dict[str, Any]]]
    # The model a plain turn uses, and the one the fake answers with a tool call.
    model: str
    tool_model: str
    # From the client's answer to a tool-call turn: what its next request refers to the call by
    # (its id; Gemini's calls have none, so the function's name).
    call_ref: Callable[[dict[str, Any]], str]
    # Path and body of the follow-up that carries only the tool's result.
    result: Callable[[str, str], tuple[str, dict[str, Any]]]
    # From a forwarded body: the system part as text, and the conversation in the provider's shape.
    system_text: Callable[[dict[str, Any]], str]
    conversation: Callable[[dict[str, Any]], list[dict[str, Any]]]
    # Raises AssertionError unless the conversation is a valid tool sequence for the provider;
    # returns the tool results in it (by the text they carry).
    check: Callable[[list[dict[str, Any]]], list[str]]
    # The chat's tools, declared in every request as this surface's clients do (Anthropic refuses
    # tool_use blocks in a request that declares no tools).
    tools: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # Whether the provider requires the conversation to open with the user's turn.
    user_first: bool = False


def _chat_ask(text: str, model: str) -> tuple[str, dict[str, Any]]:
    return "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": text}]}


def _chat_result(ref: str, output: str) -> tuple[str, dict[str, Any]]:
    return "/v1/chat/completions", {"model": "gpt-4o-mini",
                                    "messages": [{"role": "tool", "tool_call_id": ref, "content": output}]}


def _chat_system(body: dict[str, Any]) -> str:
    first = body["messages"][0]
    return first["content"] if first["role"] == "system" else ""


def _chat_conversation(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] != "system"]


def check_chat(messages: list[dict[str, Any]]) -> list[str]:
    """OpenAI: each ``tool`` message answers a call of the closest assistant ``tool_calls`` message
    before it, with only other tool messages between them; every call gets its answer."""
    results = []
    open_calls: set[str] = set()
    for index, message in enumerate(messages):
        if message["role"] == "tool":
            assert message["tool_call_id"] in open_calls, f"tool result without its call at {index}: {messages}"
            open_calls.discard(message["tool_call_id"])
            results.append(message["content"])
            continue
        assert not open_calls, f"calls {open_calls} left unanswered before message {index}: {messages}"
        open_calls = {call["id"] for call in message.get("tool_calls") or ()}
    return results


def _messages_ask(text: str, model: str) -> tuple[str, dict[str, Any]]:
    return "/v1/messages", {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}


def _messages_result(ref: str, output: str) -> tuple[str, dict[str, Any]]:
    return "/v1/messages", {"model": "claude-gateway-test", "max_tokens": 64, "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": ref, "content": output}]}]}


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _anthropic_system(body: dict[str, Any]) -> str:
    system = body.get("system") or ""
    return system if isinstance(system, str) else "\n".join(b.get("text", "") for b in system)


def check_messages(messages: list[dict[str, Any]]) -> list[str]:
    """Anthropic: user and assistant alternate; the message after
    an assistant's ``tool_use`` blocks is a user message that opens with a ``tool_result`` for each
    of them, and no ``tool_result`` appears anywhere else."""
    results = []
    for index, message in enumerate(messages):
        if index:
            assert message["role"] != messages[index - 1]["role"], f"two {message['role']} messages in a row"
        blocks = _blocks(message)
        answered = [b for b in blocks if b.get("type") == "tool_result"]
        previous = _blocks(messages[index - 1]) if index else []
        calls = [b["id"] for b in previous if b.get("type") == "tool_use"]
        if calls:
            leading = [b["tool_use_id"] for b in blocks[:len(calls)] if b.get("type") == "tool_result"]
            assert leading == calls, f"message {index} does not answer the tool_use before it: {messages}"
        assert len(answered) == len(calls), f"tool_result without its tool_use at {index}: {messages}"
        results += [b["content"] for b in answered]
    return results


def opens_with_user(conversation: list[dict[str, Any]]) -> bool:
    """Anthropic ("messages: first message must use the \"user\" role") and Gemini ("Please ensure
    that multiturn requests alternate between user and model") refuse a conversation that opens
    with the assistant's (model's) turn; OpenAI's two APIs take one."""
    return bool(conversation) and conversation[0].get("role") == "user"


def _gemini_ask(text: str, model: str) -> tuple[str, dict[str, Any]]:
    return f"/v1beta/models/{model}:generateContent", {"contents": [{"role": "user", "parts": [{"text": text}]}]}


def _gemini_result(ref: str, output: str) -> tuple[str, dict[str, Any]]:
    return "/v1beta/models/gemini-2.0-flash:generateContent", {"contents": [{"role": "user", "parts": [
        {"functionResponse": {"name": ref, "response": {"result": output}}}]}]}


def _gemini_system(body: dict[str, Any]) -> str:
    instruction = body.get("systemInstruction") or {}
    return "\n".join(p.get("text", "") for p in instruction.get("parts") or [])


def check_gemini(contents: list[dict[str, Any]]) -> list[str]:
    """Gemini: a model turn of function calls comes right after a user turn (or a turn of function
    responses) and is followed by a user turn holding a function
    response for each call, by name; no function response appears anywhere else."""
    results = []
    for index, content in enumerate(contents):
        parts = content["parts"]
        responses = [p["functionResponse"] for p in parts if "functionResponse" in p]
        previous = contents[index - 1]["parts"] if index else []
        calls = [p["functionCall"]["name"] for p in previous if "functionCall" in p]
        if calls:
            assert content["role"] == "user" and [r["name"] for r in responses] == calls, (
                f"content {index} does not answer the function calls before it: {contents}")
        assert len(responses) == len(calls), f"functionResponse without its call at {index}: {contents}"
        if any("functionCall" in p for p in parts) and index:
            assert contents[index - 1]["role"] == "user", (
                f"a function call turn at {index} does not follow a user turn: {contents}")
        results += [r["response"]["result"] for r in responses]
    return results


def _responses_ask(text: str, model: str) -> tuple[str, dict[str, Any]]:
    return "/v1/responses", {"model": model, "input": text}


def _responses_result(ref: str, output: str) -> tuple[str, dict[str, Any]]:
    return "/v1/responses", {"model": "gpt-4o-mini",
                             "input": [{"type": "function_call_output", "call_id": ref, "output": output}]}


def _responses_conversation(body: dict[str, Any]) -> list[dict[str, Any]]:
    value = body["input"]
    return [{"role": "user", "content": value}] if isinstance(value, str) else value


def check_responses(items: list[dict[str, Any]]) -> list[str]:
    """Responses: each ``function_call_output`` comes right after its ``function_call`` (or after
    another output of the same group of calls); every call gets its output."""
    results = []
    open_calls: list[str] = []
    for index, item in enumerate(items):
        kind = item.get("type", "message")
        if kind == "function_call_output":
            assert item["call_id"] in open_calls, f"output without its function_call at {index}: {items}"
            open_calls.remove(item["call_id"])
            results.append(item["output"])
            continue
        if kind == "function_call":
            open_calls.append(item["call_id"])
            continue
        assert not open_calls, f"function calls {open_calls} left without output before item {index}: {items}"
    return results


CHAT = Surface("chat_completions", {"x-openai-key": PROVIDER_KEY}, _chat_ask, "gpt-4o-mini", "canned",
               lambda answer: answer["choices"][0]["message"]["tool_calls"][0]["id"], _chat_result,
               _chat_system, _chat_conversation, check_chat,
               tools=[{"type": "function", "function": {"name": name, "parameters": PARAMETERS}} for name in TOOLS])
MESSAGES = Surface("messages", {"x-api-key": "sk-ant-caller-key", "anthropic-version": "2023-06-01"},
                   _messages_ask, "claude-gateway-test", "claude-tool-call",
                   lambda answer: answer["content"][0]["id"], _messages_result,
                   _anthropic_system, lambda body: body["messages"], check_messages,
                   tools=[{"name": name, "input_schema": PARAMETERS} for name in TOOLS], user_first=True)
GEMINI = Surface("gemini", {"x-goog-api-key": "goog-caller-key"}, _gemini_ask, "gemini-2.0-flash",
                 "gemini-tool-call",
                 lambda answer: answer["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
                 _gemini_result, _gemini_system, lambda body: body["contents"], check_gemini,
                 tools=[{"functionDeclarations": [{"name": name, "parameters": PARAMETERS} for name in TOOLS]}],
                 user_first=True)
RESPONSES = Surface("responses", {"x-openai-key": PROVIDER_KEY}, _responses_ask, "gpt-4o-mini", "tool-call",
                    lambda answer: answer["output"][0]["call_id"], _responses_result,
                    lambda body: body.get("instructions") or "", _responses_conversation, check_responses,
                    tools=[{"type": "function", "name": name, "parameters": PARAMETERS} for name in TOOLS])
SURFACES = [CHAT, MESSAGES, GEMINI, RESPONSES]


# -- driving a chat -----------------------------------------------------------------------------


def canned_tool_call(loop: int) -> dict[str, Any]:
    """A Chat Completions answer calling this loop's own tool, with an id of its own."""
    call = {"id": f"call_loop_{loop}", "type": "function",
            "function": {"name": TOOLS[loop], "arguments": json.dumps({"loop": loop})}}
    return {"id": f"chatcmpl-loop-{loop}", "object": "chat.completion", "created": 1, "model": "canned",
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}


class Chat:
    """One chat through one surface; what the provider received for each of its requests."""

    def __init__(self, gateway: Gateway, surface: Surface, chat_id: str) -> None:
        self.gateway, self.surface, self.chat_id = gateway, surface, chat_id
        self.forwarded: list[dict[str, Any]] = []

    def send(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        mnx = {"subject_id": SUBJECT, "chat_id": self.chat_id, "learn": False, "history": True,
               "summarize_config": SMALL}
        before = len(self.gateway.forwarded())
        body = {**body, "tools": self.surface.tools, "mnx": mnx}
        response = httpx.post(self.gateway.url + path, json=body, timeout=30,
                              headers={"x-mnexium-key": KEY, **self.surface.headers})
        assert response.status_code == 200, (path, response.status_code, response.text)
        [received] = self.gateway.forwarded()[before:]
        self.forwarded.append(received["body"])
        # The fold runs after the answer, in the background: let it finish before the next turn,
        # so that every turn sees the summary as far as it can go.
        assert wait_until(lambda: no_jobs(self.gateway), timeout=10)
        return response.json()

    def invalid_requests(self) -> list[str]:
        """What was wrong with each request the provider received that it would refuse."""
        problems = []
        for number, body in enumerate(self.forwarded):
            conversation = self.surface.conversation(body)
            try:
                self.surface.check(conversation)
            except AssertionError as error:
                problems.append(f"request {number}: {error}")
            if self.surface.user_first and not opens_with_user(conversation):
                covered = re.search(r"its first (\d+) messages", self.surface.system_text(body))
                problems.append(f"request {number} opens with the {conversation[0].get('role')}'s turn, after "
                                f"{'a summary of the first ' + covered[1] + ' messages' if covered else 'no summary'}:"
                                f" {json.dumps(conversation[0])[:200]}")
        return problems

    def plain(self, turn: int) -> None:
        self.send(*self.surface.ask(plain_text(turn), self.surface.model))

    def tool_loop(self, loop: int, provider: FakeProvider) -> None:
        if self.surface is CHAT:
            provider.chat_answers.append(canned_tool_call(loop))
        answer = self.send(*self.surface.ask(loop_question(loop), self.surface.tool_model))
        self.send(*self.surface.result(self.surface.call_ref(answer), loop_result(loop)))


def no_jobs(gateway: Gateway) -> bool:
    with gateway.rest() as rest:
        return rest.get("/jobs").json()["data"] == []


def stored(gateway: Gateway, chat_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The chat's stored messages and its summaries, as GET /chat/history/read shows them."""
    with gateway.rest() as rest:
        answer = rest.get("/chat/history/read", params={"chat_id": chat_id, "subject_id": SUBJECT,
                                                        "include_summaries": "true", "limit": 1000})
    assert answer.status_code == 200, answer.text
    return answer.json()["messages"], answer.json()["summaries"]


# -- the test -----------------------------------------------------------------------------------


@pytest.mark.parametrize("surface", SURFACES, ids=[s.name for s in SURFACES])
def test_a_summarized_chat_with_tool_calls_replays_a_valid_sequence_under_its_summary(
        surface, start_gateway, storage_sqlite, provider):
    gateway = start_gateway(storage_sqlite)
    chat = Chat(gateway, surface, f"tools-{surface.name}")
    loops = 0
    for turn in range(LOOP_AFTER[-1] + 1):
        chat.plain(turn)
        if turn in LOOP_AFTER:
            chat.tool_loop(loops, provider)
            loops += 1
    # One more turn, after the last tool loop: what the provider receives for it is checked in
    # full against the chat and summary as they were when it was sent.
    messages, summaries = stored(gateway, chat.chat_id)
    [summary] = summaries
    chat.plain(LOOP_AFTER[-1] + 1)
    body = chat.forwarded[-1]
    # The summary is in the system part, in this surface's own shape, as the gateway frames it.
    system = surface.system_text(body)
    assert SUMMARY_HEADING in system and summary["summary_text"] in system
    assert summary["start_message_index"] == 0
    assert summary["end_message_index"] == summary["messages_summarized"] - 1
    # The first turn's fact is in the summary, not replayed.
    assert "Lisbon" in summary["summary_text"] and "2019" in summary["summary_text"]
    assert body["tools"] == surface.tools
    conversation = surface.conversation(body)
    assert FIRST_FACT not in json.dumps(conversation)
    # Folded: the chat's first messages, up to the end of a tool loop or of a plain turn; never
    # between a call and its result.
    folded, replayed = messages[:summary["messages_summarized"]], messages[summary["messages_summarized"]:]
    assert replayed and replayed[0]["role"] != "tool", replayed[:1]
    assert not folded[-1]["tool_calls"], folded[-1]
    # The loops in the folded range are in the summary as pairs: the tool's name and its answer.
    folded_results = [m["message"] for m in folded if m["role"] == "tool"]
    replayed_results = [m["message"] for m in replayed if m["role"] == "tool"]
    assert folded_results and replayed_results, "the chat's loops fall on both sides of the summary"
    folded_loops = [loop for loop in range(loops) if loop_result(loop) in json.dumps(folded_results)]
    assert folded_loops and folded_loops == list(range(len(folded_loops)))
    for loop in folded_loops:
        name = TOOLS[loop] if surface is CHAT else "get_weather"
        line = next(line for line in summary["summary_text"].splitlines() if loop_result(loop) in line)
        assert f"called {name}(" in line and f"Tool {name} answered" in line, line
    # The loops after the summary are replayed, each result after its call; none is in the summary.
    tool_results = surface.check(conversation)
    for loop in range(len(folded_loops), loops):
        assert loop_result(loop) not in summary["summary_text"]
        assert any(loop_result(loop) in result for result in tool_results), (loop, tool_results)
    assert not any(loop_result(loop) in result for loop in folded_loops for result in tool_results)
    if surface is CHAT:
        # Each tool of a folded loop is named in the summary; the later ones only in the replay.
        for loop in range(loops):
            assert (TOOLS[loop] in summary["summary_text"]) == (loop in folded_loops), loop
        # Chat Completions replays the stored messages after the summary one for one.
        assert body["messages"][0]["content"] == summary_section_text(summary)
        assert conversation[:-1] == replayed_as_chat(replayed)
    # Every request of the chat reached the provider as a sequence it accepts, wherever the
    # summary ended at the time.
    problems = chat.invalid_requests()
    assert not problems, "\n".join(problems)


def replayed_as_chat(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored messages (as GET /chat/history/read shows them) as the Chat Completions messages
    the fake provider answered with and the client sent."""
    replay = []
    for message in messages:
        if message["role"] == "tool":
            replay.append({"role": "tool", "tool_call_id": message["tool_call_id"], "content": message["message"]})
        elif message["tool_calls"]:
            replay.append({"role": "assistant", "content": message["message"],
                           "tool_calls": json.loads(message["tool_calls"])})
        else:
            replay.append({"role": message["role"], "content": message["message"]})
    return replay


def summary_section_text(summary: dict[str, Any]) -> str:
    """How the gateway frames this summary in its system message."""
    return summary_section(ChatSummary(summary["subject_id"], summary["chat_id"], summary["summary_text"],
                                       summary["messages_summarized"], "", summary["tokens_in_source"],
                                       summary["tokens_in_summary"], summary["method"], summary["folds"],
                                       summary["created_at"], summary["updated_at"]))
