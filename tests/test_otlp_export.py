"""The OTLP encoding and export of spans (gateway/otlp_export.py), checked against OpenTelemetry's
own generated protobuf classes: a collector must read exactly what the gateway meant to send."""

from __future__ import annotations

import logging
import struct
import threading
import time

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from gateway import otlp_export
from gateway.otlp_export import (KIND_CLIENT, KIND_SERVER, FinishedSpan, OtlpExporter, encode_request,
                                 headers_from_environment, resource_prefix)
from tests.conftest import wait_until

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736


def _decoded(spans: list[FinishedSpan], service: str = "svc") -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(encode_request(resource_prefix(service), spans))


def _value(any_value):  # noqa: ANN001, ANN202 (a protobuf AnyValue)
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in any_value.array_value.values]
    return getattr(any_value, kind)


def test_every_field_of_a_span_reads_back_as_sent():
    root = FinishedSpan("mnx.turn", TRACE_ID, 0x00F067AA0BA902B7, 0x1111111111111111, KIND_SERVER,
                        1_700_000_000_123_456_789, 1_700_000_000_223_456_789,
                        {"mnx.surface": "chat", "http.response.status_code": 502, "mnx.streamed": False,
                         "ratio": 0.25, "negative": -7, "big": 2**63 - 1, "ids": ["m1", "m2"], "counts": [3, 4],
                         "unicode": "café ☕"},
                        links=((0xABC, 0xDEF),), error="upstream_error")
    request = _decoded([root], service="gateway-x")
    (resource_spans,) = request.resource_spans
    resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "gateway-x"
    (scope_spans,) = resource_spans.scope_spans
    assert scope_spans.scope.name == "mnx_gateway"
    (span,) = scope_spans.spans
    assert int.from_bytes(span.trace_id, "big") == TRACE_ID
    assert span.span_id.hex() == "00f067aa0ba902b7" and span.parent_span_id.hex() == "1111111111111111"
    assert span.name == "mnx.turn" and span.kind == Span.SPAN_KIND_SERVER
    assert span.start_time_unix_nano == 1_700_000_000_123_456_789
    assert span.end_time_unix_nano == 1_700_000_000_223_456_789
    assert {a.key: _value(a.value) for a in span.attributes} == {
        "mnx.surface": "chat", "http.response.status_code": 502, "mnx.streamed": False, "ratio": 0.25,
        "negative": -7, "big": 2**63 - 1, "ids": ["m1", "m2"], "counts": [3, 4], "unicode": "café ☕"}
    assert [(int.from_bytes(link.trace_id, "big"), int.from_bytes(link.span_id, "big")) for link in span.links] == [
        (0xABC, 0xDEF)]
    assert span.status.code == Status.STATUS_CODE_ERROR and span.status.message == "upstream_error"


def test_a_root_span_has_no_parent_and_an_ok_span_no_status():
    span = FinishedSpan("mnx.forward", TRACE_ID, 5, None, KIND_CLIENT, 10, 20, {})
    (decoded,) = _decoded([span]).resource_spans[0].scope_spans[0].spans
    assert decoded.parent_span_id == b"" and decoded.kind == Span.SPAN_KIND_CLIENT
    assert decoded.status.code == Status.STATUS_CODE_UNSET and not decoded.attributes


def test_many_spans_in_one_request_keep_their_order_and_recurring_attributes():
    spans = [FinishedSpan(f"s{i}", TRACE_ID, i + 1, None, KIND_CLIENT, i, i + 1, {"mnx.provider": "openai", "n": i})
             for i in range(300)]
    decoded = _decoded(spans).resource_spans[0].scope_spans[0].spans
    assert [span.name for span in decoded] == [f"s{i}" for i in range(300)]
    assert all({a.key: _value(a.value) for a in span.attributes} == {"mnx.provider": "openai", "n": i}
               for i, span in enumerate(decoded))


def test_a_large_float_and_a_long_text_are_encoded_whole():
    text = "x" * 70_000  # a length over two varint bytes
    span = FinishedSpan("s", TRACE_ID, 1, None, KIND_CLIENT, 0, 1, {"text": text, "f": struct.unpack("<d", struct.pack(
        "<d", 1e300))[0]})
    (decoded,) = _decoded([span]).resource_spans[0].scope_spans[0].spans
    values = {a.key: _value(a.value) for a in decoded.attributes}
    assert values == {"text": text, "f": 1e300}


