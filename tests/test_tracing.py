"""OpenTelemetry traces (tracing.enabled), through real gateways.

What an operator relies on: each proxied turn, on every surface, is one root span with a child
per stage (options, each context stage, forward, record), recall's hit count and the provider's
answer on them; the learning job that runs later on the worker is a span linked to its turn; a
stream's forward span lasts as long as the stream; a provider error, or a streamed answer that
could not be recorded, marks the spans failed; no memory, message or prompt text and no key is
in any attribute (``include_text`` adds context text for debugging, provider keys still
redacted); the spans reach a collector over OTLP/HTTP; with tracing off no tracing code is
loaded at all, and on it needs no OpenTelemetry package.

Spans are read through ``SpanCollector``, handed to ``create_app`` (its documented test hook) in
place of the OTLP exporter; the OTLP tests send to a small collector of their own and decode
what it receives with OpenTelemetry's own protobuf classes (tests/test_otlp_export.py checks
the encoding field by field).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gateway.app import create_app
from gateway.otlp_export import FinishedSpan
from gateway.server import uvicorn_config
from tests.conftest import KEY, PROVIDER_KEY, Gateway, base_config, edge_memory, wait_until
from tests.fake_upstream import FakeProvider, ServerThread

ROOT = Path(__file__).resolve().parent.parent
# Text no span may carry: a stored memory, the user's message, the system prompt.
MEMORY_TEXT = "My secret hobby is restoring violins"
USER_TEXT = "Which violins should I restore next?"
PROMPT_TEXT = "Speak like a luthier named Quillon."


class SpanCollector:
    """The test hook's span sink: keeps every finished span it is handed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[FinishedSpan] = []

    def __call__(self, spans: Sequence[FinishedSpan]) -> None:
        with self._lock:
            self._spans.extend(spans)

    def get_finished_spans(self) -> tuple[FinishedSpan, ...]:
        with self._lock:
            return tuple(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()


class TracedGateway:
    def __init__(self, gateway: Gateway, spans: SpanCollector) -> None:
        self.gateway = gateway
        self.spans = spans

    @property
    def url(self) -> str:
        return self.gateway.url

    def finished(self) -> tuple[FinishedSpan, ...]:
        return self.spans.get_finished_spans()


def _start(provider: FakeProvider, tmp_path_factory: Any, servers: list[ServerThread], exporter: Any,
           **tracing: Any) -> Gateway:
    storage = {"backend": "sqlite", "sqlite": {"path": str(tmp_path_factory.mktemp("db") / "gateway.db")}}
    config = base_config(provider.url, storage, memory=edge_memory(tmp_path_factory.mktemp("memories")),  # type: ignore[attr-defined]
                         tracing={"enabled": True, **tracing})
    server = ServerThread(config=uvicorn_config(create_app(config, span_exporter=exporter), config,
                                                log_level="warning", lifespan="on")).start()
    servers.append(server)
    return Gateway(server.url, config, provider)


@pytest.fixture(scope="module")
def traced(provider: FakeProvider, tmp_path_factory: Any) -> Iterator[TracedGateway]:
    servers: list[ServerThread] = []
    exporter = SpanCollector()
    yield TracedGateway(_start(provider, tmp_path_factory, servers, exporter), exporter)
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def _no_spans_of_earlier_tests(request: pytest.FixtureRequest) -> None:
    if "traced" in request.fixturenames:
        request.getfixturevalue("traced").spans.clear()


def chat(gateway: Any, text: str, *, subject: str, stream: bool = False, model: str = "gpt-4o-mini",
         **mnx: Any) -> httpx.Response:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}],
            "mnx": {"subject_id": subject, "chat_id": f"{subject}-chat", **mnx}}
    with httpx.Client(timeout=30) as client:
        response = client.post(gateway.url + "/v1/chat/completions", json=body,
                               headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY})
        response.read()
    return response


def turn_spans(spans: Sequence[FinishedSpan]) -> tuple[FinishedSpan, dict[str, FinishedSpan]]:
    """The one turn among ``spans`` (its root) and its children by name; asserts the tree's shape."""
    roots = [span for span in spans if span.name == "mnx.turn"]
    assert len(roots) == 1, [span.name for span in spans]
    root = roots[0]
    children = {span.name: span for span in spans if span.parent_span_id == root.span_id}
    for child in children.values():
        assert child.trace_id == root.trace_id
        assert root.start_ns <= child.start_ns <= child.end_ns <= root.end_ns, child.name
    return root, children


def all_attribute_values(spans: Sequence[FinishedSpan]) -> str:
    """Every attribute value of every span, and its status message, as one text."""
    values: list[str] = []
    for span in spans:
        values.extend(json.dumps(value) if not isinstance(value, str) else value
                      for value in span.attributes.values())
        if span.error:
            values.append(span.error)
    return "\n".join(values)


