"""Prometheus metrics: what ``GET /metrics`` serves, and the one-line hooks that feed it.

Why here: an operator running the gateway in front of a product needs its request rates,
provider latency and errors, where a turn spends its time, tokens, memory activity and
the job backlog, in the format their monitoring already scrapes (prometheus-client's
text exposition, not a hand-written one).

Per process. Each gateway (``create_app``) has its own ``GatewayMetrics`` with its own
registry, so several gateway processes (``serve --workers N``, or several hosts) are
scraped separately, each at its own ``/metrics``, and summed by the monitoring system
(``sum by (route) (rate(mnx_gateway_requests_total[5m]))``). Gauges computed on scrape
(jobs unfinished, age of the oldest one) read the shared queue, so every process reports
the same backlog: take ``max``, not ``sum``, of those.

Labels stay low-cardinality: route *templates* (``/api/v1/memories/{id}``, never the
raw path), surface and provider names, status codes, stage names and job kinds, all
bounded by the code; never a project, subject, chat or key.

Off (``server.metrics.enabled: false``) nothing is created and every hook below returns
after one context-variable read: the hooks find the metrics of the gateway serving the
current request (or running the current job) in ``_active``, set by gateway/http_observer.py
for each request and by the app's lifespan for the worker's tasks.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.responses import Response

from gateway.errors import Forbidden, GatewayError, NotFound

if TYPE_CHECKING:
    from gateway.routing import Call
    from gateway.tracing import TurnTrace

# Latency buckets (seconds) from a sub-millisecond stage to a long provider answer.
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_PROVIDER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)
# Jobs counted per project on each scrape at most: past it the depth reads as this (a backlog that
# large is an alert either way, and a scrape must stay cheap).
QUEUE_SCAN_LIMIT = 10_000


class GatewayMetrics:
    """One gateway's metrics, in a registry of its own."""

    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("mnx_gateway_requests", "HTTP requests answered, by surface, route template, "
                                "method and status", ["surface", "route", "method", "status"], registry=registry)
        self.provider_seconds = Histogram("mnx_gateway_provider_request_duration_seconds",
                                          "Time until the provider answered (streams: until the stream opened)",
                                          ["provider"], buckets=_PROVIDER_BUCKETS, registry=registry)
        self.provider_errors = Counter("mnx_gateway_provider_errors", "Provider calls that failed, by provider "
                                       "and the gateway's error code", ["provider", "code"], registry=registry)
        self.stage_seconds = Histogram("mnx_gateway_stage_duration_seconds", "Time per stage of a proxied turn: "
                                       "options, each context stage by name, forward, record",
                                       ["stage"], buckets=_STAGE_BUCKETS, registry=registry)
        self.tokens = Counter("mnx_gateway_tokens", "Tokens the provider reported in its usage (whole answers)",
                              ["provider", "direction"], registry=registry)
        self.memories_recalled = Counter("mnx_gateway_memories_recalled", "Memories recalled into answered turns",
                                         registry=registry)
        self.memories_learned = Counter("mnx_gateway_memories_learned", "Memories stored by learning jobs",
                                        registry=registry)
        self.memories_superseded = Counter("mnx_gateway_memories_superseded",
                                           "Memories superseded by learned ones", registry=registry)
        self.jobs_completed = Counter("mnx_gateway_jobs_completed", "Jobs run to completion, by kind", ["kind"],
                                      registry=registry)
        self.job_retries = Counter("mnx_gateway_job_retries", "Job runs that failed and were rescheduled, by kind",
                                   ["kind"], registry=registry)
        self.jobs_unfinished = Gauge("mnx_gateway_jobs_unfinished", "Jobs pending or waiting for a retry "
                                     "(configured projects; read from the shared queue on scrape)", registry=registry)
        self.oldest_job_age = Gauge("mnx_gateway_oldest_job_age_seconds", "Age of the oldest unfinished job "
                                    "(0 when there is none)", registry=registry)
        self.event_subscribers = Gauge("mnx_gateway_event_subscribers", "Memory event streams (SSE) open on this "
                                       "process", registry=registry)
        self._children: dict[tuple[Any, ...], Any] = {}

    def labelled(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once: prometheus-client's ``labels`` takes a lock and
        builds its key on every call (with the observe after it, ~5% of a full turn's CPU in py-spy).
        It holds one entry per label set, as the metric's own children do: nothing more is kept."""
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    async def refresh_gauges(self, call: Call) -> None:
        """The gauges read from state, at scrape time rather than on every change."""
        services = call.services
        now, count, oldest = time.time(), 0, None
        project_ids = [project.id for project in services.config.projects]
        for project_id in project_ids:
            jobs = await services.jobs.unfinished(project_id, QUEUE_SCAN_LIMIT)
            count += len(jobs)
            if jobs:
                first = min(job.created_at for job in jobs)
                oldest = first if oldest is None else min(oldest, first)
        self.jobs_unfinished.set(count)
        self.oldest_job_age.set(0 if oldest is None else max(0.0, now - oldest))
        self.event_subscribers.set(sum(services.memories.events.open_streams(pid) for pid in project_ids))


_active: ContextVar[GatewayMetrics | None] = ContextVar("mnx_metrics", default=None)


def activate(metrics: GatewayMetrics | None) -> Token[GatewayMetrics | None]:
    return _active.set(metrics)


def deactivate(token: Token[GatewayMetrics | None]) -> None:
    _active.reset(token)


def active() -> GatewayMetrics | None:
    return _active.get()


# -- GET /metrics --------------------------------------------------------------------------


async def serve_metrics(call: Call) -> Response:
    """The Prometheus text exposition of this process's metrics (scope ``metrics:read``)."""
    # Not granted by the coarse "read" scope, which tenants' keys commonly hold: the counters are
    # the whole process's, every project's together, so only a key named for it (or "*") reads them.
    if call.credentials.principal.scopes.isdisjoint({"*", "metrics:read", "metrics:*"}):
        raise Forbidden("this API key lacks the 'metrics:read' scope (the coarse 'read' scope does not grant it)")
    metrics = active()
    if metrics is None:
        raise NotFound("metrics are off on this gateway (server.metrics.enabled)", code="metrics_disabled")
    await metrics.refresh_gauges(call)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


# -- hooks (each a no-op when metrics are off) -----------------------------------------------


def stage_since(stage: str, started: float, trace: TurnTrace | None = None) -> None:
    """A stage of a turn that began at ``started`` (``time.perf_counter()``) ended now; with
    ``trace``, the same two readings make the stage's span (gateway/tracing.py)."""
    metrics = _active.get()
    if metrics is None and trace is None:
        return
    ended = time.perf_counter()
    if metrics is not None:
        metrics.labelled(metrics.stage_seconds, stage).observe(ended - started)
    if trace is not None:
        trace.stage(stage, started, ended)


P = ParamSpec("P")
R = TypeVar("R")


def timed(stage: str, trace: TurnTrace | None = None,
          ) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Decorates a coroutine function whose every call is one ``stage`` of a turn (and, with
    ``trace``, a span of it). Meant for a function defined inside the request (as proxy_turn's
    ``answered``): with metrics and tracing off there it is returned as it is."""
    def decorate(function: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        if _active.get() is None and trace is None:
            return function

        # Not functools.wraps: this runs once per request, and copying the wrapped function's
        # attributes cost more than the timing itself.
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                stage_since(stage, started, trace)
        return run
    return decorate


def stage_ran(stage: str, seconds: float) -> None:
    """A context stage of a turn took ``seconds`` (gateway/pipeline/context.py times each one)."""
    metrics = _active.get()
    if metrics is not None:
        metrics.labelled(metrics.stage_seconds, stage).observe(seconds)


async def _forwarding(metrics: GatewayMetrics, provider: str, call: Awaitable[R]) -> R:
    started = time.perf_counter()
    try:
        return await call
    except GatewayError as error:
        metrics.labelled(metrics.provider_errors, provider, error.code).inc()
        raise
    finally:
        elapsed = time.perf_counter() - started
        metrics.labelled(metrics.provider_seconds, provider).observe(elapsed)
        metrics.labelled(metrics.stage_seconds, "forward").observe(elapsed)


def forwarded(provider: str, call: Coroutine[Any, Any, R]) -> Coroutine[Any, Any, R]:
    """The provider ``call`` (a coroutine, not yet awaited), timed and its failures counted."""
    metrics = _active.get()
    if metrics is None:
        return call
    return _forwarding(metrics, provider, call)


# Where each wire format's usage block keeps its token counts: (usage key, input field, output field).
_USAGE_FIELDS = (("usage", "prompt_tokens", "completion_tokens"),  # OpenAI Chat Completions
                 ("usage", "input_tokens", "output_tokens"),  # Responses, Anthropic Messages
                 ("usageMetadata", "promptTokenCount", "candidatesTokenCount"))  # Gemini


def usage_counts(answer: Mapping[str, Any]) -> tuple[int | None, int | None] | None:
    """(input tokens, output tokens) a whole answer's usage block reports, each None when absent
    or not a positive count; None when the answer has no usage block (metrics and traces read it)."""
    for usage_key, input_field, output_field in _USAGE_FIELDS:
        usage = answer.get(usage_key)
        if isinstance(usage, dict) and (input_field in usage or output_field in usage):
            counts = [usage.get(field) for field in (input_field, output_field)]
            tokens_in, tokens_out = (count if isinstance(count, int) and not isinstance(count, bool) and count > 0
                                     else None for count in counts)
            return tokens_in, tokens_out
    return None


def count_tokens(provider: str, answer: Mapping[str, Any]) -> None:
    """The tokens a whole answer's usage block reports (a stream's are not counted)."""
    metrics = _active.get()
    if metrics is None:
        return
    counts = usage_counts(answer)
    if counts is not None:
        for direction, count in zip(("in", "out"), counts):
            if count is not None:
                metrics.labelled(metrics.tokens, provider, direction).inc(count)


def memory_learned(result: Mapping[str, Any]) -> None:
    """A learning job's ``Memories.create`` answer: stored (and what it superseded), or skipped."""
    metrics = _active.get()
    if metrics is None or not result.get("created"):
        return
    metrics.memories_learned.inc()
    superseded = result.get("superseded_count") or 0
    if superseded:
        metrics.memories_superseded.inc(superseded)


def memories_recalled(count: int) -> None:
    metrics = _active.get()
    if metrics is not None and count:
        metrics.memories_recalled.inc(count)


def job_finished(kind: str, *, failed: bool) -> None:
    """A job ran: completed, or failed and rescheduled (a retry)."""
    metrics = _active.get()
    if metrics is not None:
        metrics.labelled(metrics.job_retries if failed else metrics.jobs_completed, kind).inc()
