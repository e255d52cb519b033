"""One proxied turn, for any provider-native surface.

Every surface (Chat Completions, Responses, Anthropic Messages) runs the same
steps: read and validate the body before anything is stored or forwarded, resolve
the ``mnx`` options, pick the provider and key, assemble the context layers,
forward (streamed or not), record the turn, answer with the mnx ids. A
``SurfaceSpec`` holds only what differs: the format's validation, where context
goes in its body, how its messages and answers map to the stored history form,
and which upstream calls speak it.
"""

from __future__ import annotations

import json
import logging
import string
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.erasure import SubjectErased
from gateway import metrics as gateway_metrics
from gateway import tracing
from gateway.errors import BadRequest, GatewayError
from gateway.feature_scopes import authorize_features
from gateway.options import parse_options
from gateway.pipeline.context import AssembledContext, TurnContext, assemble
from gateway.pipeline.explain import explanation
from gateway.pipeline.record import RecordsSync, record_turn, records_summary, wants_records_sync
from gateway.proxy.body_fields import reject_unknown_fields
from gateway.proxy.disconnect import ClientLeft, unless_client_leaves
from gateway.proxy.providers import Route, provider_key, provider_settings, route_model
from gateway.proxy.relay import relay
from gateway.proxy.sse import JsonEventStream
from gateway.proxy.wire import UpstreamCall, WireFormat
from gateway.keys.trial import provisioned
from gateway.request_id import current_request_id
from gateway.routing import Call
from gateway.tracing import TurnTrace
from gateway.usage_limits import tokens_of
from gateway.validation import read_json_object


log = logging.getLogger("gateway.proxy")

# Everything printable in ASCII but "%", which starts an escape.
_PRINTABLE_ASCII = "".join(c for c in string.printable if c not in "%\t\n\r\x0b\x0c")


@dataclass(frozen=True)
class SurfaceSpec:
    # Raise BadRequest for a body this format does not accept.
    validate: Callable[[dict[str, Any]], None]
    # The request's conversation in the stored (OpenAI chat) form.
    request_messages: Callable[[dict[str, Any]], list[dict[str, Any]]]
    # The body to forward: the request's, with the assembled context placed where this format keeps it.
    with_context: Callable[[dict[str, Any], AssembledContext], dict[str, Any]]
    # The format requests and answers travel in, upstream.
    wire: WireFormat
    # The assistant message of a whole answer, in the stored form (None: nothing to record).
    answer_message: Callable[[dict[str, Any]], dict[str, Any] | None]
    new_accumulator: Callable[[], JsonEventStream]
    # The format's own in-stream error event (code, message): sent when the provider's stream
    # breaks off, or the turn cannot be recorded, once the status line is long gone.
    error_frame: Callable[[str, str], bytes]
    # The header this format's SDK carries the provider key in, per provider.
    native_key_header: Callable[[Route], str | None] = lambda route: None
    # Client headers a native passthrough forwards.
    forwarded_headers: tuple[str, ...] = ()
    # mnx.history's default on this surface, when it differs from the configured one.
    history_default: bool | None = None
    # Fills in what this format carries in the URL rather than the body (Gemini: model, stream).
    from_path: Callable[[Request, dict[str, Any]], None] | None = None
    # Whether JSON answers carry the "mnx" block (not where the SDK rejects unknown fields).
    mnx_in_body: bool = True
    # What recall events and audit call requests of this surface.
    request_type: str = "chat"
    # Cache mode on an Anthropic route: the forwarded body with prompt-cache breakpoints marked
    # (gateway/proxy/cache_breakpoints.py). None: this surface adds none.
    cache_breakpoints: Callable[[dict[str, Any], AssembledContext], dict[str, Any]] | None = None