def test_a_turn_is_a_root_span_with_a_child_per_stage_and_its_learn_job_links_to_it(traced):
    subject = "violinist"
    with traced.gateway.rest() as rest:
        created = rest.post("/memories", json={"subject_id": subject, "text": MEMORY_TEXT})
        assert created.status_code in (200, 201), created.text
        memory_id = created.json()["id"]
        prompt = rest.post("/prompts", json={"name": "luthier", "prompt_text": PROMPT_TEXT, "is_default": True})
        assert prompt.status_code in (200, 201), prompt.text
    traced.spans.clear()

    answered = chat(traced, USER_TEXT, subject=subject, recall=True, learn=True, history=True)
    assert answered.status_code == 200, answered.text
    assert wait_until(lambda: any(span.name == "mnx.job" for span in traced.finished()), timeout=10)
    spans = traced.finished()
    job = next(span for span in spans if span.name == "mnx.job")
    root, children = turn_spans([span for span in spans if span is not job])

    assert root.attributes["mnx.surface"] == "chat"
    assert root.attributes["mnx.project_id"] == "project-a"
    assert root.attributes["mnx.subject_id"] == subject
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["mnx.request_id"] == answered.headers["x-request-id"]
    assert root.error is None
    assert {"mnx.options", "mnx.context.system_prompt", "mnx.context.memories", "mnx.context.history",
            "mnx.forward", "mnx.record"} <= set(children), sorted(children)

    recall = children["mnx.context.memories"].attributes
    assert recall["mnx.recall.hits"] == 1
    assert list(recall["mnx.recall.memory_ids"]) == [memory_id]  # type: ignore[arg-type]
    assert children["mnx.context.system_prompt"].attributes["mnx.prompt_ids"]
    forward = children["mnx.forward"].attributes
    assert forward["mnx.provider"] == "openai" and forward["gen_ai.request.model"] == "gpt-4o-mini"
    assert forward["mnx.streamed"] is False and forward["http.response.status_code"] == 200
    # The fake provider reports 10 prompt and 5 completion tokens.
    assert forward["gen_ai.usage.input_tokens"] == 10 and forward["gen_ai.usage.output_tokens"] == 5

    # The learn job: a trace of its own, linked to the turn's span.
    assert job.parent_span_id is None and job.trace_id != root.trace_id
    assert job.attributes["mnx.job.kind"] == "learn"
    assert list(job.links) == [(root.trace_id, root.span_id)]

    # Ids and counts only: no memory, message or prompt text, no key, anywhere.
    everything = all_attribute_values(spans)
    for secret in (MEMORY_TEXT, "restoring violins", USER_TEXT, "Which violins", PROMPT_TEXT, "Quillon",
                   PROVIDER_KEY, KEY, "echo:"):
        assert secret not in everything, secret


def test_a_streamed_turns_forward_span_lasts_until_the_stream_ends(traced):
    with httpx.Client(timeout=30) as client, client.stream(
            "POST", traced.url + "/v1/chat/completions", headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY},
            json={"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": USER_TEXT}],
                  "mnx": {"subject_id": "streamer", "chat_id": "stream-chat"}}) as response:
        assert response.status_code == 200
        chunks = list(response.iter_bytes())
    assert b"[DONE]" in b"".join(chunks)
    assert wait_until(lambda: any(span.name == "mnx.turn" for span in traced.finished()))
    root, children = turn_spans(traced.finished())
    forward, record = children["mnx.forward"], children["mnx.record"]
    assert forward.attributes["mnx.streamed"] is True
    assert forward.error is None and root.error is None
    # The turn is recorded from inside the stream, before its last frame: a forward span that
    # ended when the stream opened would end before the record began.
    assert forward.start_ns < record.start_ns
    assert forward.end_ns >= record.end_ns
    assert USER_TEXT not in all_attribute_values(traced.finished())


def test_a_streamed_turn_that_cannot_be_recorded_fails_its_spans(traced):
    # Another process holds the database's write lock: the answer streams, but its history
    # cannot be written, and the client gets the in-band turn_not_recorded error.
    blocker = sqlite3.connect(traced.gateway.config.storage.sqlite.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with httpx.Client(timeout=30) as client, client.stream(
                "POST", traced.url + "/v1/chat/completions",
                headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY},
                json={"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": USER_TEXT}],
                      "mnx": {"subject_id": "unrecorded", "chat_id": "unrecorded-chat"}}) as response:
            body = b"".join(response.iter_bytes())
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert b"turn_not_recorded" in body
    assert wait_until(lambda: any(span.name == "mnx.turn" for span in traced.finished()))
    root, children = turn_spans(traced.finished())
    assert "mnx.record" in children
    assert children["mnx.forward"].error is not None
    assert root.error is not None


