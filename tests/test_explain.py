"""mnx.explain (dry run): the request the provider would get, stage by stage, with nothing called
and nothing written. Through the real gateway; the CLI on a request file too."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
import yaml

from tests.conftest import KEY, PROVIDER_KEY, wait_until

HEADERS = {"authorization": f"Bearer {KEY}", "x-openai-key": PROVIDER_KEY}


def no_jobs(gateway) -> bool:
    with gateway.rest() as rest:
        return rest.get("/jobs").json()["data"] == []


def seed(gateway, subject: str) -> None:
    with gateway.rest() as rest:
        assert rest.post("/prompts", json={"name": "house", "prompt_text": "You are the house assistant.",
                                           "is_default": True}).status_code in (200, 201)
        assert rest.post("/memories", json={"subject_id": subject, "text": "User is allergic to peanuts"}
                         ).status_code in (200, 201)
        assert rest.put("/state/task", json={"value": {"step": 3}}, headers={"x-subject-id": subject}
                        ).status_code in (200, 201)
    client = gateway.openai()
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "I have a cat."}],
                                   extra_body={"mnx": {"subject_id": subject, "chat_id": "c1", "learn": False}})


def explain(gateway, subject: str, **mnx) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", headers=HEADERS, timeout=30, json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What am I allergic to?"}],
        "mnx": {"subject_id": subject, "chat_id": "c1", "recall": True, "learn": True,
                "state": {"load": True, "key": "task"}, "explain": True, **mnx}})


def test_explain_shows_the_forwarded_request_and_each_stage_without_calling_or_writing(gateway):
    seed(gateway, "ex-user")
    assert wait_until(lambda: no_jobs(gateway))
    forwarded_before = len(gateway.forwarded())
    with gateway.rest() as rest:
        history_before = rest.get("/chat/history/read", params={"chat_id": "c1"}).json()["messages"]

    answer = explain(gateway, "ex-user")
    assert answer.status_code == 200
    body = answer.json()
    assert body["object"] == "mnx.explain" and body["provider"] == "openai" and body["via"] == "native"
    assert body["url"].endswith("/v1/chat/completions")
    messages = body["request"]["messages"]
    # Exactly the contract's order: one system message (prompt, state, memories), history, the question.
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert "You are the house assistant." in messages[0]["content"]
    assert "peanuts" in messages[0]["content"] and '"step": 3' in messages[0]["content"]
    assert messages[1]["content"] == "I have a cat." and messages[-1]["content"] == "What am I allergic to?"
    stages = {stage["stage"]: stage for stage in body["stages"]}
    assert stages["system_prompt"]["text"] == "You are the house assistant."
    assert "peanuts" in stages["memories"]["text"] and stages["memories"]["text_placement"] == "system"
    assert stages["history"]["messages"] == 2 and stages["history"]["tokens"] > 0
    assert all(stage["ms"] >= 0 for stage in body["stages"])
    assert body["tokens"]["total"] == body["tokens"]["context"] + body["tokens"]["request_messages"] > 0
    assert body["tokens"]["counted_with"] == "o200k_base"
    assert PROVIDER_KEY not in answer.text and "mnx" not in body["request"]

    # Nothing was called or written: no provider request, no history, no learn job, no recall event.
    assert len(gateway.forwarded()) == forwarded_before
    assert no_jobs(gateway)
    with gateway.rest() as rest:
        assert rest.get("/chat/history/read", params={"chat_id": "c1"}).json()["messages"] == history_before
        assert rest.get("/memories/recalls", params={"chat_id": "c1"}).json()["data"] == []


def test_explain_in_cache_mode_says_where_the_volatile_layers_went(gateway):
    seed(gateway, "ex-cache")
    body = explain(gateway, "ex-cache", cache=True).json()
    stages = {stage["stage"]: stage for stage in body["stages"]}
    assert stages["memories"]["text_placement"] == "latest user message"
    assert stages["system_prompt"]["text_placement"] == "system"
    assert "peanuts" in body["request"]["messages"][-1]["content"]


def test_explain_needs_no_provider_key_and_shows_the_litellm_body_for_a_translated_model(gateway):
    answer = httpx.post(gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                        timeout=30, json={"model": "claude-3-5-haiku", "max_tokens": 50,
                                          "messages": [{"role": "user", "content": "hi"}],
                                          "mnx": {"subject_id": "ex-claude", "explain": True}})
    assert answer.status_code == 200
    body = answer.json()
    assert body["provider"] == "anthropic" and body["via"] == "litellm" and body["url"] is None
    assert body["request"]["messages"][-1] == {"role": "user", "content": "hi"}
    assert gateway.forwarded() == []


@pytest.mark.parametrize("value", ["yes", 1])
def test_a_malformed_explain_is_a_400_and_nothing_is_forwarded(shared_gateway, value):
    answer = httpx.post(shared_gateway.url + "/v1/chat/completions", headers=HEADERS, timeout=30,
                        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                              "mnx": {"subject_id": "ex-bad", "explain": value}})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "mnx.explain"
    assert shared_gateway.forwarded() == []


def test_the_header_asks_for_it_on_the_messages_surface(gateway):
    answer = httpx.post(gateway.url + "/v1/messages", timeout=30,
                        headers={"x-mnexium-key": KEY, "x-api-key": "sk-ant-test-key-123456", "x-mnx-explain": "true",
                                 "anthropic-version": "2023-06-01"},
                        json={"model": "claude-3-5-haiku", "max_tokens": 50,
                              "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200
    body = answer.json()
    assert body["surface"] == "messages" and body["via"] == "native" and body["request"]["max_tokens"] == 50
    assert "sk-ant-test-key-123456" not in answer.text
    assert gateway.forwarded() == []


def test_the_cli_explains_a_request_file(provider, tmp_path):
    config = {
        "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "gateway.db")}},
        "memory": {"vectors": {"edge": {"path": str(tmp_path / "memories")}}},
        "projects": [{"id": "default", "keys": [{"key": KEY}]}],
        "providers": {"openai": {"api_base": provider.url + "/v1"}},
    }
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "request.json").write_text(json.dumps({
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello from a file"}],
        "mnx": {"subject_id": "cli-user"}}))
    done = subprocess.run([sys.executable, "-m", "gateway", "explain", str(tmp_path / "request.json"),
                           "--config", str(tmp_path / "gateway.yaml"), "--key", KEY],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["object"] == "mnx.explain"
    assert body["request"]["messages"][-1]["content"] == "hello from a file"
    assert provider.requests == []