def header_value(value: str) -> str:
    """``value`` as an HTTP header can carry it: header values are Latin-1 on the wire, so an id
    with other characters comes back percent-encoded as UTF-8 (``%F0%9F%98%80``), as URLs spell them."""
    if value.isascii() and value.isprintable():
        return value
    return urllib.parse.quote(value, safe=_PRINTABLE_ASCII)


def _forwardable(name: str, value: str) -> str:
    if not (value.isascii() and value.isprintable()):
        raise BadRequest(f"the {name} header must be printable ASCII", code="invalid_header", param=name)
    return value


def _explained(spec: SurfaceSpec, upstream_call: UpstreamCall, native: bool, turn: TurnContext,
               context: AssembledContext, timings: dict[str, float]) -> Response:
    """The answer to an ``mnx.explain`` turn: the request the provider would get (gateway/pipeline/explain.py)."""
    if native:
        native_request = spec.wire.native_request(upstream_call)
        url: str | None = native_request.url
        request = native_request.body
    else:
        # What LiteLLM would receive; it translates this into the provider's own format.
        url = None
        request = {name: value for name, value in upstream_call.body.items() if name in spec.wire.translated}
    options = turn.options
    shown = {"subject_id": options.subject_id, "chat_id": options.chat_id, "history": options.history,
             "log": options.log, "learn": options.learn, "recall": options.recall, "profile": options.profile,
             "system_prompt": options.system_prompt, "memory_policy": options.memory_policy, "cache": options.cache,
             "summarize": options.summarize.to_payload() if options.summarize else False}
    answer = explanation(surface=spec.request_type, provider=upstream_call.route.provider,
                         model=upstream_call.route.model, native=native, url=url, request=request, context=context,
                         request_messages=list(turn.messages), options=shown, timings=timings,
                         secrets=(upstream_call.api_key,))
    return JSONResponse(answer, headers={"X-Mnx-Chat-Id": header_value(options.chat_id),
                                         "X-Mnx-Subject-Id": header_value(options.subject_id)})


async def proxy_turn(call: Call, spec: SurfaceSpec) -> Response:
    """One turn; with tracing on, its span tree (gateway/tracing.py) around it."""
    tracer = tracing.active()
    trace = None if tracer is None else tracer.begin_turn(
        spec.request_type, call.request.headers,
        (*call.credentials.provider_keys.values(), call.credentials.provider_bearer))
    if trace is None:  # tracing off, or this turn not sampled
        return await _turn(call, spec, None)
    try:
        response = await _turn(call, spec, trace)
    except BaseException as error:
        trace.end(500, error)
        raise
    if not isinstance(response, StreamingResponse):  # a stream's spans end with it (tracing.traced_stream)
        trace.end(response.status_code)
    return response


