"""Finished spans to an OTLP/HTTP collector: protobuf encoding and the export thread.

Why not OpenTelemetry's SDK: measured on the gateway's passthrough turn (four spans), the SDK
cost about 70 us of CPU per turn to make the spans and 220 us more to encode them for OTLP
(its encoder builds a protobuf message object per span and per attribute), some 0.3 ms of a
2-3 ms turn, against the issue's bound of 0.1 ms. A turn here records each span as one small
object (gateway/trace_spans.py), and this module writes the OTLP protobuf wire format for them
directly: a span is a few bytes appends, and attribute pairs that recur (surface, provider,
stage names) are encoded once and reused. The output is the standard
``ExportTraceServiceRequest`` (opentelemetry/proto/collector/trace/v1), sent as
``application/x-protobuf``, the encoding every OTLP/HTTP receiver accepts; the tests decode it
with OpenTelemetry's own generated classes.

Export happens on a thread of its own, never on the request path: a turn hands its spans over
with one append to a bounded deque. Every ``EXPORT_INTERVAL_SECONDS`` (or at shutdown) the
thread takes what is there and POSTs it in requests of at most ``MAX_SPANS_PER_REQUEST``
spans. Spans over the bound (a collector down for a long time, or far slower than the gateway)
are dropped, oldest first, and so is a batch the collector refuses or cannot be reached for:
tracing never holds memory or a request hostage. Both are logged, at most once a minute.
Headers for the collector (a vendor's API key) come from the standard
``OTEL_EXPORTER_OTLP_HEADERS`` / ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` environment variables.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx

from gateway import __version__
from gateway.tracing import AttributeValue

log = logging.getLogger("gateway.tracing")

# Often, in small requests: encoding holds the GIL, so a second's worth of spans encoded at once
# (2,000 spans, ~10 ms) showed as a 10 ms p99 on the requests it delayed; a quarter second's, in
# requests of 256 spans, holds it ~1 ms at a time (the POST between them releases it).
EXPORT_INTERVAL_SECONDS = 0.25
MAX_SPANS_PER_REQUEST = 256
# Turns (and jobs) waiting for export at most; past it the oldest are dropped.
MAX_PENDING_BATCHES = 4096
# A burst that fills this much of the bound wakes the thread before its interval is up.
WAKE_AT_PENDING = MAX_PENDING_BATCHES // 4
EXPORT_TIMEOUT_SECONDS = 10.0
SHUTDOWN_TIMEOUT_SECONDS = 10.0
_LOG_EVERY_SECONDS = 60.0
INSTRUMENTATION_SCOPE = "mnx_gateway"

# opentelemetry/proto/trace/v1/trace.proto: Span.SpanKind and Status.StatusCode.
KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3
_STATUS_ERROR = 2


@dataclass(slots=True)
class FinishedSpan:
    """One ended span, as gateway/trace_spans.py records it and this module exports it.
    Ids are the W3C numbers (128-bit trace, 64-bit span); times are epoch nanoseconds."""

    name: str
    trace_id: int
    span_id: int
    parent_span_id: int | None
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    # (trace id, span id) of each linked span: a job's turn.
    links: tuple[tuple[int, int], ...] = ()
    # The error code or exception type when the span failed (status ERROR), else None.
    error: str | None = None


# -- the protobuf wire format (https://protobuf.dev/programming-guides/encoding/) --------------

def _varint(number: int) -> bytes:
    number &= 0xFFFF_FFFF_FFFF_FFFF  # a negative int64 is its two's complement, ten bytes
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (``tag`` is the field number shifted, with wire type 2)."""
    return bytes((tag,)) + _varint(len(payload)) + payload


def _any_value(value: AttributeValue) -> bytes:
    # AnyValue: 1 string, 2 bool, 3 int64, 4 double, 5 ArrayValue (its values: field 1).
    if isinstance(value, str):
        return _field(0x0A, value.encode())
    if isinstance(value, bool):  # before int: a bool is an int
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    return _field(0x2A, b"".join(_field(0x0A, _any_value(item)) for item in value))