def test_collector_headers_come_from_the_standard_variables():
    environ = {"OTEL_EXPORTER_OTLP_HEADERS": "api-key=general,x-team=a%2Cb , broken",
               "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "API-Key=traces%3D1"}
    assert headers_from_environment(environ) == {"api-key": "traces=1", "x-team": "a,b"}
    assert headers_from_environment({}) == {}


def _span(number: int) -> FinishedSpan:
    return FinishedSpan("s", TRACE_ID, number, None, KIND_CLIENT, 0, 1, {"n": number})


def test_a_collector_that_is_down_costs_the_gateway_nothing_but_a_log_line(caplog):
    exporter = OtlpExporter("http://127.0.0.1:9/v1/traces", "svc")  # port 9: nothing listens
    with caplog.at_level(logging.WARNING, logger="gateway.tracing"):
        for number in range(1, 11):
            exporter.export([_span(number)])  # never raises, never waits
        exporter.shutdown()
    assert "10 spans not accepted by the collector" in caplog.text


def test_a_collector_that_keeps_failing_is_reported_while_spans_keep_coming(monkeypatch, caplog):
    """The loss is logged during the outage, not only once the queue runs empty (under steady
    traffic to a collector that answers slowly and badly, it never does)."""
    monkeypatch.setattr(otlp_export, "MAX_SPANS_PER_REQUEST", 2)
    monkeypatch.setattr(otlp_export, "_LOG_EVERY_SECONDS", 0.1)

    def failing_collector(body: bytes) -> int:
        time.sleep(0.05)  # slower than the spans arrive
        return 503

    exporter = OtlpExporter("unused", "svc", post=failing_collector)
    stop = threading.Event()

    def traffic() -> None:
        number = 1
        while not stop.is_set():
            exporter.export([_span(number)])
            number += 1
            time.sleep(0.005)

    feeder = threading.Thread(target=traffic)
    with caplog.at_level(logging.WARNING, logger="gateway.tracing"):
        feeder.start()
        try:
            assert wait_until(lambda: "not accepted by the collector" in caplog.text, timeout=5), caplog.text
            assert "HTTP 503" in caplog.text
        finally:
            stop.set()
            feeder.join()
            exporter.shutdown()


def test_long_texts_are_encoded_but_not_kept_in_the_attribute_cache():
    text = "Ann keeps bees on her roof in Lisbon " * 10
    span = FinishedSpan("s", TRACE_ID, 1, None, KIND_CLIENT, 0, 1, {"mnx.stage.text": text, "mnx.stage": "recall"})
    request = _decoded([span])
    values = {a.key: _value(a.value) for a in request.resource_spans[0].scope_spans[0].spans[0].attributes}
    assert values["mnx.stage.text"] == text
    cached = {value for (_, _, value) in otlp_export._encoded_pairs}
    assert text not in cached and "recall" in cached


def test_spans_past_the_bound_are_dropped_oldest_first(monkeypatch, caplog):
    monkeypatch.setattr(otlp_export, "MAX_PENDING_BATCHES", 50)
    monkeypatch.setattr(otlp_export, "WAKE_AT_PENDING", 10**9)
    monkeypatch.setattr(otlp_export, "EXPORT_INTERVAL_SECONDS", 0.05)
    release = threading.Event()
    first_post = threading.Event()
    received: list[int] = []

    def slow_collector(body: bytes) -> int:
        first_post.set()
        release.wait(10)  # a collector far slower than the gateway
        spans = ExportTraceServiceRequest.FromString(body).resource_spans[0].scope_spans[0].spans
        received.extend(int.from_bytes(span.span_id, "big") for span in spans)
        return 200

    exporter = OtlpExporter("unused", "svc", post=slow_collector)
    exporter.export([_span(1)])
    assert first_post.wait(5)  # span 1 is on its way; the rest wait behind it
    for number in range(2, 202):
        exporter.export([_span(number)])
    release.set()
    with caplog.at_level(logging.WARNING, logger="gateway.tracing"):
        exporter.shutdown()
    # What was in flight, then the newest 50: the 150 oldest waiting were dropped, and said so.
    assert received == [1, *range(152, 202)]
    assert "150 turns' spans dropped" in caplog.text


def test_a_burst_wakes_the_exporter_before_its_interval(monkeypatch):
    monkeypatch.setattr(otlp_export, "EXPORT_INTERVAL_SECONDS", 30.0)
    monkeypatch.setattr(otlp_export, "WAKE_AT_PENDING", 5)
    received: list[bytes] = []
    exporter = OtlpExporter("unused", "svc", post=lambda body: received.append(body) or 200)
    try:
        for number in range(1, 8):
            exporter.export([_span(number)])
        assert wait_until(lambda: bool(received), timeout=5)  # long before 30 s
    finally:
        exporter.shutdown()


@pytest.mark.parametrize("header", ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                                    " 00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01 "])
def test_a_valid_traceparent_is_read(header):
    from gateway.trace_spans import parse_traceparent
    assert parse_traceparent(header) == (TRACE_ID, 0x00F067AA0BA902B7, True)


@pytest.mark.parametrize("header", ["", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                                    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                                    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                                    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"])
def test_an_invalid_traceparent_starts_a_new_trace(header):
    from gateway.trace_spans import parse_traceparent
    assert parse_traceparent(header) is None


def test_sampling_by_ratio_follows_the_trace_id_and_a_callers_decision():
    from gateway.config import TracingConfig
    from gateway.trace_spans import Tracer
    kept: list[FinishedSpan] = []
    half = Tracer(TracingConfig(enabled=True, sample_ratio=0.5), kept.extend)
    sampled = sum(half.begin_turn("chat", {}, ()) is not None for _ in range(4000))
    assert 1700 < sampled < 2300
    none = Tracer(TracingConfig(enabled=True, sample_ratio=0.0), kept.extend)
    assert all(none.begin_turn("chat", {}, ()) is None for _ in range(200))
    # A caller's sampled traceparent is followed even at ratio 0, and its unsampled one at ratio 1.
    assert none.begin_turn("chat", {"traceparent": f"00-{TRACE_ID:032x}-00f067aa0ba902b7-01"}, ()) is not None
    every = Tracer(TracingConfig(enabled=True, sample_ratio=1.0), kept.extend)
    assert every.begin_turn("chat", {"traceparent": f"00-{TRACE_ID:032x}-00f067aa0ba902b7-00"}, ()) is None
