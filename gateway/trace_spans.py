"""The spans of turns and jobs, recorded as plain objects (gateway/tracing.py's TurnTrace, JobTrace
and GatewayTracer), and handed to the OTLP exporter (gateway/otlp_export.py) when they end.

Cheap on purpose: a span is one ``FinishedSpan`` appended to its turn's list, with a random
64-bit id; nothing is encoded, locked or sent until the turn ends, and then only a list is
handed over. Ids, sampling and propagation follow W3C Trace Context and OpenTelemetry's
defaults: a 128-bit trace id and 64-bit span ids from ``random.getrandbits`` (not secrets: an
id only has to be unique), ``traceparent`` headers in and out, and the ParentBased(TraceIdRatio)
sampler: a caller's traceparent decides for its trace (sampled flag), and a new trace is
sampled when the low 64 bits of its id fall under ``sample_ratio`` of their range, so that every
service sampling the same trace by ratio agrees.

Error statuses carry the gateway's error code or the exception's type, never its message (a
provider's error text may quote the request).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gateway.errors import GatewayError
from gateway.metrics import usage_counts
from gateway.otlp_export import KIND_CLIENT, KIND_INTERNAL, KIND_SERVER, FinishedSpan, OtlpExporter
from gateway.redaction import redact
from gateway.tracing import MAX_TEXT_CHARS, Attributes, AttributeValue, stage_attributes

if TYPE_CHECKING:
    from gateway.config import TracingConfig
    from gateway.jobs.queue import Job
    from gateway.pipeline.context import ContextLayer

# Where spans go when a turn or job ends: the exporter's ``export``, or a test's collector.
SpanSink = Callable[[Sequence[FinishedSpan]], None]

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$")
_LOW_64_BITS = (1 << 64) - 1


def parse_traceparent(header: str) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) of a W3C ``traceparent``, None when it is not one."""
    match = _TRACEPARENT.match(header.strip().lower())
    if match is None or match[1] == "ff":
        return None
    trace_id, span_id = int(match[2], 16), int(match[3], 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(int(match[4], 16) & 1)


def format_traceparent(trace_id: int, span_id: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-01"


def _new_span_id() -> int:
    return random.getrandbits(64) or 1


def _failed(error: BaseException) -> str:
    """What a failed span says: the gateway's error code or the exception's type, never its message."""
    return error.code if isinstance(error, GatewayError) else type(error).__name__


class TurnSpans:
    """The spans of one sampled proxied turn (gateway.tracing.TurnTrace)."""

    __slots__ = ("_sink", "_trace_id", "_root_id", "_parent_id", "_attributes", "_spans", "_wall_ns", "_perf",
                 "_include_text", "_secrets", "_forward", "_ended")

    def __init__(self, sink: SpanSink, trace_id: int, parent_id: int | None, surface: str, include_text: bool,
                 secrets: Sequence[str | None]) -> None:
        self._sink = sink
        self._trace_id = trace_id
        self._root_id = _new_span_id()
        self._parent_id = parent_id
        self._attributes: dict[str, AttributeValue] = {"mnx.surface": surface}
        self._spans: list[FinishedSpan] = []
        # Where perf_counter readings are placed on the wall clock (span times are epoch ns).
        self._wall_ns = time.time_ns()
        self._perf = time.perf_counter()
        self._include_text = include_text
        self._secrets = secrets
        self._forward: FinishedSpan | None = None
        self._ended = False

    def _ns(self, perf: float) -> int:
        return self._wall_ns + int((perf - self._perf) * 1e9)

    def annotate(self, attributes: Attributes) -> None:
        self._attributes.update(attributes)

    def stage(self, name: str, started: float, ended: float, attributes: Attributes | None = None) -> None:
        self._spans.append(FinishedSpan(f"mnx.{name}", self._trace_id, _new_span_id(), self._root_id, KIND_INTERNAL,
                                        self._ns(started), self._ns(ended), dict(attributes or {})))

    def context_stage(self, name: str, started: float, ended: float, layer: ContextLayer | None) -> None:
        attributes: dict[str, Any] = stage_attributes(name, layer)
        if self._include_text and layer is not None and layer.system_text:
            attributes["mnx.stage.text"] = redact(layer.system_text, self._secrets)[:MAX_TEXT_CHARS]
        self.stage(f"context.{name}", started, ended, attributes)

    def forward(self, provider: str, model: str, streamed: bool) -> None:
        now = time.time_ns()
        self._forward = FinishedSpan("mnx.forward", self._trace_id, _new_span_id(), self._root_id, KIND_CLIENT, now,
                                     now, {"mnx.provider": provider, "gen_ai.request.model": model,
                                           "mnx.streamed": streamed})

    def forwarded(self, *, status: int | None = None, error: BaseException | None = None,
                  answer: Mapping[str, Any] | None = None) -> None:
        span, self._forward = self._forward, None
        if span is None:
            return
        span.end_ns = time.time_ns()
        if error is not None:
            span.error = _failed(error)
            span.attributes["error.type"] = span.error
            status = error.status if isinstance(error, GatewayError) else status
        if status is not None:
            span.attributes["http.response.status_code"] = status
        counts = usage_counts(answer) if answer is not None else None
        if counts is not None:
            tokens_in, tokens_out = counts
            if tokens_in is not None:
                span.attributes["gen_ai.usage.input_tokens"] = tokens_in
            if tokens_out is not None:
                span.attributes["gen_ai.usage.output_tokens"] = tokens_out
        self._spans.append(span)

    def traceparent(self) -> str | None:
        return format_traceparent(self._trace_id, self._root_id)  # (a Turn exists only when sampled)

    def end(self, status: int, error: BaseException | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        if self._forward is not None:
            self.forwarded(error=error)
        if isinstance(error, GatewayError):
            status = error.status
        self._attributes["http.response.status_code"] = status
        root = FinishedSpan("mnx.turn", self._trace_id, self._root_id, self._parent_id, KIND_SERVER, self._wall_ns,
                            time.time_ns(), self._attributes)
        # A server span fails on a 5xx or an exception, not on the caller's own 4xx (semantic conventions).
        if error is not None and (status >= 500 or not isinstance(error, GatewayError)):
            root.error = _failed(error)
            self._attributes["error.type"] = root.error
        elif status >= 500:
            root.error = str(status)
        self._spans.append(root)
        self._sink(self._spans)


class JobSpan:
    """A job's run (gateway.tracing.JobTrace): a trace of its own, linked to its turn's span."""

    __slots__ = ("_sink", "_span")

    def __init__(self, sink: SpanSink, span: FinishedSpan) -> None:
        self._sink = sink
        self._span = span

    def end(self, error: BaseException | None = None) -> None:
        self._span.end_ns = time.time_ns()
        if error is not None:
            self._span.error = _failed(error)
            self._span.attributes["error.type"] = self._span.error
        self._sink((self._span,))


class Tracer:
    """A gateway's sampler and span sink (gateway.tracing.GatewayTracer)."""

    def __init__(self, config: TracingConfig, sink: SpanSink | None = None) -> None:
        self._include_text = config.include_text
        # TraceIdRatioBased's bound: a trace is sampled when its id's low 64 bits are under it.
        self._bound = round(config.sample_ratio * _LOW_64_BITS)
        self._exporter = None if sink is not None else OtlpExporter(config.otlp_endpoint, config.service_name)
        self._sink: SpanSink = sink if sink is not None else self._exporter.export  # type: ignore[union-attr]

    def _sampled(self, trace_id: int) -> bool:
        return (trace_id & _LOW_64_BITS) < self._bound

    def begin_turn(self, surface: str, headers: Mapping[str, str], secrets: Sequence[str | None]) -> TurnSpans | None:
        header = headers.get("traceparent")
        parent = parse_traceparent(header) if header else None
        if parent is not None:
            trace_id, parent_id, sampled = parent  # the caller's decision, for its whole trace
        else:
            trace_id, parent_id = random.getrandbits(128) or 1, None
            sampled = self._sampled(trace_id)
        if not sampled:
            return None  # not sampled: no spans made, and nothing to end
        return TurnSpans(self._sink, trace_id, parent_id, surface, self._include_text, secrets)

    def begin_job(self, job: Job) -> JobSpan | None:
        traceparent = job.payload.get("traceparent")
        turn = parse_traceparent(traceparent) if isinstance(traceparent, str) else None
        # A trace of its own (the learn job runs seconds after its turn, on the worker), linked to
        # its turn's span. A job queued by a traced turn is traced (the turn was sampled, or it
        # would carry no traceparent); any other job, by the ratio.
        trace_id = random.getrandbits(128) or 1
        if turn is None and not self._sampled(trace_id):
            return None
        links = ((turn[0], turn[1]),) if turn is not None else ()
        span = FinishedSpan("mnx.job", trace_id, _new_span_id(), None, KIND_INTERNAL,
                            time.time_ns(), 0, {"mnx.job.kind": job.kind, "mnx.job.id": job.id,
                                                "mnx.job.attempt": job.attempts, "mnx.project_id": job.project_id},
                            links)
        return JobSpan(self._sink, span)

    def shutdown(self) -> None:
        if self._exporter is not None:
            self._exporter.shutdown()

