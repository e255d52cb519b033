"""Prompt templates (contract §11): {{var}} tokens in a chat's system prompt, filled from the
values a signed webhook wrote into an integration's cache; off unless the operator turns it on;
never evaluated; unknown variables render their default or nothing and are reported by explain."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from tests.conftest import KEY, PROVIDER_KEY

SECRET = "whsec-templates-test-secret"
TEMPLATE = {"enabled": True, "variables": {
    "plan": {"source": "integration", "integration_id": "int_billing", "key": "plan", "default": "free"},
    "seats": {"source": "integration", "integration_id": "int_billing", "key": "seats"},
    "region": {"source": "integration", "integration_id": "int_billing", "key": "region", "default": "EU"},
    "ghost": {"source": "integration", "integration_id": "int_missing", "key": "x"},
}}
PROMPT = ("The customer is on the {{plan}} plan with {{ seats }} seats in {{region}}; ghost: [{{ghost}}]; "
          "undeclared: [{{nobody}}]; not a token: {{ 1 + 1 }}.")


def push_values(rest: httpx.Client, subject_id: str, customer: dict[str, Any]) -> None:
    assert rest.post("/integrations", json={
        "integration_id": "int_billing", "name": "Billing", "mode": "webhook", "scope": "subject",
        "webhook_secret": SECRET, "cache_ttl_seconds": 3600,
        "output_map": [{"key": "plan", "path": "plan"}, {"key": "seats", "path": "seats"}]}).status_code in (200, 201)
    raw = json.dumps(customer).encode()
    stamp = str(int(time.time()))
    signature = hmac.new(SECRET.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    answer = rest.post("/integrations/int_billing/webhook", content=raw, headers={
        "x-mnx-webhook-timestamp": stamp, "x-mnx-webhook-signature": signature, "content-type": "application/json",
        "x-mnx-subject-id": subject_id, "x-event-id": f"evt-{subject_id}"})
    assert answer.status_code == 200, answer.text


def turn(gateway, subject_id: str, **mnx: Any) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {KEY}", "x-openai-key": PROVIDER_KEY},
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                            "mnx": {"subject_id": subject_id, "learn": False, "history": False, **mnx}})


def setup(gateway, subject_id: str) -> None:
    with gateway.rest() as rest:
        push_values(rest, subject_id, {"plan": "pro {{region}}", "seats": 12})
        assert rest.post("/prompts", json={"name": "billing", "prompt_text": PROMPT, "is_default": True,
                                           "template": TEMPLATE}).status_code in (200, 201)


def test_a_chats_system_prompt_is_rendered_from_integration_values(start_gateway, storage):
    gateway = start_gateway(storage, prompts={"templates_enabled": True},
                            integrations={"allow_private_networks": True})
    setup(gateway, "acme")
    assert turn(gateway, "acme").status_code == 200
    system = gateway.forwarded()[-1]["body"]["messages"][0]["content"]
    # Values filled in once: a value's own braces are not rendered again; nothing is evaluated.
    assert system == ("The customer is on the pro {{region}} plan with 12 seats in EU; ghost: []; "
                      "undeclared: []; not a token: {{ 1 + 1 }}.")
    # Another subject has no values: the defaults, or nothing.
    assert turn(gateway, "nobody-known").status_code == 200
    assert gateway.forwarded()[-1]["body"]["messages"][0]["content"].startswith(
        "The customer is on the free plan with  seats in EU;")
    # Stored as written: the template is rendered per turn, never into the prompt.
    with gateway.rest() as rest:
        prompts = rest.get("/prompts").json()["prompts"]
        assert [p["prompt_text"] for p in prompts] == [PROMPT]


def test_explain_reports_the_filled_and_the_unresolved_variables(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite, prompts={"templates_enabled": True},
                            integrations={"allow_private_networks": True})
    setup(gateway, "acme")
    body = turn(gateway, "acme", explain=True).json()
    [stage] = [s for s in body["stages"] if s["stage"] == "system_prompt"]
    assert stage["template_variables"] == {"filled": ["plan", "seats"], "unresolved": ["ghost", "nobody", "region"]}
    assert gateway.forwarded() == []


def test_templates_are_sent_as_stored_unless_the_operator_turns_rendering_on(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite, integrations={"allow_private_networks": True})
    setup(gateway, "acme")
    assert turn(gateway, "acme").status_code == 200
    assert gateway.forwarded()[-1]["body"]["messages"][0]["content"] == PROMPT


def test_a_key_without_integrations_read_gets_the_defaults_only(start_gateway, storage_sqlite):
    chat_only = "mnx_live_templates_chat_only_key"
    gateway = start_gateway(storage_sqlite, prompts={"templates_enabled": True},
                            integrations={"allow_private_networks": True},
                            projects=[{"id": "project-a", "keys": [{"name": "main", "key": KEY, "scopes": ["*"]},
                                                                   {"name": "chat", "key": chat_only,
                                                                    "scopes": ["chat:write"]}]}])
    setup(gateway, "acme")
    answer = httpx.post(gateway.url + "/v1/chat/completions", timeout=30,
                        headers={"authorization": f"Bearer {chat_only}", "x-openai-key": PROVIDER_KEY},
                        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
                              "mnx": {"subject_id": "acme", "learn": False, "history": False, "log": False}})
    assert answer.status_code == 200, answer.text
    system = gateway.forwarded()[-1]["body"]["messages"][0]["content"]
    assert system.startswith("The customer is on the free plan with  seats in EU;") and "pro" not in system


def test_rendered_values_are_capped_per_turn(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite, prompts={"templates_enabled": True},
                            integrations={"allow_private_networks": True})
    with gateway.rest() as rest:
        push_values(rest, "acme", {"plan": "p" * 4000, "seats": 1})
        # 20,000 copies of a 4,000-character value would be an 80 MB prompt.
        assert rest.post("/prompts", json={"name": "big", "prompt_text": "{{plan}}" * 10_000, "is_default": True,
                                           "template": TEMPLATE}).status_code in (200, 201)
    body = turn(gateway, "acme", explain=True).json()
    [stage] = [s for s in body["stages"] if s["stage"] == "system_prompt"]
    assert len(stage["text"]) <= 16_000 and stage["template_variables"]["cut_at_chars"] == 16_000
