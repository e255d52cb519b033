"""The Memory Policies API of seed 001, and request-level policy overrides."""

from __future__ import annotations

import httpx
import openai
import pytest
from mnexium import APIError, Mnexium, ProcessOptions, ProviderConfig

from tests.conftest import KEY, KEY_B, PROVIDER_KEY

SEED_POLICY = {
    "id": "mp_support_assistant",
    "name": "Support Assistant Default",
    "policy_text": "Extract stable customer preferences, known constraints, and standing instructions.",
    "scope": "project",
    "is_default": True,
    "priority": 100,
    "config": {"include_kinds": ["fact", "preference", "note"], "exclude_kinds": ["event"],
               "confidence_min": 0.72, "importance_min": 45, "max_memories_per_turn": 3},
    "metadata": {"team": "support"},
}


def test_the_seed_walkthrough(gateway_on):
    with gateway_on.rest() as rest:
        created = rest.post("/memory/policies", json=SEED_POLICY)
        assert created.status_code == 201
        policy = created.json()["policy"]
        assert created.json()["ok"] is True
        assert (policy["id"], policy["projectId"], policy["scope"], policy["scopeId"]) == (
            "mp_support_assistant", "project-a", "project", "")
        got = rest.get("/memory/policies/mp_support_assistant").json()["policy"]
        assert (got["is_active"], got["is_default"], got["priority"]) == (1, 1, 100)
        assert got["config"] == SEED_POLICY["config"] and got["metadata"] == {"team": "support"}
        assert [p["id"] for p in rest.get("/memory/policies", params={"scope": "project"}).json()["policies"]] == [
            "mp_support_assistant"]
        patched = rest.patch("/memory/policies/mp_support_assistant", json={
            "policy_text": "Extract stable preferences.", "config": {"confidence_min": 0.8,
                                                                     "max_memories_per_turn": 2}}).json()
        assert (patched["ok"], patched["id"], patched["projectId"], patched["updated"]) == (
            True, "mp_support_assistant", "project-a", True)
        assert rest.get("/memory/policies/mp_support_assistant").json()["policy"]["config"] == {
            "confidence_min": 0.8, "max_memories_per_turn": 2}
        assert rest.delete("/memory/policies/mp_support_assistant").json() == {"ok": True, "deleted": True}
        # Soft delete: kept for audit, inactive, out of lists and resolution.
        assert rest.get("/memory/policies/mp_support_assistant").json()["policy"]["is_active"] == 0
        assert rest.get("/memory/policies").json()["policies"] == []
        assert len(rest.get("/memory/policies", params={"include_inactive": "true"}).json()["policies"]) == 1
        assert rest.get("/memory/policies/resolve", params={"combined": "true"}).json()["has_policy"] is False
        assert rest.get("/memory/policies/mp_nope").status_code == 404


def test_resolution_layers_text_and_merges_config_later_scopes_winning(gateway):
    with gateway.rest() as rest:
        rest.post("/memory/policies", json={"id": "mp_chat", "name": "c", "policy_text": "CHAT", "scope": "chat",
                                            "scope_id": "c1", "is_default": True,
                                            "config": {"max_memories_per_turn": 2}})
        rest.post("/memory/policies", json={"id": "mp_project", "name": "p", "policy_text": "PROJECT",
                                            "is_default": True,
                                            "config": {"include_kinds": ["fact"], "confidence_min": 0.5,
                                                       "max_memories_per_turn": 5}})
        rest.post("/memory/policies", json={"id": "mp_subject", "name": "s", "policy_text": "SUBJECT",
                                            "scope": "subject", "scope_id": "u1", "is_default": True,
                                            "config": {"confidence_min": 0.9}})
        rest.post("/memory/policies", json={"id": "mp_extra", "name": "x", "policy_text": "NOT DEFAULT",
                                            "priority": 1})
        combined = rest.get("/memory/policies/resolve", params={
            "subject_id": "u1", "chat_id": "c1", "default_only": "true", "combined": "true"}).json()
        assert combined == {
            "policy_text": "PROJECT\n\nSUBJECT\n\nCHAT", "has_policy": True,
            "policy_ids": ["mp_project", "mp_subject", "mp_chat"],
            "config": {"include_kinds": ["fact"], "confidence_min": 0.9, "max_memories_per_turn": 2},
        }
        listed = rest.get("/memory/policies/resolve", params={"subject_id": "u1"}).json()
        assert [p["id"] for p in listed["policies"]] == ["mp_extra", "mp_project", "mp_subject"]
        assert listed["count"] == 3


def test_one_default_per_scope_and_scope_id(gateway):
    with gateway.rest() as rest:
        rest.post("/memory/policies", json={"id": "mp_a", "name": "a", "policy_text": "A", "scope": "subject",
                                            "scope_id": "u1", "is_default": True})
        rest.post("/memory/policies", json={"id": "mp_other", "name": "o", "policy_text": "O", "scope": "subject",
                                            "scope_id": "u2", "is_default": True})
        rest.post("/memory/policies", json={"id": "mp_b", "name": "b", "policy_text": "B", "scope": "subject",
                                            "scope_id": "u1", "is_default": 1})
        flags = {p["id"]: p["is_default"] for p in rest.get("/memory/policies").json()["policies"]}
        assert flags == {"mp_a": 0, "mp_other": 1, "mp_b": 1}


