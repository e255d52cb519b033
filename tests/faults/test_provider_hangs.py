"""A provider that never answers, one that answers late, and a client that gives up waiting.

Faults injected (through the fake provider's model names):

* ``hang``: the provider accepts the request and never answers. The gateway must answer
  504 after its configured read timeout (not hold the client for 600 s), say so in a
  log line that carries no key, close the provider connection, and store nothing.
* ``sleep-<secs>``: headers arrive late but within the timeout: a normal answer,
  recorded exactly once (the gateway does not retry a slow provider).
* the client goes away (its own timeout, a closed socket) while a non-streamed answer is
  pending, or mid-stream: the gateway must close the provider connection at once (the
  provider stops generating, and billing) and record nothing of the abandoned turn, on
  the native path and through LiteLLM.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import time

import httpx
import openai
import pytest

from tests.conftest import KEY, PROVIDER_KEY, wait_until
from tests.faults.conftest import (PROVIDER_HEADERS, TURN_TEXT, error_code, history_of, jobs_of, providers_with,
                                   turn_request, until_stable)

HEADERS = {"x-mnexium-key": KEY, **PROVIDER_HEADERS}
READ_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def impatient(module_gateway, provider):
    """A gateway that waits 1 s for a provider's answer."""
    return module_gateway(providers=providers_with(provider.url, read=READ_TIMEOUT))


@pytest.fixture(scope="module")
def patient(module_gateway, provider):
    """A gateway that would wait 30 s: what ends a call there is the client leaving."""
    return module_gateway(providers=providers_with(provider.url, read=30))


def chat_id() -> str:
    return f"chat-{secrets.token_hex(4)}"


def unique(model: str) -> str:
    """A model name no other test uses, so ``provider.abandoned`` entries are this test's."""
    return f"{model}-{secrets.token_hex(4)}"


# --- a provider that never answers ---------------------------------------------------------------

@pytest.mark.parametrize("surface, model, stream", [
    ("chat", "gpt-hang", False),          # native passthrough
    ("chat", "gpt-hang", True),           # streamed: the status line is still ours to set
    ("chat", "claude-hang", False),       # through LiteLLM
    ("messages", "claude-hang", False),
    ("responses", "gpt-hang", False),
    ("gemini", "gemini-hang", False),
])
def test_a_provider_that_never_answers_is_a_504_after_the_read_timeout_and_nothing_is_stored(
        impatient, provider, caplog, surface, model, stream):
    gw, chat, model = impatient, chat_id(), unique(model)
    path, body, extra = turn_request(surface, model, chat, stream=stream)
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    response = httpx.post(gw.url + path, json=body, headers={**HEADERS, **extra}, timeout=30)
    elapsed = time.monotonic() - started

    assert response.status_code == 504, response.text
    assert response.headers["content-type"] == "application/json"
    assert error_code(surface, response.json()) == "upstream_timeout"
    assert READ_TIMEOUT * 0.9 <= elapsed < READ_TIMEOUT + 2.5, elapsed  # the configured 1 s, not the default 5
    # Asked once: no retry by the gateway (nor by LiteLLM under it) stretches the wait.
    assert len([r for r in provider.requests if model in r["path"] or r["body"].get("model") == model]) == 1
    # The gateway gave up on the provider connection rather than leaving it open.
    assert wait_until(lambda: any(m == model for m, _ in provider.abandoned), timeout=3)
    warnings = [r for r in caplog.records if r.name == "gateway.upstream" and r.levelno == logging.WARNING]
    assert warnings, caplog.text
    assert PROVIDER_KEY not in caplog.text and KEY not in caplog.text
    assert history_of(gw.url, chat) == []
    assert jobs_of(gw.url) == []


def test_the_504_of_a_hung_provider_reaches_the_openai_sdk_as_a_status_error(impatient):
    chat = chat_id()
    with pytest.raises(openai.APIStatusError) as error:
        impatient.openai().chat.completions.create(model=unique("gpt-hang"),
                                                   messages=[{"role": "user", "content": "x"}],
                                                   extra_body={"mnx": {"chat_id": chat, "learn": True}})
    assert error.value.status_code == 504 and error.value.code == "upstream_timeout"
    assert error.value.response.headers["x-mnx-chat-id"] == chat
    assert history_of(impatient.url, chat) == []


