"""Stored project keys, end to end: made with ``mnx-gateway keys``, used on REST and through the
OpenAI SDK, then revoked, expired and rotated, on a running gateway (SQLite and Redis)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from gateway.cli import main
from gateway.config import parse_config
from gateway.errors import ConfigError
from tests.conftest import KEY, KEY_B, PROVIDER_KEY

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


class KeysCli:
    """``mnx-gateway keys ...`` against the store of a running gateway (its config written to a file)."""

    def __init__(self, gateway: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self.config = tmp_path / "gateway.yaml"
        self.config.write_text(yaml.safe_dump({
            "storage": gateway.config.storage.model_dump(mode="json"),
            "projects": [{"id": "project-a", "keys": [{"key": KEY}]}, {"id": "project-b", "keys": [{"key": KEY_B}]}],
        }))

    def run(self, *args: str) -> tuple[int, str, str]:
        self._capsys.readouterr()
        status = main(["keys", *args, "--config", str(self.config)])
        out, err = self._capsys.readouterr()
        return status, out, err

    def create(self, *args: str, project: str = "project-a") -> tuple[str, str]:
        """(key_id, key) of a new key."""
        status, out, err = self.run("create", "--project", project, *args)
        assert status == 0, err
        return _printed(out, "key_id"), _printed(out, "key")

    def listing(self, project: str = "project-a") -> list[dict[str, Any]]:
        status, out, err = self.run("list", "--project", project, "--json")
        assert status == 0, err
        return json.loads(out)


def _printed(out: str, label: str) -> str:
    [value] = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith(label + ": ")]
    return value


@pytest.fixture
def keys_cli(tmp_path, capsys):
    return lambda gateway: KeysCli(gateway, tmp_path, capsys)


def rest_error(gateway, key: str) -> tuple[int, Any]:
    response = httpx.get(gateway.api + "/memories", params={"subject_id": "ann"}, headers={"x-mnexium-key": key})
    return response.status_code, response.json()


def openai_error_code(gateway, key: str) -> str | None:
    with pytest.raises(openai.AuthenticationError) as refused:
        gateway.openai(key).chat.completions.create(**CHAT)
    assert refused.value.status_code == 401
    return refused.value.code


# -- the lifecycle ---------------------------------------------------------------------------------

def test_a_created_key_works_on_rest_and_chat_until_it_is_revoked(gateway_on, keys_cli):
    cli = keys_cli(gateway_on)
    key_id, key = cli.create("--name", "ci")
    assert key.startswith("mnx_live_") and len(key) >= len("mnx_live_") + 32

    with gateway_on.rest(key) as rest:
        created = rest.post("/memories", json={"subject_id": "ann", "text": "Ann drinks green tea"})
        assert created.status_code == 201, created.text
    # Stored under the key's project: the configured key of project-a sees it.
    with gateway_on.rest(KEY) as rest:
        assert [m["text"] for m in rest.get("/memories", params={"subject_id": "ann"}).json()["data"]] == [
            "Ann drinks green tea"]
    answer = gateway_on.openai(key).chat.completions.create(**CHAT)
    assert answer.choices[0].message.content
    [forwarded] = gateway_on.forwarded()
    assert forwarded["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"

    status, out, _ = cli.run("revoke", key_id)
    assert status == 0 and key_id in out
    # The very next request is refused, in each surface's own error shape.
    assert rest_error(gateway_on, key) == (401, {"error": "token_revoked", "message": "this API key has been revoked"})
    assert openai_error_code(gateway_on, key) == "token_revoked"
    headers = {"x-mnexium-key": key, "x-api-key": "sk-ant-caller"}
    anthropic = httpx.post(gateway_on.url + "/v1/messages", headers=headers,
                           json={"model": "claude-3-5-haiku", "max_tokens": 5, "messages": CHAT["messages"]})
    assert anthropic.status_code == 401
    assert anthropic.json()["error"]["type"] == "authentication_error"
    assert anthropic.json()["error"]["code"] == "token_revoked"
    gemini = httpx.post(gateway_on.url + "/v1beta/models/gemini-2.0-flash:generateContent",
                        headers={"x-mnexium-key": key, "x-goog-api-key": "google-caller"},
                        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert gemini.status_code == 401
    assert gemini.json()["error"]["status"] == "UNAUTHENTICATED"
    assert gemini.json()["error"]["details"][0]["reason"] == "token_revoked"
    assert len(gateway_on.forwarded()) == 1  # nothing more reached the provider

    [listed] = cli.listing()
    assert listed["key_id"] == key_id and listed["status"] == "revoked" and listed["revoked_at"]


def test_an_expired_key_is_refused_as_expired(gateway, keys_cli):
    cli = keys_cli(gateway)
    _, key = cli.create("--expires-in", "1s")
    time.sleep(1.1)
    assert rest_error(gateway, key) == (401, {"error": "token_expired", "message": "this API key has expired"})
    assert openai_error_code(gateway, key) == "token_expired"
    assert gateway.forwarded() == []


def test_rotation_replaces_the_key_at_once_or_after_a_grace_period(gateway_on, keys_cli):
    cli = keys_cli(gateway_on)
    key_id, old = cli.create("--name", "deploy", "--scopes", "read")
    status, out, err = cli.run("rotate", key_id)
    assert status == 0, err
    new_id, new = _printed(out, "key_id"), _printed(out, "key")
    assert new != old and new_id != key_id
    assert rest_error(gateway_on, new)[0] == 200
    assert rest_error(gateway_on, old) == (401, {"error": "token_revoked", "message": "this API key has been revoked"})
    by_id = {key["key_id"]: key for key in cli.listing()}
    assert by_id[new_id]["name"] == "deploy" and by_id[new_id]["scopes"] == ["read"]
    assert by_id[key_id]["status"] == "revoked"

    # With --grace the old key keeps working until then, both do.
    status, out, err = cli.run("rotate", new_id, "--grace", "1h")
    assert status == 0, err
    newest = _printed(out, "key")
    assert rest_error(gateway_on, newest)[0] == 200
    assert rest_error(gateway_on, new)[0] == 200
    assert {key["key_id"]: key for key in cli.listing()}[new_id]["expires_at"] is not None
    # A revoked key is not rotated: there is nothing left to replace.
    status, _, err = cli.run("rotate", key_id)
    assert status == 2 and "revoked" in err


def test_a_listing_never_shows_a_key(gateway, keys_cli):
    cli = keys_cli(gateway)
    key_id, key = cli.create("--name", "shown-once", "--scopes", "read,chat:write", "--expires-in", "30d")
    status, out, _ = cli.run("list", "--project", "project-a")
    assert status == 0 and key_id in out and key[-4:] in out
    [listed] = cli.listing()
    assert key not in out and key not in json.dumps(listed)
    assert listed["scopes"] == ["read", "chat:write"] and listed["last4"] == key[-4:]
    assert listed["expires_at"] and listed["revoked_at"] is None and listed["status"] == "active"
    assert set(listed) == {"key_id", "project_id", "name", "scopes", "last4", "created_at", "expires_at",
                           "revoked_at", "status"}
    assert cli.listing("project-b") == []


def test_stored_scopes_are_enforced(gateway, keys_cli):
    _, reader = keys_cli(gateway).create("--scopes", "read")
    with gateway.rest(reader) as rest:
        assert rest.get("/memories", params={"subject_id": "ann"}).status_code == 200
        refused = rest.post("/memories", json={"subject_id": "ann", "text": "Ann likes tea"})
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    with pytest.raises(openai.PermissionDeniedError):
        gateway.openai(reader).chat.completions.create(**CHAT)
    assert gateway.forwarded() == []


def test_a_stored_key_sees_only_its_own_project(gateway, keys_cli):
    with gateway.rest(KEY) as rest:
        assert rest.post("/memories", json={"subject_id": "ann", "text": "Project A's secret"}).status_code == 201
    _, key_b = keys_cli(gateway).create(project="project-b")
    with gateway.rest(key_b) as rest:
        assert rest.get("/memories", params={"subject_id": "ann"}).json()["data"] == []
        assert rest.post("/memories", json={"subject_id": "ann", "text": "Project B's note"}).status_code == 201
    with gateway.rest(KEY_B) as rest:
        assert [m["text"] for m in rest.get("/memories", params={"subject_id": "ann"}).json()["data"]] == [
            "Project B's note"]


def test_a_stored_key_is_never_forwarded_as_a_provider_key(gateway, keys_cli):
    cli = keys_cli(gateway)
    revoked_id, revoked = cli.create()
    cli.run("revoke", revoked_id)
    _, active = cli.create(project="project-b")
    body = {**CHAT, "mnx": {"log": False}}
    for headers in ({"x-mnexium-key": KEY, "x-openai-key": active},
                    {"x-mnexium-key": KEY, "authorization": f"Bearer {active}"},
                    {"x-mnexium-key": KEY, "x-openai-key": revoked}):
        response = httpx.post(gateway.url + "/v1/chat/completions", headers=headers, json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "openai_key_required"
    assert gateway.forwarded() == []


def test_a_stored_key_of_a_project_removed_from_the_config_opens_nothing(start_gateway, storage_sqlite, keys_cli):
    first = start_gateway(storage_sqlite)
    _, key_b = keys_cli(first).create(project="project-b")
    assert rest_error(first, key_b)[0] == 200
    # The same store, served with project-b gone from the config file.
    without_b = start_gateway(storage_sqlite, projects=[{"id": "project-a", "keys": [{"key": KEY}]}])
    assert rest_error(without_b, key_b) == (401, {"error": "unauthorized", "message": "invalid API key"})


def test_the_cli_refuses_unknown_projects_and_keys(gateway, keys_cli):
    cli = keys_cli(gateway)
    status, _, err = cli.run("create", "--project", "project-z")
    assert status == 2 and "no project 'project-z' in the config" in err
    status, _, err = cli.run("revoke", "key_0123456789abcdef")
    assert status == 2 and "no stored key with id 'key_0123456789abcdef'" in err
    status, _, err = cli.run("create", "--project", "project-a", "--expires-in", "soon")
    assert status == 2 and "is not a duration" in err
    assert cli.listing() == []


@pytest.mark.parametrize("project_id", ["trial_abc", "~gateway-keys"])
def test_reserved_project_ids_cannot_be_configured(project_id):
    with pytest.raises(ConfigError):
        parse_config({"projects": [{"id": project_id, "keys": [{"key": "k"}]}]})


# -- trial keys (auth.trial) -------------------------------------------------------------------------

CLAIM_URL = "https://claim.example.test/claim"


def keyless_chat(gateway, device: str, path: str = "/v1/chat/completions", **mnx: Any) -> httpx.Response:
    body: dict[str, Any] = {**CHAT, "mnx": {"subject_id": "visitor", **mnx}}
    if path == "/v1/messages":
        body["max_tokens"] = 20
    return httpx.post(gateway.url + path, json=body, timeout=30,
                      headers={"user-agent": device, "x-openai-key": PROVIDER_KEY, "x-api-key": "sk-ant-caller"})


def chats_seen_by(gateway, key: str) -> list[str]:
    with gateway.rest(key) as rest:
        listed = rest.get("/chat/history/list", params={"subject_id": "visitor"})
        assert listed.status_code == 200, listed.text
        return [chat["chat_id"] for chat in listed.json()["chats"]]


def test_without_trials_a_keyless_chat_is_refused(shared_gateway):
    response = keyless_chat(shared_gateway, "device-1")
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    assert "x-mnx-key-provisioned" not in response.headers
    assert shared_gateway.forwarded() == []


def test_a_keyless_chat_gets_a_trial_key_once_then_reuses_it(start_gateway, storage):
    gateway = start_gateway(storage, auth={"trial": {"enabled": True, "claim_url": CLAIM_URL}})
    first = keyless_chat(gateway, "device-1", chat_id="first")
    assert first.status_code == 200, first.text
    trial_key = first.headers["x-mnx-key-provisioned"]
    assert trial_key.startswith("mnx_trial.") and first.headers["x-mnx-claim-url"] == CLAIM_URL
    assert first.json()["mnx"]["provisioned_key"] == trial_key and first.json()["mnx"]["claim_url"] == CLAIM_URL
    assert gateway.forwarded()[0]["headers"]["authorization"] == f"Bearer {PROVIDER_KEY}"

    # The same device again: served in the same trial project, the key not shown again.
    again = keyless_chat(gateway, "device-1", chat_id="second")
    assert again.status_code == 200
    assert "x-mnx-key-provisioned" not in again.headers and "provisioned_key" not in again.json()["mnx"]
    assert sorted(chats_seen_by(gateway, trial_key)) == ["first", "second"]
    # The key works as any project key (the mnexium SDK sends it as x-mnexium-key from then on).
    with_key = httpx.post(gateway.url + "/v1/chat/completions", json={**CHAT, "mnx": {"subject_id": "visitor"}},
                          headers={"x-mnexium-key": trial_key, "x-openai-key": PROVIDER_KEY})
    assert with_key.status_code == 200 and "x-mnx-key-provisioned" not in with_key.headers

    # Another device gets a trial project of its own, through the Anthropic surface too.
    other = keyless_chat(gateway, "device-2", path="/v1/messages", chat_id="elsewhere")
    assert other.status_code == 200, other.text
    other_key = other.headers["x-mnx-key-provisioned"]
    assert other_key != trial_key and chats_seen_by(gateway, other_key) == ["elsewhere"]
    assert "elsewhere" not in chats_seen_by(gateway, trial_key)

    # A stream carries the new key in its headers (its body has no mnx block).
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json={**CHAT, "stream": True},
                      headers={"user-agent": "device-3", "x-openai-key": PROVIDER_KEY}) as streamed:
        assert streamed.status_code == 200
        assert streamed.headers["x-mnx-key-provisioned"].startswith("mnx_trial.")
        assert "data:" in streamed.read().decode()

    # Trial keys are for chats: REST routes still want a key.
    assert httpx.get(gateway.api + "/chat/history/list", params={"subject_id": "visitor"},
                     headers={"user-agent": "device-1"}).status_code == 401


def test_regenerating_a_trial_key_revokes_the_old_one_and_keeps_the_data(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite, auth={"trial": {"enabled": True, "claim_url": CLAIM_URL}})
    old_key = keyless_chat(gateway, "device-1", chat_id="kept").headers["x-mnx-key-provisioned"]
    regenerated = keyless_chat(gateway, "device-1", chat_id="after", regenerate_key=True)
    assert regenerated.status_code == 200, regenerated.text
    new_key = regenerated.headers["x-mnx-key-provisioned"]
    assert new_key != old_key and regenerated.json()["mnx"]["provisioned_key"] == new_key
    assert rest_error(gateway, old_key)[1]["error"] == "token_revoked"
    assert sorted(chats_seen_by(gateway, new_key)) == ["after", "kept"]
    # Key-less requests from the device now use the new key, silently.
    assert "x-mnx-key-provisioned" not in keyless_chat(gateway, "device-1").headers
    # Turned off, trials refuse the trial keys minted before too.
    off = start_gateway(storage_sqlite)
    assert rest_error(off, new_key) == (401, {"error": "unauthorized", "message": "invalid API key"})
    # Regenerating with a regular project key changes nothing.
    response = httpx.post(gateway.url + "/v1/chat/completions", json={**CHAT, "mnx": {"regenerate_key": True}},
                          headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY})
    assert response.status_code == 200 and "x-mnx-key-provisioned" not in response.headers
    assert "provisioned_key" not in response.json()["mnx"]


def test_the_mnexium_sdk_without_a_key_runs_on_its_trial_key(start_gateway, storage_sqlite):
    from mnexium import Mnexium, ProviderConfig  # type: ignore[import-untyped]
    from mnexium.types import ChatOptions  # type: ignore[import-untyped]

    gateway = start_gateway(storage_sqlite, auth={"trial": {"enabled": True, "claim_url": CLAIM_URL}})
    with Mnexium(base_url=gateway.api, max_retries=0, openai=ProviderConfig(api_key=PROVIDER_KEY)) as sdk:
        chat = sdk.subject("alice").create_chat(ChatOptions(learn=False))
        assert chat.process("hello").content == "echo: hello"
        trial = sdk.get_trial_info()
        assert trial is not None and trial["key"].startswith("mnx_trial.")
        # From then on the SDK sends the key it was given, and sees its trial project's data.
        chat.process("again")
        assert [c.chat_id for c in sdk.subject("alice").chats.list()] == [chat.id]
        assert sdk.get_provisioned_key() == trial["key"]


def test_a_trial_scope_that_is_no_scope_stops_the_gateway_at_startup(tmp_path):
    from gateway.config import TrialConfig
    from gateway.keys.store import KeyStore
    from gateway.keys.trial import TrialKeys
    from gateway.store.sqlite import SqliteDocumentStore

    store = SqliteDocumentStore(str(tmp_path / "keys.db"))
    try:
        with pytest.raises(ConfigError, match="auth.trial.scopes: 'chat write' is not a scope"):
            TrialKeys(KeyStore(store), TrialConfig(enabled=True, scopes=["chat write"]))
    finally:
        asyncio.run(store.close())