@pytest.mark.parametrize("body, code, param", [
    ({"policy_text": "t"}, "name_required", "name"),
    ({"name": "n"}, "policy_text_required", "policy_text"),
    ({"name": "n", "policy_text": "t", "scope": "team"}, "invalid_scope", "scope"),
    ({"name": "n", "policy_text": "t", "scope": "chat"}, "scope_id_required", "scope_id"),
    ({"name": "n", "policy_text": "t", "config": {"include_kinds": ["fact", 3]}}, "invalid_config",
     "config.include_kinds"),
    ({"name": "n", "policy_text": "t", "config": {"exclude_kinds": "event"}}, "invalid_config", "config.exclude_kinds"),
    ({"name": "n", "policy_text": "t", "config": {"max_memories_per_turn": 0}}, "invalid_config",
     "config.max_memories_per_turn"),
    ({"name": "n", "policy_text": "t", "config": {"max_memories_per_turn": 51}}, "invalid_config",
     "config.max_memories_per_turn"),
    ({"name": "n", "policy_text": "t", "config": {"confidence_min": 1.5}}, "invalid_config", "config.confidence_min"),
    ({"name": "n", "policy_text": "t", "config": {"importance_min": 101}}, "invalid_config", "config.importance_min"),
    ({"name": "n", "policy_text": "t", "config": {"confidance_min": 0.5}}, "invalid_config", "config.confidance_min"),
    ({"name": "n", "policy_text": "t", "config": [1]}, "invalid_config", "config"),
    *(({"id": bad, "name": "n", "policy_text": "t"}, "invalid_id", "id") for bad in ("a/b", "resolve", "   ", "..")),
])
def test_invalid_policies_are_400_naming_the_field_and_store_nothing(gateway, body, code, param):
    with gateway.rest() as rest:
        response = rest.post("/memory/policies", json=body)
        assert response.status_code == 400
        assert (response.json()["error"], response.json()["param"]) == (code, param)
        assert rest.get("/memory/policies", params={"include_inactive": "true"}).json()["policies"] == []
        rest.post("/memory/policies", json={"id": "mp_ok", "name": "ok", "policy_text": "t"})
        assert rest.patch("/memory/policies/mp_ok", json={"config": {"max_memories_per_turn": 99}}).status_code == 400


def test_an_unknown_policy_override_is_400_and_nothing_is_forwarded(gateway):
    with gateway.rest() as rest:
        rest.post("/memory/policies", json={"id": "mp_real", "name": "r", "policy_text": "t"})
    client = gateway.openai()
    request = dict(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as body_override:
        client.chat.completions.create(**request, extra_body={"mnx": {"memory_policy": "mp_unknown"}})
    assert body_override.value.code == "memory_policy_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(**request, extra_headers={"x-mnx-memory-policy": "mp_unknown"})
    assert gateway.forwarded() == []
    client.chat.completions.create(**request, extra_headers={"x-mnx-memory-policy": "mp_real"})
    client.chat.completions.create(**request, extra_headers={"x-mnx-memory-policy": "false"})
    assert len(gateway.forwarded()) == 2


def test_another_projects_policy_is_unknown_here(gateway):
    with gateway.rest(KEY) as rest_a, gateway.rest(KEY_B) as rest_b:
        rest_a.post("/memory/policies", json={"id": "mp_a_only", "name": "a", "policy_text": "t"})
        assert rest_b.get("/memory/policies/mp_a_only").status_code == 404
        assert rest_b.get("/memory/policies").json()["policies"] == []
    response = httpx.post(gateway.url + "/v1/chat/completions",
                          headers={"authorization": f"Bearer {KEY_B}", "x-openai-key": PROVIDER_KEY},
                          json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}],
                                "mnx": {"memory_policy": "mp_a_only"}})
    assert response.status_code == 400
    assert gateway.forwarded() == []


def test_the_mnexium_sdk_policy_override(gateway):
    with gateway.rest() as rest:
        rest.post("/memory/policies", json={"id": "mp_sdk", "name": "s", "policy_text": "t"})
    with Mnexium(api_key=KEY, base_url=gateway.api, max_retries=0, openai=ProviderConfig(api_key=PROVIDER_KEY)) as sdk:
        assert sdk.process(ProcessOptions(content="hi", memory_policy="mp_sdk", learn=False)).content == "echo: hi"
        with pytest.raises(APIError) as error:
            sdk.process(ProcessOptions(content="hi", memory_policy="mp_missing"))
    assert error.value.status == 400


def test_policy_scopes_are_enforced(start_gateway, storage_sqlite):
    gw = start_gateway(storage_sqlite, projects=[{"id": "p", "keys": [
        {"name": "reader", "key": "mnx_live_policy_reader", "scopes": ["memory_policies:read"]},
        {"name": "admin", "key": KEY, "scopes": ["*"]}]}])
    with gw.rest("mnx_live_policy_reader") as rest:
        assert rest.get("/memory/policies").status_code == 200
        assert rest.post("/memory/policies", json={"name": "n", "policy_text": "t"}).status_code == 403
