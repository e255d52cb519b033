"""When the provider fails: its status comes back, in the caller's format, and nothing is logged."""

from __future__ import annotations

import socket
import time

import httpx
import openai
import pytest

from tests.conftest import KEY, PROVIDER_KEY, wait_until


def history_of(gateway, chat_id):
    with gateway.rest() as rest:
        return rest.get("/chat/history/read", params={"chat_id": chat_id}).json()["messages"]


@pytest.mark.parametrize("status, exception", [(400, openai.BadRequestError), (401, openai.AuthenticationError),
                                               (429, openai.RateLimitError), (500, openai.InternalServerError),
                                               (503, openai.InternalServerError)])
def test_provider_errors_keep_their_status_and_log_nothing(gateway, status, exception):
    client = gateway.openai()
    with pytest.raises(exception) as error:
        client.chat.completions.create(model=f"fail-{status}", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"mnx": {"subject_id": "s", "chat_id": "failing"}})
    assert error.value.status_code == status
    assert f"provider failed with {status}" in error.value.message
    assert error.value.response.headers["x-mnx-chat-id"] == "failing"
    assert history_of(gateway, "failing") == []


def test_a_streamed_request_whose_provider_fails_gets_a_json_error_not_a_stream(gateway):
    response = httpx.post(gateway.url + "/v1/chat/completions",
                          headers={"authorization": f"Bearer {KEY}", "x-openai-key": PROVIDER_KEY},
                          json={"model": "fail-429", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["message"].endswith("provider failed with 429")


def test_anthropic_errors_through_litellm_keep_their_status(gateway):
    with pytest.raises(openai.RateLimitError):
        gateway.openai().chat.completions.create(
            model="anthropic/fail-429", max_tokens=10, messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-anthropic-key": "k"})


def test_read_timeout_from_config_is_a_504(start_gateway, storage_sqlite, provider):
    gw = start_gateway(storage_sqlite, providers={
        "openai": {"api_base": provider.url + "/v1", "timeout": {"connect": 1, "read": 0.3}}})
    with pytest.raises(openai.APIStatusError) as error:
        gw.openai().chat.completions.create(model="sleep-2", messages=[{"role": "user", "content": "x"}],
                                            extra_body={"mnx": {"chat_id": "slow"}})
    assert error.value.status_code == 504
    assert error.value.code == "upstream_timeout"
    assert history_of(gw, "slow") == []


def test_unreachable_provider_is_a_502(start_gateway, storage_sqlite):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    gw = start_gateway(storage_sqlite, providers={"openai": {"api_base": f"http://127.0.0.1:{closed_port}/v1"}})
    with pytest.raises(openai.APIStatusError) as error:
        gw.openai().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert error.value.status_code == 502 and error.value.code == "upstream_unreachable"


def test_a_stream_cut_off_by_the_provider_is_not_logged_as_a_turn(gateway):
    stream = gateway.openai().chat.completions.create(
        model="cut-stream", stream=True, messages=[{"role": "user", "content": "x"}],
        extra_body={"mnx": {"subject_id": "s", "chat_id": "cut"}})
    with pytest.raises(openai.APIError):
        list(stream)
    assert history_of(gateway, "cut") == []


def test_a_client_that_disconnects_mid_stream_cancels_the_provider_request(gateway):
    gateway.provider.stream_cancelled.clear()
    with httpx.stream("POST", gateway.url + "/v1/chat/completions",
                      headers={"authorization": f"Bearer {KEY}", "x-openai-key": PROVIDER_KEY},
                      json={"model": "slow-stream", "stream": True, "messages": [{"role": "user", "content": "x"}],
                            "mnx": {"subject_id": "s", "chat_id": "hung-up"}}) as response:
        chunks = response.iter_bytes()
        next(chunks)
        next(chunks)
    # The provider would stream for 10 s; it must see its connection closed long before.
    assert wait_until(gateway.provider.stream_cancelled.is_set, timeout=3)
    assert history_of(gateway, "hung-up") == []


@pytest.mark.parametrize("path, body, key_header", [
    ("/v1/chat/completions", {"model": "anthropic/fail-503", "max_tokens": 5,
                              "messages": [{"role": "user", "content": "x"}]}, "x-anthropic-key"),
    ("/v1/messages", {"model": "openai/fail-503", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
     "x-openai-key"),
    ("/v1/responses", {"model": "anthropic/fail-503", "max_output_tokens": 5, "input": "x"}, "x-anthropic-key"),
    ("/v1beta/models/fail-503:generateContent", {"contents": [{"role": "user", "parts": [{"text": "x"}]}]},
     "x-openai-key"),
])
def test_a_failing_provider_behind_litellm_is_called_once_and_its_error_carries_no_traceback(
        gateway, path, body, key_header):
    """The gateway does not retry a provider on the caller's behalf (the client's SDK decides), on any
    surface; and what the caller reads of the error is a message, not the bridge's Python traceback."""
    response = httpx.post(gateway.url + path, json=body, timeout=30,
                          headers={"x-mnexium-key": KEY, key_header: PROVIDER_KEY})
    assert response.status_code == 503, response.text
    assert len(gateway.forwarded()) == 1
    assert "Traceback" not in response.text and "site-packages" not in response.text


def test_a_provider_too_slow_behind_litellm_is_a_504_within_the_configured_time(start_gateway, storage_sqlite,
                                                                               provider):
    gw = start_gateway(storage_sqlite, providers={
        "openai": {"api_base": provider.url + "/v1", "timeout": {"connect": 1, "read": 0.5}}})
    started = time.monotonic()
    response = httpx.post(gw.url + "/v1/messages", timeout=30, headers={"x-mnexium-key": KEY,
                                                                         "x-openai-key": PROVIDER_KEY},
                          json={"model": "openai/sleep-3", "max_tokens": 5,
                                "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 504, response.text
    assert response.json()["error"]["type"] == "api_error" and "Traceback" not in response.text
    assert time.monotonic() - started < 2.5  # one attempt, not LiteLLM's retries


def test_what_litellm_cannot_translate_comes_back_without_its_traceback(gateway):
    response = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                          headers={"x-mnexium-key": KEY, "x-anthropic-key": PROVIDER_KEY},
                          json={"model": "anthropic/claude-3-5-haiku", "max_tokens": 5,
                                # Valid for OpenAI; LiteLLM has no Anthropic translation for it.
                                "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []},
                                "messages": [{"role": "user", "content": "x"}]})
    assert 400 <= response.status_code < 600 and response.json()["error"]["message"].startswith("provider error: ")
    assert "Traceback" not in response.text and "site-packages" not in response.text