# Encoded KeyValue messages of scalar attributes already seen: most recur on every turn.
_encoded_pairs: dict[tuple[str, type, Any], bytes] = {}
_MAX_CACHED_PAIRS = 4096
_MAX_CACHED_TEXT = 64


def _key_value(key: str, value: AttributeValue) -> bytes:
    # Short values only: a long text (mnx.stage.text with tracing.include_text) is not kept in a
    # process-wide cache after its turn, nor after its subject is erased.
    if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= _MAX_CACHED_TEXT):
        cache_key = (key, type(value), value)
        encoded = _encoded_pairs.get(cache_key)
        if encoded is None:
            if len(_encoded_pairs) >= _MAX_CACHED_PAIRS:
                _encoded_pairs.clear()  # ids and counts vary: keep the cache to what recurs
            encoded = _encoded_pairs[cache_key] = _field(0x0A, key.encode()) + _field(0x12, _any_value(value))
        return encoded
    return _field(0x0A, key.encode()) + _field(0x12, _any_value(value))


def _attributes(tag: int, attributes: Mapping[str, AttributeValue]) -> bytes:
    return b"".join(_field(tag, _key_value(key, value)) for key, value in attributes.items())


_QWORD = struct.Struct("<Q")


def encode_span(span: FinishedSpan) -> bytes:
    """A ``Span`` message (opentelemetry/proto/trace/v1/trace.proto)."""
    out = bytearray(b"\x0a\x10")  # 1 trace_id, 16 bytes
    out += span.trace_id.to_bytes(16, "big")
    out += b"\x12\x08"  # 2 span_id, 8 bytes
    out += span.span_id.to_bytes(8, "big")
    if span.parent_span_id is not None:
        out += b"\x22\x08"  # 4 parent_span_id
        out += span.parent_span_id.to_bytes(8, "big")
    out += _field(0x2A, span.name.encode())  # 5 name
    out += b"\x30" + _varint(span.kind)  # 6 kind
    out += b"\x39" + _QWORD.pack(span.start_ns)  # 7 start_time_unix_nano (fixed64)
    out += b"\x41" + _QWORD.pack(span.end_ns)  # 8 end_time_unix_nano
    out += _attributes(0x4A, span.attributes)  # 9 attributes
    for trace_id, span_id in span.links:  # 13 links: Link{1 trace_id, 2 span_id}
        out += _field(0x6A, b"\x0a\x10" + trace_id.to_bytes(16, "big") + b"\x12\x08" + span_id.to_bytes(8, "big"))
    if span.error is not None:  # 15 status: Status{2 message, 3 code}
        out += _field(0x7A, _field(0x12, span.error.encode()) + b"\x18" + _varint(_STATUS_ERROR))
    return bytes(out)


def encode_request(prefix: tuple[bytes, bytes], spans: Iterable[FinishedSpan]) -> bytes:
    """An ``ExportTraceServiceRequest``: one ResourceSpans with one ScopeSpans holding ``spans``.
    ``prefix`` is ``resource_prefix``'s output, the same for every request."""
    resource, scope = prefix
    encoded = b"".join(_field(0x12, encode_span(span)) for span in spans)  # ScopeSpans 2 spans
    scope_spans = _field(0x12, scope + encoded)  # ResourceSpans 2 scope_spans
    return _field(0x0A, resource + scope_spans)  # request 1 resource_spans


def resource_prefix(service_name: str) -> tuple[bytes, bytes]:
    """(the encoded ``resource`` field of ResourceSpans, the encoded ``scope`` field of ScopeSpans)."""
    resource = _attributes(0x0A, {"service.name": service_name, "telemetry.sdk.name": "mnx-gateway",
                                  "telemetry.sdk.language": "python"})
    scope = _field(0x0A, INSTRUMENTATION_SCOPE.encode()) + _field(0x12, __version__.encode())
    return _field(0x0A, resource), _field(0x0A, scope)


# -- export ---------------------------------------------------------------------------------

