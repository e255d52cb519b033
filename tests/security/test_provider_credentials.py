"""What goes upstream with a provider call: the right key, never the project key, and no
cookie another tenant's call received.

Findings kept closed here: with the project key in both ``x-mnexium-key`` and
``Authorization: Bearer``, the provider received ``Bearer <project key>`` (and it took
precedence over the configured provider key); and the pooled provider client kept the
``Set-Cookie`` of one project's call and sent it with the next project's.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import KEY, KEY_B

CONFIGURED = {"openai": "sk-configured-openai-key", "anthropic": "sk-ant-configured-key"}


@pytest.fixture
def configured_gateway(start_gateway, storage_sqlite, provider):
    return start_gateway(storage_sqlite, providers={
        "openai": {"api_base": provider.url + "/v1", "api_key": CONFIGURED["openai"]},
        "anthropic": {"api_base": provider.url, "api_key": CONFIGURED["anthropic"]},
        "gemini": {"api_base": provider.url + "/v1beta"},
    })


def _chat(gateway, headers: dict[str, str], model: str = "gpt-4o-mini", path: str = "/v1/chat/completions",
          **extra) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "mnx": {"log": False}, **extra}
    return httpx.post(gateway.url + path, json=body, headers=headers, timeout=30)


def _sent_keys(gateway) -> list[str]:
    return [value for request in gateway.forwarded() for name, value in request["headers"].items()
            if name in ("authorization", "x-api-key", "x-goog-api-key")]


@pytest.mark.parametrize("headers", [
    {"x-mnexium-key": KEY, "authorization": f"Bearer {KEY}"},          # the same key in both
    {"x-mnexium-key": KEY, "authorization": f"Bearer {KEY_B}"},        # another project's key as the "provider" key
    {"x-mnexium-key": KEY, "x-openai-key": KEY},                        # in the provider-key header itself
], ids=["bearer-same", "bearer-other-project", "x-openai-key"])
def test_a_project_key_is_never_sent_to_the_provider(configured_gateway, headers):
    response = _chat(configured_gateway, headers)
    assert response.status_code == 200, response.text
    assert _sent_keys(configured_gateway) == [f"Bearer {CONFIGURED['openai']}"]


def test_a_project_key_in_the_anthropic_sdks_key_header_is_not_the_anthropic_key(configured_gateway):
    response = _chat(configured_gateway, {"x-mnexium-key": KEY, "x-api-key": KEY}, model="claude-3-5-haiku",
                     path="/v1/messages", max_tokens=20)
    assert response.status_code == 200, response.text
    assert _sent_keys(configured_gateway) == [CONFIGURED["anthropic"]]


def test_without_a_configured_key_a_project_key_is_not_used_in_its_place(gateway):
    response = _chat(gateway, {"x-mnexium-key": KEY, "authorization": f"Bearer {KEY}"})
    assert response.status_code == 400
    assert response.json()["error"] == "openai_key_required"
    assert gateway.forwarded() == []


def test_a_real_provider_bearer_still_is_the_provider_key(configured_gateway):
    response = _chat(configured_gateway, {"x-mnexium-key": KEY, "authorization": "Bearer sk-callers-own-key"})
    assert response.status_code == 200
    assert _sent_keys(configured_gateway) == ["Bearer sk-callers-own-key"]


@pytest.mark.parametrize("model, path", [
    ("gpt-4o-mini", "/v1/chat/completions"),          # native passthrough (the gateway's pooled client)
    ("claude-3-5-haiku", "/v1/chat/completions"),     # LiteLLM's own HTTP client
    ("gpt-4o-mini", "/v1/messages"),                  # LiteLLM through the OpenAI SDK's client
], ids=["native", "litellm-http", "litellm-openai-client"])
def test_a_providers_cookie_is_not_sent_with_another_projects_request(configured_gateway, model, path):
    extra = {"max_tokens": 20} if path == "/v1/messages" else {}
    first = _chat(configured_gateway, {"x-mnexium-key": KEY}, model=f"{model}-set-cookie", path=path, **extra)
    assert first.status_code == 200, first.text
    assert "set-cookie" not in first.headers  # nor is it passed to the client
    second = _chat(configured_gateway, {"x-mnexium-key": KEY_B}, model=model, path=path, **extra)
    assert second.status_code == 200, second.text
    assert len(configured_gateway.forwarded()) == 2
    assert all("cookie" not in request["headers"] for request in configured_gateway.forwarded())
