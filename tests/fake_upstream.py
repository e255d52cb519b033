"""A fake LLM provider: OpenAI Chat Completions and Responses, Anthropic Messages and
Gemini generateContent, streamed or not.

The one thing the test suite fakes is the provider. This server answers like one,
records every request it receives (path, headers, JSON body) so tests can assert
what the gateway forwarded, and misbehaves on demand through the model name:

    fail-<status>   answer with that HTTP status and a provider error body
    slow-stream     stream one chunk every 50 ms for 10 s (client-disconnect tests)
    cut-stream      stream a first piece, then drop the connection without finishing
    tool-call       answer with an assistant tool call instead of text (any model ending so,
                    on Anthropic)
    sleep-<secs>    wait that long before answering (timeout tests)

Anywhere in a model name, on every surface (so "claude-hang" and "gemini-x-set-cookie" route
to the provider their name picks and misbehave there too):

    echo-key-<status>   answer that status with an error that quotes the key the request
                        carried (a provider that echoes credentials, as some 401s do)
    ratelimit-<status>  answer that status with retry-after, x-ratelimit-* and
                        anthropic-ratelimit-* headers (and a set-cookie that must not pass)
    ratelimit-ok        answer normally, with x-ratelimit-* headers
    set-cookie          answer normally, with a Set-Cookie header
    hang                never answer; record when the gateway gives up on the request
                        (``provider.abandoned``)

``canned`` answers a non-streamed chat completion with the next of ``provider.chat_answers``
(raw bodies, so tests can answer off-spec), else as any other model.

Models starting with ``extractor`` answer like a memory extractor: the next of
``provider.extraction_answers`` (raw text, so tests can send broken JSON) if any,
else one memory per user message of the turn; ``extractor-sleep-<secs>`` waits first.

Embeddings (``/embeddings``) are bags of words hashed into 32 dimensions, where a
few food words share one dimension: enough "meaning" for a dense model to find
what shares no word with the query.

Any other model answers "echo: <text of the last user message>". It is a bare
ASGI app (no framework) so that, as the benchmark's upstream, it costs little CPU.
Run standalone: ``python -m tests.fake_upstream --port 9100``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import socket
import threading
import time
import zlib
from typing import Any

import uvicorn

from gateway.server import GatewayServer

_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


EMBEDDING_DIMENSIONS = 32
_FOOD = {"food", "foods", "cuisine", "vegetarian", "meal", "meals", "eat", "eats", "pizza", "pasta", "dinner"}


def fake_embedding(text: str) -> list[float]:
    vector = [0.0] * EMBEDDING_DIMENSIONS
    for word in text.lower().replace(".", " ").replace(",", " ").split():
        bucket = 0 if word in _FOOD else 1 + zlib.crc32(word.encode()) % (EMBEDDING_DIMENSIONS - 1)
        vector[bucket] += 1.0
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [v / norm for v in vector]


class FakeProvider:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        # Set when a streamed answer stopped because the gateway closed the connection.
        self.stream_cancelled = threading.Event()
        self.record = True
        # Scripted answers for extractor models, used in order.
        self.extraction_answers: list[str] = []
        # Raw bodies for the next non-streamed chat completions of model "canned", in order.
        self.chat_answers: list[dict[str, Any]] = []
        # Models of "hang" requests whose connection the gateway closed, with when it did.
        self.abandoned: list[tuple[str, float]] = []

    # -- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        payload = json.loads(body) if body else {}
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode()
        if self.record:
            self.requests.append({"path": path, "query": query, "headers": headers, "body": payload})
        model = str(payload.get("model") or path.rsplit("/", 1)[-1].partition(":")[0])
        if await self._scenario(model, path, headers, query, receive, send):
            return
        send = _adding_headers(send, _scenario_headers(model))
        if path.endswith("/chat/completions"):
            await self._openai(payload, receive, send)
        elif path.endswith("/embeddings"):
            await self._embeddings(payload, send)
        elif path.endswith("/messages"):
            await self._anthropic(payload, send)
        elif path.endswith("/responses"):
            await self._responses(payload, send)
        elif ":generateContent" in path or ":streamGenerateContent" in path:
            model, _, action = path.rsplit("/", 1)[1].partition(":")
            await self._gemini(model, action == "streamGenerateContent", payload, send)
        else:
            await self._respond(send, 404, {"error": {"message": f"no route {path}", "type": "not_found"}})

    async def _respond(self, send: Any, status: int, payload: dict[str, Any],
                       headers: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
        await send({"type": "http.response.start", "status": status, "headers": _JSON_HEADERS + list(headers)})
        await send({"type": "http.response.body", "body": json.dumps(payload).encode()})

    async def _scenario(self, model: str, path: str, headers: dict[str, str], query: str, receive: Any,
                        send: Any) -> bool:
        """The misbehaviours any surface's model name can ask for (see the module docstring)."""
        def error(status: int, message: str) -> dict[str, Any]:
            if path.endswith("/messages"):
                return {"type": "error", "error": {"type": "authentication_error", "message": message}}
            if "generateContent" in path:
                return {"error": {"code": status, "message": message, "status": "UNAUTHENTICATED"}}
            return {"error": {"message": message, "type": "invalid_request_error", "code": f"fake_{status}"}}

        echo = re.search(r"echo-key-(\d{3})", model)
        if echo:
            key = (headers.get("authorization") or headers.get("x-api-key") or headers.get("x-goog-api-key")
                   or query)
            await self._respond(send, int(echo.group(1)),
                                error(int(echo.group(1)), f"Incorrect API key provided: {key}"))
            return True
        limited = re.search(r"ratelimit-(\d{3})", model)
        if limited:
            status = int(limited.group(1))
            await self._respond(send, status, error(status, f"rate limited ({status})"), headers=[
                (b"retry-after", b"7"), (b"retry-after-ms", b"7000"), (b"x-ratelimit-remaining-requests", b"0"),
                (b"x-ratelimit-reset-requests", b"7s"), (b"anthropic-ratelimit-requests-remaining", b"0"),
                (b"set-cookie", b"limited=1; Path=/"), (b"x-internal-trace", b"not-for-clients")])
            return True
        if "hang" in model:
            await self._until_disconnect(receive)
            self.abandoned.append((model, time.time()))
            return True
        return False

    async def _misbehave(self, model: str, send: Any, anthropic: bool) -> bool:
        if model.startswith("fail-"):
            status = int(model.split("-", 1)[1])
            if anthropic:
                error = {"type": "error", "error": {"type": "api_error", "message": f"provider failed with {status}"}}
            else:
                error = {"error": {"message": f"provider failed with {status}", "type": "server_error",
                                   "code": f"fake_{status}"}}
            await self._respond(send, status, error)
            return True
        if model.startswith("sleep-"):
            await asyncio.sleep(float(model.split("-", 1)[1]))
        return False

    def _extraction(self, payload: dict[str, Any]) -> str:
        if self.extraction_answers:
            return self.extraction_answers.pop(0)
        turn = json.loads(_last_user_text(payload["messages"]))
        memories = [{"text": f"User said: {said}", "kind": "fact", "importance": 60, "confidence": 0.9, "tags": [],
                     "visibility": "private", "is_temporal": False, "claims": []} for said in turn["user"]]
        return json.dumps({"memories": memories})

    # -- OpenAI Embeddings ------------------------------------------------------------------

    async def _embeddings(self, payload: dict[str, Any], send: Any) -> None:
        if await self._misbehave(payload.get("model", ""), send, anthropic=False):
            return
        texts = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
        data = [{"object": "embedding", "index": i, "embedding": fake_embedding(t)} for i, t in enumerate(texts)]
        await self._respond(send, 200, {"object": "list", "data": data, "model": payload.get("model"),
                                        "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    # -- OpenAI Chat Completions ----------------------------------------------------------

    async def _openai(self, payload: dict[str, Any], receive: Any, send: Any) -> None:
        model = payload.get("model", "")
        if await self._misbehave(model, send, anthropic=False):
            return
        if model == "canned" and self.chat_answers:
            await self._respond(send, 200, self.chat_answers.pop(0))
            return
        text = "echo: " + _last_user_text(payload.get("messages", []))
        if model.startswith("extractor"):
            if model.startswith("extractor-sleep-"):
                await asyncio.sleep(float(model.rsplit("-", 1)[1]))
            text = self._extraction(payload)
        tool_calls = None
        if model == "tool-call":
            tool_calls = [{"id": "call_1", "type": "function",
                           "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]
        if payload.get("stream"):
            await self._openai_stream(payload, model, text, tool_calls, receive, send)
            return
        message: dict[str, Any] = {"role": "assistant", "content": None if tool_calls else text}
        if tool_calls:
            message["tool_calls"] = tool_calls
        await self._respond(send, 200, {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if tool_calls else "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        })

    async def _openai_stream(self, payload: dict[str, Any], model: str, text: str,
                             tool_calls: list[dict[str, Any]] | None, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        async def emit(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        await emit(chunk({"role": "assistant", "content": ""}))
        if model == "slow-stream":
            disconnected = asyncio.ensure_future(self._until_disconnect(receive))
            for i in range(200):
                if disconnected.done():
                    self.stream_cancelled.set()
                    return
                await emit(chunk({"content": f"tick{i} "}))
                await asyncio.sleep(0.05)
            disconnected.cancel()
        elif model == "cut-stream":
            await emit(chunk({"content": "partial "}))
            raise ConnectionAbortedError("fake provider drops the stream")
        elif tool_calls:
            call = tool_calls[0]
            await emit(chunk({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                              "function": {"name": call["function"]["name"], "arguments": ""}}]}))
            await emit(chunk({"tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"]}}]}))
        else:
            words = text.split(" ")
            for i, word in enumerate(words):
                await emit(chunk({"content": word if i == 0 else " " + word}))
        await emit(chunk({}, "tool_calls" if tool_calls else "stop"))
        if (payload.get("stream_options") or {}).get("include_usage"):
            usage = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": model, "choices": [],
                     "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
            await emit(b"data: " + json.dumps(usage).encode() + b"\n\n")
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    @staticmethod
    async def _until_disconnect(receive: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    # -- Gemini generateContent -----------------------------------------------------------

    async def _gemini(self, model: str, stream: bool, payload: dict[str, Any], send: Any) -> None:
        if model.startswith("fail-"):
            status = int(model.split("-", 1)[1])
            await self._respond(send, status, {"error": {"code": status, "message": f"provider failed with {status}",
                                                         "status": "RESOURCE_EXHAUSTED"}})
            return
        text = ""
        for content in reversed(payload.get("contents", [])):
            if content.get("role", "user") == "user":
                text = "".join(p.get("text", "") for p in content.get("parts", []))
                break
        text = "echo: " + text
        usage = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}

        def response(parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
            if finish:
                candidate["finishReason"] = finish
            return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model}

        call = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
        if not stream:
            await self._respond(send, 200, response([call] if model.endswith("tool-call") else [{"text": text}],
                                                    "STOP"))
            return
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        if model.endswith("cut-stream"):
            partial = response([{"text": "partial"}], None)
            await send({"type": "http.response.body", "body": b"data: " + json.dumps(partial).encode() + b"\r\n\r\n",
                        "more_body": True})
            raise ConnectionAbortedError("fake provider drops the stream")
        words = text.split(" ")
        chunks = [response([call], "STOP")] if model.endswith("tool-call") else [
            response([{"text": w if i == 0 else " " + w}], "STOP" if i == len(words) - 1 else None)
            for i, w in enumerate(words)]
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n",
                        "more_body": i < len(chunks) - 1})

    # -- OpenAI Responses -----------------------------------------------------------------

    async def _responses(self, payload: dict[str, Any], send: Any) -> None:
        model = payload.get("model", "")
        if await self._misbehave(model, send, anthropic=False):
            return
        value = payload.get("input")
        text = value if isinstance(value, str) else ""
        if isinstance(value, list):
            for item in reversed(value):
                if item.get("role") == "user":
                    content = item.get("content")
                    text = content if isinstance(content, str) else " ".join(
                        p.get("text", "") for p in content if p.get("type") == "input_text")
                    break
        text = "echo: " + text
        if model == "tool-call":
            item = {"type": "function_call", "id": "fc_1", "call_id": "call_r1", "name": "get_weather",
                    "arguments": "{\"city\": \"Paris\"}", "status": "completed"}
        else:
            item = {"type": "message", "id": "msg_r1", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}
        response = {"id": "resp_fake", "object": "response", "created_at": int(time.time()), "model": model,
                    "status": "completed", "output": [item], "parallel_tool_calls": True, "tool_choice": "auto",
                    "tools": [], "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}}
        if not payload.get("stream"):
            await self._respond(send, 200, response)
            return
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        sequence = 0

        async def event(data: dict[str, Any], more: bool = True) -> None:
            nonlocal sequence
            data = {**data, "sequence_number": sequence}
            sequence += 1
            frame = f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()
            await send({"type": "http.response.body", "body": frame, "more_body": more})

        await event({"type": "response.created", "response": {**response, "status": "in_progress", "output": []}})
        await event({"type": "response.output_item.added", "output_index": 0, "item": item})
        if model == "cut-stream":
            await event({"type": "response.output_text.delta", "item_id": "msg_r1", "output_index": 0,
                         "content_index": 0, "delta": "partial"})
            raise ConnectionAbortedError("fake provider drops the stream")
        if item["type"] == "message":
            for i, word in enumerate(text.split(" ")):
                await event({"type": "response.output_text.delta", "item_id": "msg_r1", "output_index": 0,
                             "content_index": 0, "delta": word if i == 0 else " " + word})
            await event({"type": "response.output_text.done", "item_id": "msg_r1", "output_index": 0,
                         "content_index": 0, "text": text})
        await event({"type": "response.output_item.done", "output_index": 0, "item": item})
        await event({"type": "response.completed", "response": response}, more=False)

    # -- Anthropic Messages ---------------------------------------------------------------

    async def _anthropic(self, payload: dict[str, Any], send: Any) -> None:
        model = payload.get("model", "")
        if await self._misbehave(model, send, anthropic=True):
            return
        messages = payload.get("messages", [])
        text = ""
        for message in reversed(messages):
            if message.get("role") == "user":
                content = message.get("content")
                text = content if isinstance(content, str) else " ".join(
                    b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
                break
        text = "echo: " + text
        tool_use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
        wants_tool = model.endswith("tool-call")
        if not payload.get("stream"):
            await self._respond(send, 200, {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                "content": [tool_use] if wants_tool else [{"type": "text", "text": text}],
                "stop_reason": "tool_use" if wants_tool else "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": 10, "output_tokens": 5},
            })
            return
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})

        async def event(name: str, data: dict[str, Any], more: bool = True) -> None:
            frame = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            await send({"type": "http.response.body", "body": frame, "more_body": more})

        await event("message_start", {"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 0}}})
        if model == "cut-stream":
            await event("content_block_start", {"type": "content_block_start", "index": 0,
                                                "content_block": {"type": "text", "text": ""}})
            await event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                "delta": {"type": "text_delta", "text": "partial"}})
            raise ConnectionAbortedError("fake provider drops the stream")
        if wants_tool:
            await event("content_block_start", {"type": "content_block_start", "index": 0,
                                                "content_block": {**tool_use, "input": {}}})
            for piece in ('{"city": ', '"Paris"}'):
                await event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                    "delta": {"type": "input_json_delta", "partial_json": piece}})
        else:
            await event("content_block_start", {"type": "content_block_start", "index": 0,
                                                "content_block": {"type": "text", "text": ""}})
            for i, word in enumerate(text.split(" ")):
                delta = {"type": "text_delta", "text": word if i == 0 else " " + word}
                await event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        await event("content_block_stop", {"type": "content_block_stop", "index": 0})
        await event("message_delta", {"type": "message_delta", "delta": {
            "stop_reason": "tool_use" if wants_tool else "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 5}})
        await event("message_stop", {"type": "message_stop"}, more=False)


def _scenario_headers(model: str) -> list[tuple[bytes, bytes]]:
    """Headers a normal answer carries for the model's scenario (set-cookie, ratelimit-ok)."""
    extra = []
    if "set-cookie" in model:
        extra.append((b"set-cookie", b"tenant=first-caller; Path=/"))
    if "ratelimit-ok" in model:
        extra += [(b"x-ratelimit-remaining-requests", b"99"), (b"anthropic-ratelimit-requests-remaining", b"99")]
    return extra


def _adding_headers(send: Any, extra: list[tuple[bytes, bytes]]) -> Any:
    if not extra:
        return send

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": list(message.get("headers", [])) + extra}
        await send(message)
    return sending


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class _PromptServer(GatewayServer):
    """The gateway's server (uvicorn's, telling the app when it begins to stop), except that it
    notices ``stop`` at once. uvicorn's own main loop looks at ``should_exit`` every 0.1 s, so
    stopping one waited 0.05 s on average, and the suite stops a gateway per test. Ticks still
    come every 0.1 s, so the Date header and the other per-tick work are unchanged."""

    _loop: asyncio.AbstractEventLoop | None = None
    _exit: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._exit = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._exit.wait(), timeout=0.1)

    def request_exit(self) -> None:
        """Ask the server to shut down (from any thread)."""
        self.should_exit = True
        loop, event = self._loop, self._exit
        if loop is not None and event is not None:
            # Before main_loop has started the flag alone is enough: it is read on the first tick.
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(event.set)


class ServerThread:
    """Runs an ASGI app under uvicorn in a background thread on a free loopback port."""

    def __init__(self, app: Any = None, *, config: uvicorn.Config | None = None, **uvicorn_options: Any) -> None:
        """Serve ``app`` with quiet test defaults, or serve a ready-made ``config`` (the gateway's
        production one, from gateway.server.uvicorn_config); its host and port are ignored."""
        self._sock = free_socket()
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        if config is None:
            config = uvicorn.Config(app, log_level="warning", lifespan="on", **uvicorn_options)
        self._server = _PromptServer(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.time() + 30
        while not self._server.started:
            if time.time() > deadline or not self._thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.request_stop()
        self.wait_stopped()

    def request_stop(self) -> None:
        """Start shutting down without waiting (``wait_stopped`` waits), so that several
        servers shut down side by side."""
        self._server.request_exit()

    def wait_stopped(self) -> None:
        self._thread.join(timeout=10)
        self._sock.close()


def stop_all(servers: list[ServerThread]) -> None:
    """Stop every server, side by side: each shutdown mostly waits (uvicorn's grace sleep)."""
    for server in servers:
        server.request_stop()
    for server in servers:
        server.wait_stopped()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--show-requests", action="store_true",
                        help="print the messages of every request received: what the gateway sent the model "
                             "(the README's offline example uses it to show recalled memories arriving)")
    args = parser.parse_args()
    provider = FakeProvider()
    provider.record = args.show_requests  # a long benchmark run must not grow memory

    async def showing_requests(scope: dict, receive: Any, send: Any) -> None:
        await provider(scope, receive, send)
        if scope["type"] == "http" and provider.requests:
            request = provider.requests.pop()  # printed, then forgotten: memory stays flat
            print(f"--> {request['path']}", flush=True)
            for message in request["body"].get("messages") or []:
                print(f"    {message.get('role')}: {message.get('content')}", flush=True)

    app = showing_requests if args.show_requests else provider
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
