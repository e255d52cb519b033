"""The OpenTelemetry side of gateway/tracing.py: the only module that imports the SDK.

Imported only when ``tracing.enabled`` is true (it needs the ``tracing`` extra). Each gateway
has a TracerProvider of its own, not the process-global one, so several gateways in a process
(the test suite, ``mnx-gateway explain``) keep their spans apart, and the gateway leaves the
global provider to an application that embeds it.

Spans go out over OTLP/HTTP (protobuf) in batches, from the SDK's exporter thread, never on the
request path. Error statuses carry the gateway's error code or the exception's type, never its
message (a provider's error text may quote the request).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace as trace_api
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.errors import GatewayError
from gateway.metrics import usage_counts
from gateway.redaction import redact
from gateway.tracing import MAX_TEXT_CHARS, Attributes, stage_attributes

if TYPE_CHECKING:
    from gateway.config import TracingConfig
    from gateway.jobs.queue import Job
    from gateway.pipeline.context import ContextLayer

_PROPAGATOR = TraceContextTextMapPropagator()
INSTRUMENTATION = "mnx_gateway"


def _fail(span: trace_api.Span, error: BaseException) -> None:
    """Mark ``span`` failed by ``error``'s code or type: never its message."""
    code = error.code if isinstance(error, GatewayError) else type(error).__name__
    span.set_attribute("error.type", code)
    span.set_status(Status(StatusCode.ERROR, code))


class OtelTurn:
    """The spans of one proxied turn (gateway.tracing.TurnTrace)."""

    def __init__(self, tracer: trace_api.Tracer, root: trace_api.Span, include_text: bool,
                 secrets: Sequence[str | None]) -> None:
        self._tracer = tracer
        self._root = root
        self._parent = trace_api.set_span_in_context(root)
        # Where perf_counter readings are placed on the wall clock (span times are epoch ns).
        self._wall_ns = time.time_ns()
        self._perf = time.perf_counter()
        self._include_text = include_text
        self._secrets = secrets
        self._forward: trace_api.Span | None = None
        self._ended = False

    def _ns(self, perf: float) -> int:
        return self._wall_ns + int((perf - self._perf) * 1e9)

    def annotate(self, attributes: Attributes) -> None:
        self._root.set_attributes(attributes)

    def stage(self, name: str, started: float, ended: float, attributes: Attributes | None = None) -> None:
        span = self._tracer.start_span(f"mnx.{name}", context=self._parent, attributes=attributes,
                                       start_time=self._ns(started))
        span.end(end_time=self._ns(ended))

    def context_stage(self, name: str, started: float, ended: float, layer: ContextLayer | None) -> None:
        attributes: dict[str, Any] = stage_attributes(name, layer)
        if self._include_text and layer is not None and layer.system_text:
            attributes["mnx.stage.text"] = redact(layer.system_text, self._secrets)[:MAX_TEXT_CHARS]
        self.stage(f"context.{name}", started, ended, attributes)

    def forward(self, provider: str, model: str, streamed: bool) -> None:
        self._forward = self._tracer.start_span("mnx.forward", context=self._parent, kind=SpanKind.CLIENT,
                                                attributes={"mnx.provider": provider, "gen_ai.request.model": model,
                                                            "mnx.streamed": streamed})

    def forwarded(self, *, status: int | None = None, error: BaseException | None = None,
                  answer: Mapping[str, Any] | None = None) -> None:
        span, self._forward = self._forward, None
        if span is None:
            return
        if error is not None:
            _fail(span, error)
            status = error.status if isinstance(error, GatewayError) else status
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        counts = usage_counts(answer) if answer is not None else None
        if counts is not None:
            tokens_in, tokens_out = counts
            if tokens_in is not None:
                span.set_attribute("gen_ai.usage.input_tokens", tokens_in)
            if tokens_out is not None:
                span.set_attribute("gen_ai.usage.output_tokens", tokens_out)
        span.end()

    def traceparent(self) -> str | None:
        if not self._root.get_span_context().trace_flags.sampled:
            return None
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, self._parent)
        return carrier.get("traceparent")

    def end(self, status: int, error: BaseException | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        if self._forward is not None:
            self.forwarded(error=error)
        if isinstance(error, GatewayError):
            status = error.status
        self._root.set_attribute("http.response.status_code", status)
        # A server span fails on a 5xx or an exception, not on the caller's own 4xx (semantic conventions).
        if error is not None and (status >= 500 or not isinstance(error, GatewayError)):
            _fail(self._root, error)
        elif status >= 500:
            self._root.set_status(Status(StatusCode.ERROR, str(status)))
        self._root.end()


class OtelJob:
    def __init__(self, span: trace_api.Span) -> None:
        self._span = span

    def end(self, error: BaseException | None = None) -> None:
        if error is not None:
            _fail(self._span, error)
        self._span.end()


class OtelTracer:
    """A gateway's TracerProvider, sampler and exporter (gateway.tracing.GatewayTracer)."""

    def __init__(self, config: TracingConfig, span_exporter: SpanExporter | None = None) -> None:
        self._include_text = config.include_text
        self._provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
                                        resource=Resource.create({"service.name": config.service_name}),
                                        shutdown_on_exit=False)
        if span_exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.otlp_endpoint)))
        else:
            self._provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        self._tracer = self._provider.get_tracer(INSTRUMENTATION)

    def begin_turn(self, surface: str, headers: Mapping[str, str],
                   secrets: Sequence[str | None]) -> OtelTurn | None:
        parent = _PROPAGATOR.extract(headers) if "traceparent" in headers else None
        root = self._tracer.start_span("mnx.turn", context=parent, kind=SpanKind.SERVER,
                                       attributes={"mnx.surface": surface})
        if not root.is_recording():
            return None  # not sampled: no child spans made, and nothing to end
        return OtelTurn(self._tracer, root, self._include_text, secrets)

    def begin_job(self, job: Job) -> OtelJob:
        links: list[Link] = []
        traceparent = job.payload.get("traceparent")
        if isinstance(traceparent, str):
            turn = trace_api.get_current_span(_PROPAGATOR.extract({"traceparent": traceparent})).get_span_context()
            if turn.is_valid:
                links.append(Link(turn))
        # A trace of its own (context: an empty one, whatever the worker task's is).
        span = self._tracer.start_span("mnx.job", context=trace_api.set_span_in_context(trace_api.INVALID_SPAN),
                                       links=links, attributes={
                                           "mnx.job.kind": job.kind, "mnx.job.id": job.id,
                                           "mnx.job.attempt": job.attempts, "mnx.project_id": job.project_id})
        return OtelJob(span)

    def shutdown(self) -> None:
        self._provider.shutdown()