async def _turn(call: Call, spec: SurfaceSpec, trace: TurnTrace | None) -> Response:
    started = time.perf_counter()
    services = call.services
    headers = call.request.headers
    body = await read_json_object(call.request, services.config.server.max_body_bytes)
    # The turn's audit record (gateway/audit_log.py; None when the log is off): the body as sent.
    audit = services.audit.begin(call.project_id, spec.request_type, body,
                                 (*call.credentials.provider_keys.values(), call.credentials.provider_bearer))
    mnx = body.pop("mnx", None)
    if (isinstance(mnx, dict) and mnx.get("regenerate_key") is True and mnx.get("explain") is not True
            and services.keys.trials is not None):
        # A trial project's new key goes out with this answer (gateway/keys/trial.py); others: no-op.
        await services.keys.trials.regenerate(call.request, call.project_id)
    sent_fields = list(body)  # what the client sent, before the URL adds anything (Gemini)
    if spec.from_path is not None:
        spec.from_path(call.request, body)
    options = parse_options(mnx, headers, services.config.defaults, history_default=spec.history_default)
    gateway_metrics.stage_since("options", started, trace)  # reading the body included
    if trace is not None:
        trace.annotate({"mnx.project_id": call.project_id, "mnx.subject_id": options.subject_id,
                        "mnx.chat_id": options.chat_id, "mnx.request_id": current_request_id.get() or "",
                        "mnx.explain": options.explain})
    ids = {"X-Mnx-Chat-Id": header_value(options.chat_id), "X-Mnx-Subject-Id": header_value(options.subject_id)}
    credentials = call.credentials
    try:
        options = authorize_features(options, credentials.principal)
        spec.validate(body)
        route = route_model(body["model"])
        settings = provider_settings(services.config.providers, route.provider)
        native = route.provider == spec.wire.native_provider
        reject_unknown_fields(sent_fields, spec.wire, settings.extra_body_fields if native else ())
        if isinstance(options.memory_policy, str):
            await services.policies.require_usable(call.project_id, options.memory_policy)
        try:
            api_key = provider_key(route.provider, credentials.provider_keys, credentials.provider_bearer,
                                   settings, native_header=spec.native_key_header(route))
        except BadRequest:
            if not options.explain:
                raise
            api_key = ""  # an explained turn calls no provider: it needs no key
        # Usage limits: the turn's recall (memory.search) and learning (memory.create), before either runs.
        await services.usage.memory_actions(credentials.principal, int(options.recall) + int(
            options.learn is not False and not options.explain))
        prepared_at = time.perf_counter()
        turn = TurnContext(call.project_id, options, spec.request_messages(body), body["model"],
                           request_type=spec.request_type, provider_keys=credentials.provider_keys,
                           may_read_integrations=credentials.principal.allows("integrations:read"), trace=trace)
        context = await assemble(turn, services.stages)
        if audit is not None:
            audit.provider, audit.model, audit.injected = route.provider, route.model, context.injected
        forwarded = {name: _forwardable(name, headers[name]) for name in spec.forwarded_headers if name in headers}
        outgoing = spec.with_context(body, context)
        # (Not when the turn had no user message for its volatile layers: they are then in the
        # system text, and a mark there would pay for a cache write every step, read never.)
        if context.prefix_stable and route.provider == "anthropic" and spec.cache_breakpoints is not None:
            outgoing = spec.cache_breakpoints(outgoing, context)
        upstream_call = UpstreamCall(route, {**outgoing, "model": route.model}, api_key, settings, headers=forwarded)
        if options.explain:
            assembled_at = time.perf_counter()
            return _explained(spec, upstream_call, native, turn, context, {
                "read_and_check": (prepared_at - started) * 1000, "assemble": (assembled_at - prepared_at) * 1000,
                "total": (assembled_at - started) * 1000})

        learns_records = options.records is not None and options.records.learn is not False

        @gateway_metrics.timed("record", trace)
        async def answered(message: dict[str, Any] | None, sync: RecordsSync | None = None,
                           whole: dict[str, Any] | None = None) -> list[dict[str, Any]]:
            """A complete answer (``whole``: the provider's, None when streamed): the stages' writes
            (recall events), a sync turn's records, then history and learning, unless the subject
            was erased while the turn ran (its data must not come back); the audit record is
            written behind it. Returns the records written (sync only)."""
            if not (context.on_answered or options.log or options.learn is not False or learns_records):
                await services.audit.answered(audit, options, answer=whole, message=message)
                return []  # a plain proxied turn writes nothing (but its audit record)
            written: list[dict[str, Any]] = []
            try:
                async with services.erasure.writing(call.project_id, options.subject_id, since=turn.started_at):
                    # First: a sync write that fails leaves no trace of the turn, as a provider error does.
                    if sync is not None:
                        written = await sync.write(call.project_id)
                    await context.answered()
                    if message is not None:
                        await record_turn(turn, message, history=services.history,
                                          learner=services.learner, worker=services.worker,
                                          records_learned=sync is not None, learn_policy=context.learn_policy)
            except SubjectErased:
                log.info("the subject of a %s turn was erased while it ran: nothing recorded", spec.request_type)
                return []
            await services.audit.answered(audit, options, answer=whole, message=message)
            return written

        # A streamed turn's answer once it came whole, and whether it was then recorded (a trace's
        # spans fail unless it was: the client got the in-band turn_not_recorded error instead).
        streamed_answer: list[dict[str, Any]] = []
        recorded: list[bool] = []

        async def streamed(message: dict[str, Any]) -> None:
            streamed_answer.append(message)
            await answered(message)
            recorded.append(True)

        def estimated_stream_tokens() -> int:
            """A stream that reported no usage: about four characters a token of the forwarded body
            and of the answer (gateway/usage_limits.py counts it so)."""
            answer_text = json.dumps(streamed_answer[-1], ensure_ascii=False) if streamed_answer else ""
            return (len(json.dumps(upstream_call.body, ensure_ascii=False)) + len(answer_text) + 3) // 4

        if trace is not None:  # ended by an error below, or with the answer (a stream: when it ends)
            trace.forward(route.provider, route.model, streamed=bool(body.get("stream")))
        if body.get("stream"):
            # Once the stream has begun nothing can be added to the answer: sync or not, a
            # streamed turn's records are learned by its job (docs/features.md, Records).
            stream = await unless_client_leaves(call.request, gateway_metrics.forwarded(
                route.provider, services.upstream.open_stream(upstream_call, spec.wire)))
            try:
                accumulator = spec.new_accumulator()
                relayed = relay(stream, audit.watching(accumulator) if audit else accumulator, spec.error_frame,
                                streamed)
                if trace is not None:
                    relayed = tracing.traced_stream(relayed, trace, recorded)
                return StreamingResponse(services.usage.counting_stream(credentials.principal, relayed,
                                                                        estimated_stream_tokens),
                                         media_type="text/event-stream",
                                         headers={**ids, **stream.headers, "Cache-Control": "no-cache",
                                                  "X-Accel-Buffering": "no"})
            except BaseException:
                # Until the response owns the stream, an open provider connection is ours to close.
                await stream.aclose()
                raise
        answer = await unless_client_leaves(call.request, gateway_metrics.forwarded(
            route.provider, services.upstream.complete(upstream_call, spec.wire)))
        gateway_metrics.count_tokens(route.provider, answer.body)
        if trace is not None:
            trace.forwarded(status=200, answer=answer.body)
        try:
            await services.usage.add_tokens(credentials.principal, tokens_of(answer.body))
        except Exception:  # the answer is paid for: a counter that cannot be written must not lose it
            log.warning("the tokens of a %s turn could not be counted (storage failed)", spec.request_type)
    except GatewayError as error:
        error.headers = {**(error.headers or {}), **ids}
        if audit is not None and not options.explain:
            await services.audit.failed(audit, options, error)
        raise
    except ClientLeft:
        log.info("client left before the answer to a %s turn: provider call cancelled, nothing recorded",
                 spec.request_type)
        return Response(status_code=499)  # never sent: nobody is listening
    message = spec.answer_message(answer.body)
    sync = wants_records_sync(turn)
    try:
        prepared = (await RecordsSync.prepare(turn, message, learner=services.learner)
                    if sync and message is not None else None)
        written = await answered(message, prepared, answer.body)
    except GatewayError as error:
        error.headers = {**(error.headers or {}), **ids}
        if audit is not None:
            await services.audit.failed(audit, options, error)
        raise
    if spec.mnx_in_body:
        answer.body["mnx"] = {"chat_id": options.chat_id, "subject_id": options.subject_id}
        minted = provisioned(call.request)
        if minted is not None:  # shown once: the request that minted the trial key
            answer.body["mnx"].update(provisioned_key=minted.key, claim_url=minted.claim_url)
        if sync:
            answer.body["mnx"]["records"] = written
            answer.body["records"] = records_summary(written)
    return JSONResponse(answer.body, headers={**ids, **answer.headers})
