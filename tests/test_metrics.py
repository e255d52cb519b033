"""GET /metrics (Prometheus text format) and the request id, through real gateways.

What an operator relies on: the exposition parses with Prometheus's own parser, the
counters move when chat turns, REST calls, learn jobs and errors happen, labels name route
templates and never a path, id, key or secret, the endpoint needs ``metrics:read``, and
every answer (errors and streams too) carries the ``X-Request-Id`` its log lines carry.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import KEY, PROVIDER_KEY, wait_until

SUBJECT = "metrics-subject"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(gateway: Any, key: str = KEY) -> Samples:
    response = httpx.get(gateway.url + "/metrics", headers={"x-mnexium-key": key}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(found for (sample, sample_labels), found in samples.items()
               if sample == name and wanted <= sample_labels)


def chat(gateway: Any, text: str, *, model: str = "gpt-4o-mini", stream: bool = False,
         headers: dict[str, str] | None = None, **mnx: Any) -> httpx.Response:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}],
            "mnx": {"subject_id": SUBJECT, "chat_id": "metrics-chat", "history": False, **mnx}}
    with httpx.Client(timeout=30) as client:
        response = client.post(gateway.url + "/v1/chat/completions", json=body,
                               headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY, **(headers or {})})
        response.read()
    return response


def test_a_chat_turn_a_rest_call_and_a_learn_job_move_the_counters(gateway_on):
    before = scrape(gateway_on)
    answered = chat(gateway_on, "My favorite fruit is blueberry.", learn=True, recall=True)
    assert answered.status_code == 200, answered.text
    with gateway_on.rest() as rest:
        assert rest.get("/memories", params={"subject_id": SUBJECT}).status_code == 200
    assert wait_until(lambda: value(scrape(gateway_on), "mnx_gateway_memories_learned_total") >= 1)
    after = scrape(gateway_on)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("mnx_gateway_requests_total", surface="openai", route="/v1/chat/completions", method="POST",
                 status="200") == 1
    assert moved("mnx_gateway_requests_total", surface="mnexium", route="/api/v1/memories", method="GET",
                 status="200") == 1
    assert moved("mnx_gateway_provider_request_duration_seconds_count", provider="openai") == 1
    # The fake provider reports 10 prompt and 5 completion tokens.
    assert moved("mnx_gateway_tokens_total", provider="openai", direction="in") == 10
    assert moved("mnx_gateway_tokens_total", provider="openai", direction="out") == 5
    for stage in ("options", "forward", "record"):
        assert moved("mnx_gateway_stage_duration_seconds_count", stage=stage) == 1, stage
    context_stages = {dict(labels)["stage"] for (name, labels), _ in after.items()
                      if name == "mnx_gateway_stage_duration_seconds_count"} - {"options", "forward", "record"}
    assert context_stages, "each context stage that ran is timed under its name"
    assert moved("mnx_gateway_memories_learned_total") == 1
    assert moved("mnx_gateway_jobs_completed_total") >= 1
    # Computed on scrape from the queue: the learn job is done, so nothing is waiting.
    assert value(after, "mnx_gateway_jobs_unfinished") == 0
    assert value(after, "mnx_gateway_oldest_job_age_seconds") == 0


def test_a_newer_fact_counts_a_superseded_memory(gateway):
    chat(gateway, "My favorite fruit is blueberry.", learn=True)
    assert wait_until(lambda: value(scrape(gateway), "mnx_gateway_memories_learned_total") == 1)
    chat(gateway, "My favorite fruit is strawberry.", learn=True)
    assert wait_until(lambda: value(scrape(gateway), "mnx_gateway_memories_learned_total") == 2)
    assert value(scrape(gateway), "mnx_gateway_memories_superseded_total") == 1


def test_a_provider_error_is_counted_by_provider_and_status(gateway):
    failed = chat(gateway, "hello", model="fail-500")
    assert failed.status_code >= 500
    samples = scrape(gateway)
    assert value(samples, "mnx_gateway_provider_errors_total", provider="openai") == 1
    assert value(samples, "mnx_gateway_requests_total", route="/v1/chat/completions",
                 status=str(failed.status_code)) == 1


def test_a_queued_job_shows_in_the_depth_and_age_gauges(start_gateway, storage_sqlite):
    # The extractor waits 2 s, so the learn job is still unfinished when the gateway is scraped.
    gateway = start_gateway(storage_sqlite, learning={"extractor": {
        "provider": "litellm", "model": "extractor-sleep-2"}})
    assert chat(gateway, "My favorite fruit is blueberry.", learn=True).status_code == 200
    samples = scrape(gateway)
    assert value(samples, "mnx_gateway_jobs_unfinished") == 1
    assert value(samples, "mnx_gateway_oldest_job_age_seconds") > 0


def test_labels_carry_route_templates_never_ids_paths_or_secrets(gateway):
    secret_id = "mem_topsecret1234"
    with gateway.rest() as rest:
        assert rest.get(f"/memories/{secret_id}").status_code == 404
        assert rest.get("/no/such/route/zzz-raw-path").status_code == 404
    chat(gateway, "hello", chat_id="chat-topsecret", subject_id="subject-topsecret")
    response = httpx.get(gateway.url + "/metrics", headers={"x-mnexium-key": KEY}, timeout=30)
    text = response.text
    for leaked in (secret_id, "zzz-raw-path", "chat-topsecret", "subject-topsecret", KEY, PROVIDER_KEY,
                   "project-a"):
        assert leaked not in text, leaked
    samples = scrape(gateway)
    assert value(samples, "mnx_gateway_requests_total", route="/api/v1/memories/{memory_id}", status="404") == 1
    assert value(samples, "mnx_gateway_requests_total", route="unmatched", status="404") == 1


def test_metrics_need_the_metrics_read_scope(start_gateway, storage_sqlite):
    keys = [{"name": "reader", "key": "mnx_live_metrics_reader", "scopes": ["metrics:read"]},
            {"name": "app", "key": "mnx_live_memories_only", "scopes": ["memories:read", "chat:write"]}]
    gateway = start_gateway(storage_sqlite, projects=[{"id": "project-a", "keys": keys}])
    refused = httpx.get(gateway.url + "/metrics", headers={"x-mnexium-key": "mnx_live_memories_only"})
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    assert "mnx_gateway" not in refused.text
    assert httpx.get(gateway.url + "/metrics").status_code == 401
    assert scrape(gateway, key="mnx_live_metrics_reader")


def test_metrics_off_serve_no_endpoint_but_keep_the_request_id(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite, server={"metrics": {"enabled": False}})
    response = httpx.get(gateway.url + "/metrics", headers={"x-mnexium-key": KEY})
    assert response.status_code == 404
    assert response.json()["error"] == "metrics_disabled"
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    assert chat(gateway, "hello").status_code == 200


# --- the request id ---------------------------------------------------------------------------


def test_a_sane_request_id_is_echoed_and_any_other_replaced(shared_gateway):
    sent = "req_01HZX9-abc.def:42"
    assert httpx.get(shared_gateway.url + "/health", headers={"x-request-id": sent}).headers["x-request-id"] == sent
    generated = httpx.get(shared_gateway.url + "/health").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert httpx.get(shared_gateway.url + "/health").headers["x-request-id"] != generated
    for insane in ("two words", "x" * 129, "<script>", "id\u00e9".encode()):
        echoed = httpx.get(shared_gateway.url + "/health", headers={"x-request-id": insane}).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", echoed), insane


def test_errors_and_streams_carry_the_request_id(shared_gateway):
    url = shared_gateway.url
    unauthenticated = httpx.get(url + "/api/v1/memories", headers={"x-request-id": "err-401"})
    assert (unauthenticated.status_code, unauthenticated.headers["x-request-id"]) == (401, "err-401")
    unrouted = httpx.get(url + "/nowhere", headers={"x-request-id": "err-404"})
    assert (unrouted.status_code, unrouted.headers["x-request-id"]) == (404, "err-404")
    failed = chat(shared_gateway, "hello", model="fail-502", headers={"x-request-id": "err-provider"})
    assert failed.status_code >= 500 and failed.headers["x-request-id"] == "err-provider"
    streamed = chat(shared_gateway, "stream me", stream=True, headers={"x-request-id": "stream-1"})
    assert streamed.status_code == 200 and "data:" in streamed.text
    assert streamed.headers["x-request-id"] == "stream-1"
    assert len(streamed.headers.get_list("x-request-id")) == 1


def test_log_records_written_for_a_request_carry_its_id(shared_gateway, caplog):
    with caplog.at_level(logging.WARNING, logger="gateway"):
        failed = chat(shared_gateway, "hello", model="fail-500", headers={"x-request-id": "trace-me-7"})
        assert failed.status_code >= 500
        assert wait_until(lambda: any(getattr(r, "request_id", None) == "trace-me-7" for r in caplog.records))
    provider_lines = [record for record in caplog.records if record.name == "gateway.upstream"]
    assert provider_lines and all(record.request_id == "trace-me-7" for record in provider_lines)


def test_a_record_written_outside_any_request_says_so(shared_gateway):
    httpx.get(shared_gateway.url + "/health")  # the gateway (and its log record factory) is up
    record = logging.getLogRecordFactory()("gateway.test", logging.INFO, __file__, 1, "m", (), None)
    assert record.request_id == "-"


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_the_served_log_carries_the_request_id_in_either_format(provider, tmp_path, log_format):
    from tests.fake_upstream import free_socket

    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    config = {
        "server": {"port": port, "log_format": log_format, "log_level": "warning"},
        "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "gateway.db")}},
        "memory": {"vectors": {"edge": {"path": str(tmp_path / "memories")}}},
        "projects": [{"id": "default", "keys": [{"key": KEY}]}],
        "providers": {"openai": {"api_base": provider.url + "/v1"}},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / "gateway.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(path)],
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=log, stderr=log)
    try:
        def up() -> bool:
            try:
                return httpx.get(url + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        assert wait_until(up, timeout=60), log_path.read_text()
        failed = httpx.post(url + "/v1/chat/completions", timeout=10, json={
            "model": "fail-500", "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY, "x-request-id": "from-the-client-9"})
        assert failed.headers["x-request-id"] == "from-the-client-9"
        assert wait_until(lambda: "from-the-client-9" in log_path.read_text()), log_path.read_text()
    finally:
        process.terminate()
        process.wait()
    line = next(line for line in log_path.read_text().splitlines() if "from-the-client-9" in line)
    assert PROVIDER_KEY not in log_path.read_text()
    if log_format == "json":
        entry = json.loads(line)
        assert entry["request_id"] == "from-the-client-9"
        assert entry["level"] == "WARNING" and entry["logger"] == "gateway.upstream"
        assert "answered HTTP 500" in entry["message"]
    else:
        assert "WARNING gateway.upstream [from-the-client-9]: openai answered HTTP 500" in line


def test_the_json_log_format_writes_a_traceback_redacted():
    """A provider's error text can carry the key it was sent; the JSON format must write the
    traceback redaction made, not format it again from the exception."""
    import io
    import logging

    from gateway.log_format import JsonFormatter
    from gateway.redaction import install_log_redaction

    install_log_redaction()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.json.redaction")
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError("Incorrect API key provided: sk-proj-SECRETSECRET123456")
        except RuntimeError:
            logger.error("provider call failed", exc_info=True)
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert "RuntimeError" in written and "SECRETSECRET" not in written