# --- slow headers, within the timeout ------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_whose_headers_come_late_but_in_time_is_answered_and_recorded_once(impatient, provider, stream):
    gw, chat, subject = impatient, chat_id(), f"late-{stream}"
    # 0.7 s of silence before the headers, under the 1 s read timeout.
    path, body, _ = turn_request("chat", "sleep-0.7", chat, stream=stream, learn="force", subject_id=subject)
    started = time.monotonic()
    response = httpx.post(gw.url + path, json=body, headers=HEADERS, timeout=30)
    assert response.status_code == 200, response.text
    assert time.monotonic() - started >= 0.7
    if stream:
        assert response.text.rstrip().endswith("data: [DONE]")
    else:
        assert response.json()["choices"][0]["message"]["content"] == "echo: " + TURN_TEXT
    assert len([r for r in provider.requests if r["body"].get("model") == "sleep-0.7"]) == 1  # not retried
    assert [(m["role"], m["content"]) for m in history_of(gw.url, chat)] == [
        ("user", TURN_TEXT), ("assistant", "echo: " + TURN_TEXT)]
    # One learn job, run once: one memory.
    assert wait_until(lambda: not jobs_of(gw.url))
    with gw.rest() as rest:
        learned = rest.get("/memories", params={"subject_id": subject}).json()["data"]
    assert len(learned) == 1


# --- the client gives up ---------------------------------------------------------------------

def warm_up(gw, surface: str, model: str) -> None:
    """One answered call on the same surface and path first: LiteLLM's first call on a bridge
    spends seconds setting up before it sends anything (a client leaving then leaves nothing
    for the gateway to close)."""
    path, body, extra = turn_request(surface, model, chat_id(), log=False, learn=False)
    response = httpx.post(gw.url + path, json=body, headers={**HEADERS, **extra}, timeout=30)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("surface, model", [
    ("chat", "gpt-hang"),         # native passthrough
    ("chat", "claude-hang"),      # through LiteLLM
    ("messages", "claude-hang"),
    ("messages", "gpt-hang"),     # through LiteLLM's Messages bridge
    ("responses", "gpt-hang"),
    ("gemini", "gemini-hang"),
])
def test_a_client_that_times_out_on_a_non_streamed_answer_makes_the_gateway_drop_the_provider_call(
        patient, provider, surface, model):
    gw, chat, model = patient, chat_id(), unique(model)
    warm_up(gw, surface, model.replace("hang", "warm"))
    path, body, extra = turn_request(surface, model, chat)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.url + path, json=body, headers={**HEADERS, **extra}, timeout=httpx.Timeout(5, read=0.8))
    left = time.time()
    # The call was out (else there would be nothing to close) ...
    assert any(r["body"].get("model") == model or model in r["path"] for r in provider.requests)
    # Well before the gateway's own 30 s read timeout, the provider sees its connection closed.
    assert wait_until(lambda: any(m == model for m, _ in provider.abandoned), timeout=3), provider.abandoned
    closed_at = next(at for m, at in provider.abandoned if m == model)
    assert closed_at - left < 2
    assert history_of(gw.url, chat) == []
    assert until_stable(lambda: jobs_of(gw.url) == [], seconds=0.5)


def test_a_client_that_closes_its_socket_on_a_non_streamed_answer_makes_the_gateway_drop_the_provider_call(
        patient, provider):
    gw, chat, model = patient, chat_id(), unique("gpt-hang")
    path, body, _ = turn_request("chat", model, chat)
    payload = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items()) + "\r\n")
    with socket.create_connection(("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(head.encode() + payload)
        assert wait_until(lambda: any(r["body"].get("model") == model for r in provider.requests))
        time.sleep(0.3)
    left = time.time()
    assert wait_until(lambda: any(m == model for m, _ in provider.abandoned), timeout=3), provider.abandoned
    assert next(at for m, at in provider.abandoned if m == model) - left < 2
    assert history_of(gw.url, chat) == []
    assert until_stable(lambda: jobs_of(gw.url) == [], seconds=0.5)


@pytest.mark.parametrize("surface", ["chat", "messages", "gemini"])
def test_a_client_that_leaves_mid_stream_cancels_the_provider_stream_and_nothing_is_learned(patient, provider,
                                                                                            surface):
    """tests/test_upstream_failures.py covers the native Chat Completions stream's history; here
    learning is asked for too, and Messages and Gemini reach the OpenAI-compatible provider's
    stream through LiteLLM's translation."""
    gw, chat = patient, chat_id()
    provider.stream_cancelled.clear()
    path, body, extra = turn_request(surface, "slow-stream", chat, stream=True)
    with httpx.stream("POST", gw.url + path, json=body, headers={**HEADERS, **extra}, timeout=30) as response:
        assert response.status_code == 200
        events = response.iter_lines()
        seen = [line for line in (next(events) for _ in range(6)) if line.startswith("data:")]
        assert seen  # the stream was flowing when the client left
    # The provider would stream for 10 s; it must see its connection closed long before.
    assert wait_until(provider.stream_cancelled.is_set, timeout=3)
    assert history_of(gw.url, chat) == []
    assert until_stable(lambda: jobs_of(gw.url) == [], seconds=0.5)