def test_an_upstream_error_fails_the_forward_and_turn_spans(traced):
    failed = chat(traced, USER_TEXT, subject="unlucky", model="fail-500")
    assert failed.status_code >= 500
    assert wait_until(lambda: any(span.name == "mnx.turn" for span in traced.finished()))
    root, children = turn_spans(traced.finished())
    forward = children["mnx.forward"]
    assert forward.error is not None
    assert root.error is not None
    assert root.attributes["http.response.status_code"] == failed.status_code
    assert "mnx.record" not in children  # nothing recorded for a failed turn
    # The provider's error message is not copied into the span (only the gateway's error code).
    assert "provider failed" not in all_attribute_values(traced.finished())


def test_every_surface_makes_one_turn_span(traced):
    keys = {"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY, "x-api-key": "anthropic-caller-key-1234",
            "x-goog-api-key": "google-caller-key-1234"}
    mnx = {"subject_id": "surfer", "chat_id": "surf"}
    with httpx.Client(timeout=30) as client:
        sent = [
            client.post(traced.url + "/v1/responses", headers=keys,
                        json={"model": "gpt-4o-mini", "input": "via responses", "mnx": mnx}),
            client.post(traced.url + "/v1/messages", headers=keys, json={
                "model": "claude-gateway-test", "max_tokens": 64, "messages": [{"role": "user", "content": "via x"}],
                "mnx": mnx}),
            client.post(traced.url + "/v1beta/models/gemini-2.0-flash:generateContent",
                        headers={**keys, "x-mnx-subject-id": "surfer", "x-mnx-chat-id": "surf"},
                        json={"contents": [{"role": "user", "parts": [{"text": "via gemini"}]}]}),
            client.post(traced.url + "/v1/chat/completions", headers=keys, json={
                "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "via chat"}], "mnx": mnx}),
        ]
    assert [response.status_code for response in sent] == [200] * 4, [response.text for response in sent]
    assert wait_until(lambda: len([s for s in traced.finished() if s.name == "mnx.turn"]) == 4)
    spans = traced.finished()
    roots = [span for span in spans if span.name == "mnx.turn"]
    assert sorted(span.attributes["mnx.surface"] for span in roots) == [
        "chat", "gemini", "messages", "responses"]
    forwards = {span.parent_span_id: span for span in spans if span.name == "mnx.forward"}
    providers = {root.attributes["mnx.surface"]: forwards[root.span_id].attributes["mnx.provider"]
                 for root in roots}
    assert providers == {"chat": "openai", "responses": "openai", "messages": "anthropic", "gemini": "gemini"}
    everything = all_attribute_values(spans)
    for secret in ("anthropic-caller-key-1234", "google-caller-key-1234", PROVIDER_KEY, "via gemini", "via chat"):
        assert secret not in everything


def test_a_callers_traceparent_makes_the_turn_part_of_its_trace(traced):
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with httpx.Client(timeout=30) as client:
        response = client.post(traced.url + "/v1/chat/completions", json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}],
            "mnx": {"subject_id": "child", "chat_id": "child-chat"}},
            headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY,
                     "traceparent": f"00-{trace_id}-{span_id}-01"})
    assert response.status_code == 200
    assert wait_until(lambda: any(span.name == "mnx.turn" for span in traced.finished()))
    root, _ = turn_spans(traced.finished())
    assert root.parent_span_id is not None
    assert format(root.trace_id, "032x") == trace_id and format(root.parent_span_id, "016x") == span_id


def test_include_text_puts_context_text_in_but_never_a_provider_key(provider, tmp_path_factory):
    servers: list[ServerThread] = []
    exporter = SpanCollector()
    try:
        gateway = _start(provider, tmp_path_factory, servers, exporter, include_text=True)
        memory = f"My backup key is {PROVIDER_KEY} and I collect violins"
        with gateway.rest() as rest:
            assert rest.post("/memories", json={"subject_id": "debugged", "text": memory}).status_code in (200, 201)
        exporter.clear()
        assert chat(gateway, "Which violins do I collect?", subject="debugged", recall=True).status_code == 200
        assert wait_until(lambda: any(span.name == "mnx.turn" for span in exporter.get_finished_spans()))
        _, children = turn_spans(exporter.get_finished_spans())
        text = children["mnx.context.memories"].attributes["mnx.stage.text"]
        assert "I collect violins" in str(text)
        assert PROVIDER_KEY not in all_attribute_values(exporter.get_finished_spans())
    finally:
        for server in servers:
            server.stop()


def test_sample_ratio_zero_traces_no_turn_and_no_job(provider, tmp_path_factory):
    servers: list[ServerThread] = []
    exporter = SpanCollector()
    try:
        gateway = _start(provider, tmp_path_factory, servers, exporter, sample_ratio=0.0)
        assert chat(gateway, "I love green tea.", subject="unsampled", learn=True).status_code == 200
        with gateway.rest() as rest:  # the learn job ran (and learned), untraced
            assert wait_until(lambda: rest.get("/memories", params={"subject_id": "unsampled"}).json()["data"])
        assert exporter.get_finished_spans() == ()
    finally:
        for server in servers:
            server.stop()


