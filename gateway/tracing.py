"""OpenTelemetry traces of proxied turns and of the jobs they leave (``tracing.enabled``).

Why: metrics say a stage is slow on average; a trace says where one turn spent its time,
which memories it recalled and what the provider answered, and joins the learning job that
ran seconds later on the worker to the turn that queued it.

A turn is one root span (``mnx.turn``) per proxied request, on every surface, with a child
per stage: ``mnx.options``, ``mnx.context.<stage>`` for each context stage that applied
(system_prompt, state, profile, memories, records, history), ``mnx.forward`` (ending when a
stream ends), ``mnx.record``. A job is a span of its own trace (``mnx.job``), *linked* to its
turn's span: the learn job's payload carries the turn's W3C ``traceparent`` and nothing else
of the trace.

The spans hang on the timing the gateway does anyway (gateway/pipeline/context.py times each
context stage once, for metrics, explain and traces alike): a stage span is made, after the
fact, from those perf_counter readings, not by a second timer around the stage.

Attributes are ids and counts allowed by name (``stage_attributes``): never memory, message,
prompt or record text, unless ``tracing.include_text`` (a debug flag) puts each context stage's
text in, with every provider key of the request redacted; keys are never in a span.

Off (the default), this module is all that is loaded, and each hook costs one context-variable
read (``active``). On, spans are recorded as plain objects (gateway/trace_spans.py) and sent in
OTLP's protobuf wire format from a thread (gateway/otlp_export.py): no OpenTelemetry package is
needed. Why not OpenTelemetry's SDK: it cost about 0.3 ms of CPU per turn (otlp_export.py says
where), three times the bound this feature is held to; this costs a few hundredths of that.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gateway.config import TracingConfig
    from gateway.jobs.queue import Job
    from gateway.pipeline.context import ContextLayer

AttributeValue = str | int | float | bool | Sequence[str] | Sequence[int]
Attributes = Mapping[str, AttributeValue]

# A context stage's text in a span (include_text only) is cut to this many characters.
MAX_TEXT_CHARS = 4096


class TurnTrace(Protocol):
    """The spans of one proxied turn."""

    def annotate(self, attributes: Attributes) -> None:
        """Attributes of the turn's span (ids, once the options are read)."""

    def stage(self, name: str, started: float, ended: float, attributes: Attributes | None = None) -> None:
        """A finished stage, child of the turn, from two ``time.perf_counter()`` readings."""

    def context_stage(self, name: str, started: float, ended: float, layer: ContextLayer | None) -> None:
        """A finished context stage (``mnx.context.<name>``), its attributes from its layer."""

    def forward(self, provider: str, model: str, streamed: bool) -> None:
        """The provider call begins (``mnx.forward``)."""

    def forwarded(self, *, status: int | None = None, error: BaseException | None = None,
                  answer: Mapping[str, Any] | None = None) -> None:
        """The provider call ended: answered (``answer``, the whole answer, for its token counts), or failed."""

    def traceparent(self) -> str | None:
        """The turn span's W3C traceparent, for a job it queues (None when not sampled)."""

    def end(self, status: int, error: BaseException | None = None) -> None:
        """The turn was answered with ``status`` (an open forward span ends with it). Idempotent."""


class JobTrace(Protocol):
    def end(self, error: BaseException | None = None) -> None:
        """The job ran (``error``: it failed, and will be retried)."""


class GatewayTracer(Protocol):
    """One gateway's tracer provider and exporter."""

    def begin_turn(self, surface: str, headers: Mapping[str, str],
                   secrets: Sequence[str | None]) -> TurnTrace | None:
        """A new turn, None when it is not sampled (it then costs nothing more); ``headers``' W3C
        traceparent, if any, is its parent; ``secrets`` (the request's provider keys) are redacted
        from any text ``include_text`` adds."""

    def begin_job(self, job: Job) -> JobTrace | None:
        """A job's run, linked to the turn whose ``traceparent`` its payload carries; None when
        it is not sampled (a job of a traced turn always is)."""

    def shutdown(self) -> None:
        """Export what is pending and stop."""


def start_tracing(config: TracingConfig, span_exporter: Any = None) -> GatewayTracer | None:
    """The gateway's tracer, None when tracing is off. ``span_exporter`` replaces the OTLP
    exporter: a callable that receives each turn's (and job's) finished spans, a sequence of
    ``gateway.otlp_export.FinishedSpan``, synchronously as the turn ends (the test hook, see
    tests/test_tracing.py)."""
    if not config.enabled:
        return None
    from gateway import trace_spans  # (off, never imported)

    return trace_spans.Tracer(config, span_exporter)


_active: ContextVar[GatewayTracer | None] = ContextVar("mnx_tracer", default=None)


def activate(tracer: GatewayTracer | None) -> Token[GatewayTracer | None]:
    return _active.set(tracer)


def deactivate(token: Token[GatewayTracer | None]) -> None:
    _active.reset(token)


def active() -> GatewayTracer | None:
    """The tracer of the gateway serving the current request or running the current job."""
    return _active.get()


# What a context stage's layer may tell a span, by the key of its audit (ContextLayer.audit):
# ids and counts only, never text.
def stage_attributes(name: str, layer: ContextLayer | None) -> dict[str, AttributeValue]:
    audit = (layer.audit if layer is not None else None) or {}
    attributes: dict[str, AttributeValue] = {"mnx.stage.contributed": bool(
        layer is not None and (layer.system_text or layer.messages))}
    if name == "memories":
        memory_ids = [str(i) for i in audit.get("memory_ids", ())]
        attributes["mnx.recall.hits"] = len(memory_ids)
        attributes["mnx.recall.memory_ids"] = memory_ids
        attributes["mnx.recall.claims"] = len(audit.get("claim_ids", ()))
    elif name == "records":
        records = audit.get("records", ())
        attributes["mnx.records.hits"] = len(records)
        attributes["mnx.records.record_ids"] = [str(r["record_id"]) for r in records]
    elif name == "history":
        attributes["mnx.history.messages"] = int(audit.get("messages", 0))
        summary = audit.get("summary")
        if summary:
            attributes["mnx.summary.messages_summarized"] = int(summary["messages_summarized"])
    elif name == "system_prompt" and "prompt_ids" in audit:
        attributes["mnx.prompt_ids"] = [str(i) for i in audit["prompt_ids"]]
    elif name == "profile":
        attributes["mnx.profile.fields"] = len(audit.get("fields", ()))
    return attributes


async def traced_stream(stream: AsyncIterator[bytes], trace: TurnTrace,
                        recorded: Sequence[Any]) -> AsyncIterator[bytes]:
    """``stream`` (a relayed answer), ending the forward and turn spans when it ends: they fail
    unless the answer came whole and was recorded (``recorded`` is then not empty)."""
    error: BaseException | None = None
    try:
        async for chunk in stream:
            yield chunk
    except BaseException as raised:
        error = raised
        raise
    finally:
        if error is None and not recorded:
            error = StreamIncomplete("the stream ended before a complete answer was relayed and recorded")
        trace.forwarded(status=200, error=error)
        trace.end(200, error)


class StreamIncomplete(Exception):
    """A streamed answer that broke off (provider, storage or client): the span's error."""