def headers_from_environment(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The collector's headers, ``key=value`` pairs separated by commas, values URL-encoded
    (the OpenTelemetry exporter variables; the traces-specific one wins, key by key)."""
    headers: dict[str, str] = {}
    for variable in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        for pair in environ.get(variable, "").split(","):
            key, equals, value = pair.partition("=")
            if equals and key.strip():
                headers[key.strip().lower()] = unquote(value.strip())
    return headers


class OtlpExporter:
    """Sends handed-over spans to ``endpoint`` from a thread of its own (see the module docstring)."""

    def __init__(self, endpoint: str, service_name: str, *,
                 post: Callable[[bytes], int] | None = None) -> None:
        self._endpoint = endpoint
        self._prefix = resource_prefix(service_name)
        # Bounded: appending to a full deque drops its oldest entry (counted in ``export``).
        self._pending: deque[Sequence[FinishedSpan]] = deque(maxlen=MAX_PENDING_BATCHES)
        self._wake = threading.Event()
        self._stopping = False
        self._client: httpx.Client | None = None
        self._post = post or self._post_over_http
        self._dropped = 0
        self._failed = 0
        self._last_problem = ""
        self._last_log = 0.0
        self._thread = threading.Thread(target=self._run, name="otlp-exporter", daemon=True)
        self._thread.start()

    def export(self, spans: Sequence[FinishedSpan]) -> None:
        """Hand over one turn's (or job's) spans; never waits, never fails."""
        pending = len(self._pending)
        if pending == MAX_PENDING_BATCHES:
            self._dropped += 1  # (the thread may take some meanwhile: a count, not a ledger)
        elif pending == WAKE_AT_PENDING:
            self._wake.set()
        self._pending.append(spans)

    def shutdown(self) -> None:
        """Send what is pending (within SHUTDOWN_TIMEOUT_SECONDS) and stop the thread."""
        self._stopping = True
        self._wake.set()
        self._thread.join(SHUTDOWN_TIMEOUT_SECONDS)

    def _run(self) -> None:
        while True:
            self._wake.wait(EXPORT_INTERVAL_SECONDS)
            self._wake.clear()
            stopping = self._stopping
            self._send_pending()
            if stopping:
                break
        if self._client is not None:
            self._client.close()

    def _send_pending(self) -> None:
        batch: list[FinishedSpan] = []
        while True:
            try:
                batch.extend(self._pending.popleft())
            except IndexError:  # none left
                break
            if len(batch) >= MAX_SPANS_PER_REQUEST:
                self._send(batch)
                batch = []
        if batch:
            self._send(batch)
        self._report_losses()

    def _send(self, spans: list[FinishedSpan]) -> None:
        try:
            status = self._post(encode_request(self._prefix, spans))
        except Exception as error:  # the collector is down or unreachable: drop, never block
            status = None
            problem = type(error).__name__
        else:
            problem = f"HTTP {status}"
        if status is None or not 200 <= status < 300:
            self._failed += len(spans)
            self._last_problem = problem
        # Said while the outage lasts (at most every _LOG_EVERY_SECONDS), not only once the queue
        # empties: under steady traffic to a collector that times out, it never would.
        self._report_losses()

    def _report_losses(self) -> None:
        if not (self._dropped or self._failed):
            return
        now = time.monotonic()
        if now - self._last_log < _LOG_EVERY_SECONDS and not self._stopping:
            return
        self._last_log = now
        if self._failed:
            log.warning("tracing: %d spans not accepted by the collector at %s (%s); dropped", self._failed,
                        self._endpoint, self._last_problem)
        if self._dropped:
            log.warning("tracing: %d turns' spans dropped: more were waiting for export than %d", self._dropped,
                        MAX_PENDING_BATCHES)
        self._dropped = self._failed = 0

    def _post_over_http(self, body: bytes) -> int:
        if self._client is None:
            self._client = httpx.Client(timeout=EXPORT_TIMEOUT_SECONDS, headers=headers_from_environment())
        response = self._client.post(self._endpoint, content=body,
                                     headers={"content-type": "application/x-protobuf"})
        return response.status_code