class _Collector:
    """An OTLP/HTTP endpoint that keeps each POST /v1/traces it receives."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        self.received = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
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
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        self.posts.append((scope["path"], headers, body))
        self.received.set()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/x-protobuf")]})
        await send({"type": "http.response.body", "body": b""})


def test_spans_reach_a_collector_over_otlp_http(provider, tmp_path_factory, monkeypatch):
    # A vendor's key for the collector, the OpenTelemetry way (values URL-encoded).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-vendor-key=vendor%20secret,x-team=gw")
    collector = _Collector()
    collector_server = ServerThread(collector).start()
    servers: list[ServerThread] = []
    try:
        gateway = _start(provider, tmp_path_factory, servers, None, otlp_endpoint=collector_server.url + "/v1/traces",
                         service_name="gateway-under-test")
        assert chat(gateway, USER_TEXT, subject="exported", recall=True).status_code == 200
        for server in servers:  # stopping exports what the batch still holds
            server.stop()
        servers.clear()
        assert collector.received.wait(10)
    finally:
        for server in servers:
            server.stop()
        collector_server.stop()
    spans = []
    services: set[str] = set()
    for path, headers, body in collector.posts:
        assert path == "/v1/traces"
        assert headers["content-type"] == "application/x-protobuf"
        assert headers["x-vendor-key"] == "vendor secret" and headers["x-team"] == "gw"
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            services.update(a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name")
            spans.extend(span for scope in resource_spans.scope_spans for span in scope.spans)
        assert USER_TEXT.encode() not in body and PROVIDER_KEY.encode() not in body
    assert services == {"gateway-under-test"}
    (turn,) = [span for span in spans if span.name == "mnx.turn"]
    children = {span.name: span for span in spans if span.parent_span_id == turn.span_id}
    assert {"mnx.options", "mnx.context.memories", "mnx.forward", "mnx.record"} <= set(children)
    assert all(span.trace_id == turn.trace_id and len(span.span_id) == 8 for span in children.values())
    assert turn.start_time_unix_nano <= children["mnx.forward"].start_time_unix_nano <= turn.end_time_unix_nano


# A gateway run in a process of its own, a turn through it, then what it loaded. ``blocked``: as if
# OpenTelemetry were not installed at all.
_PROBE = textwrap.dedent("""
    import json, sys
    if {blocked}:
        sys.modules["opentelemetry"] = None  # every import of it now fails, as when it is not installed
    import httpx
    from gateway.app import create_app
    from gateway.errors import ConfigError
    from gateway.server import uvicorn_config
    from tests.conftest import KEY, PROVIDER_KEY, base_config
    from tests.fake_upstream import FakeProvider, ServerThread

    provider = FakeProvider()
    upstream = ServerThread(provider).start()
    storage = {{"backend": "sqlite", "sqlite": {{"path": sys.argv[1] + "/gateway.db"}}}}
    memory = {{"vectors": {{"backend": "edge", "edge": {{"path": sys.argv[1] + "/memories"}}}}}}
    config = base_config(upstream.url, storage, memory=memory, tracing={{"enabled": {enabled}}})
    try:
        app = create_app(config)
    except ConfigError as error:
        print(json.dumps({{"refused": str(error)}}))
        sys.exit(0)
    gateway = ServerThread(config=uvicorn_config(app, config, log_level="warning", lifespan="on")).start()
    answered = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                          headers={{"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY}},
                          json={{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "hi"}}],
                                "mnx": {{"subject_id": "probe", "recall": True}}}})
    gateway.stop()
    upstream.stop()
    print(json.dumps({{"status": answered.status_code,
                      "loaded": sorted(name for name in sys.modules if name.startswith(("opentelemetry.sdk.trace",
                                       "opentelemetry.exporter", "gateway.trace_spans", "gateway.otlp_export")))}}))
""")


def _probe(tmp_path: Path, *, blocked: bool, enabled: bool) -> dict[str, Any]:
    script = _PROBE.format(blocked=blocked, enabled=enabled)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_tracing_off_loads_no_tracing_code(tmp_path):
    # (redis-py imports OpenTelemetry's metrics SDK by itself when it is installed: not the gateway's doing,
    # and not the tracing SDK or an exporter.)
    assert _probe(tmp_path, blocked=False, enabled=False) == {"status": 200, "loaded": []}


def test_tracing_needs_no_opentelemetry_package(tmp_path):
    assert _probe(tmp_path, blocked=True, enabled=True) == {
        "status": 200, "loaded": ["gateway.otlp_export", "gateway.trace_spans"]}
