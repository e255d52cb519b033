"""Integrations (contract §16): definitions, pulls from a real local endpoint, signed webhooks,
the values cache that prompts read, and the outbound safety limits.

The endpoint the gateway pulls from is a small Starlette app on 127.0.0.1, so gateways that
call it set ``integrations.allow_private_networks: true``; the refusal tests keep the default.
What the gateway cached is read the way the prompt renderer reads it: through
``services.integration_values`` of a second gateway's services on the same storage (which is
also what makes the cache shared between gateways).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from mnexium import Mnexium
from mnexium.types import (IntegrationCreateOptions, IntegrationExecutionOptions, IntegrationListOptions,
                           IntegrationOutputMapEntry, IntegrationUpdateOptions, IntegrationWebhookOptions)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.config import parse_config
from gateway.integrations.addresses import is_refused_address
from gateway.services import Services
from tests.conftest import KEY, KEY_B, edge_memory
from tests.fake_upstream import ServerThread

AUTH_SECRET = "integration-auth-" + secrets.token_hex(8)
WEBHOOK_SECRET = "whsec-" + secrets.token_hex(8)
LIMITS = {"allow_private_networks": True, "max_response_bytes": 4096, "max_timeout_ms": 1000}


# -- the endpoint integrations pull from -----------------------------------------------------

class Endpoint:
    """Answers like a customer's API, and records what each call carried."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.plan = "pro"

    async def data(self, request: Request) -> Response:
        body = await request.body()
        self.calls.append({"path": request.url.path, "method": request.method, "headers": dict(request.headers),
                           "query": dict(request.query_params), "body": json.loads(body) if body else None})
        return JSONResponse({"data": {"items": [{"name": "Ada", "plan": self.plan}], "count": len(self.calls)}})

    async def echo(self, request: Request) -> Response:
        self.calls.append({"path": request.url.path})
        return JSONResponse({"headers": dict(request.headers)})

    async def slow(self, request: Request) -> Response:
        self.calls.append({"path": request.url.path})
        await asyncio.sleep(3)
        return JSONResponse({"late": True})

    async def big(self, request: Request) -> Response:
        self.calls.append({"path": request.url.path})
        return JSONResponse({"blob": "x" * 20_000})

    async def big_stream(self, request: Request) -> Response:
        self.calls.append({"path": request.url.path})

        async def chunks() -> Any:
            yield b'{"blob": "'
            for _ in range(50):
                yield b"y" * 1000
            yield b'"}'
        return StreamingResponse(chunks(), media_type="application/json")

    async def text(self, request: Request) -> Response:
        self.calls.append({"path": request.url.path})
        return PlainTextResponse("<html>not json</html>")

    async def redirect(self, request: Request) -> Response:
        self.calls.append({"path": request.url.path})
        return RedirectResponse("http://elsewhere.example/steal", status_code=302)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/data", self.data, methods=["GET", "POST"]), Route("/slow", self.slow),
            Route("/big", self.big), Route("/big-stream", self.big_stream), Route("/text", self.text),
            Route("/redirect", self.redirect), Route("/echo", self.echo)])


@pytest.fixture(scope="module")
def endpoint() -> Iterator[tuple[Endpoint, str]]:
    fake = Endpoint()
    server = ServerThread(fake.app()).start()
    yield fake, server.url
    server.stop()


@pytest.fixture
def fake(endpoint) -> Endpoint:
    endpoint[0].calls.clear()
    return endpoint[0]


@pytest.fixture
def url(endpoint) -> str:
    return endpoint[1]


@pytest.fixture(scope="module")
def local_gateway(module_gateway):
    """A gateway allowed to call the local endpoint, with small limits (SQLite)."""
    return module_gateway(integrations=LIMITS)


# -- helpers ---------------------------------------------------------------------------------

def pull_integration(url: str, **fields: Any) -> dict[str, Any]:
    return {"name": "CRM", "mode": "pull", "endpoint_url": f"{url}/data", "scope": "subject",
            "output_map": [{"key": "name", "path": "data.items[0].name"},
                           {"key": "plan", "path": "data.items[0].plan"},
                           {"key": "tier", "path": "data.tier", "default": "standard"},
                           {"key": "absent", "path": "data.items[3].name"}], **fields}


def create(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/integrations", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True
    return response.json()["integration"]


def result_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True
    return response.json()["result"]


class Reader:
    """``services.integration_values`` of another gateway on the same storage."""

    def __init__(self, storage: dict[str, Any], tmp_path: Any, integrations: dict[str, Any]) -> None:
        self._config = parse_config({"storage": storage, "memory": edge_memory(tmp_path / "reader-index"),
                                     "projects": [{"id": "project-a", "keys": [{"key": "mnx_live_reader_key"}]}],
                                     "integrations": integrations})

    def values(self, integration_id: str, *, subject_id: str | None = None, chat_id: str | None = None,
               live_fetch: bool = False) -> Any:
        async def read() -> dict[str, Any] | None:
            services = Services.build(self._config)
            try:
                return await services.integration_values.values(
                    "project-a", integration_id, subject_id=subject_id, chat_id=chat_id, live_fetch=live_fetch)
            finally:
                await services.aclose()
        return asyncio.run(read())


def signed(body: bytes, extra: dict[str, str] | None = None, *, secret: str = WEBHOOK_SECRET,
           timestamp: int | None = None) -> dict[str, str]:
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    signature = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"x-mnx-webhook-timestamp": stamp, "x-mnx-webhook-signature": signature,
            "content-type": "application/json", **(extra or {})}


# -- definitions -----------------------------------------------------------------------------

def test_crud_over_http_never_shows_a_secret(start_gateway, storage, url):
    gateway = start_gateway(storage, integrations=LIMITS)
    with gateway.rest() as client:
        made = create(client, pull_integration(url, auth_type="bearer", auth_secret=AUTH_SECRET,
                                               webhook_secret=WEBHOOK_SECRET, mode="both",
                                               headers_template={"x-user": "{{subject_id}}"}))
        integration_id = made["integration_id"]
        assert integration_id.startswith("int_")
        assert made["has_auth_secret"] is True and made["has_webhook_secret"] is True
        assert (made["mode"], made["scope"], made["method"], made["is_active"]) == ("both", "subject", "GET", True)
        assert made["project_id"] == "project-a" and made["created_at"] and made["updated_at"]
        assert made["output_map"][2] == {"key": "tier", "path": "data.tier", "default": "standard"}

        listed = client.get("/integrations").json()
        assert listed["data"] == listed["integrations"] and [i["integration_id"] for i in listed["data"]] == [
            integration_id]
        assert client.get(f"/integrations/{integration_id}").json()["integration"] == made

        patched = client.patch(f"/integrations/{integration_id}", json={"is_active": False, "timeout_ms": 700,
                                                                        "auth_secret": "rotated-" + AUTH_SECRET})
        assert patched.status_code == 200, patched.text
        assert patched.json()["integration"]["timeout_ms"] == 700
        assert patched.json()["integration"]["has_auth_secret"] is True
        assert client.get("/integrations").json()["data"] == []
        assert [i["is_active"] for i in client.get("/integrations", params={"include_inactive": "true"}).json()[
            "integrations"]] == [False]
        # An empty secret removes it (and bearer auth then needs one).
        cleared = client.patch(f"/integrations/{integration_id}", json={"webhook_secret": ""})
        assert cleared.json()["integration"]["has_webhook_secret"] is False
        assert client.patch(f"/integrations/{integration_id}", json={"auth_secret": ""}).json()["error"] == (
            "auth_secret_required")

        everything = [client.get("/integrations", params={"include_inactive": "true"}).text,
                      client.get(f"/integrations/{integration_id}").text, json.dumps(made), patched.text]
        deleted = client.delete(f"/integrations/{integration_id}")
        assert deleted.status_code == 200 and deleted.json()["integration"]["integration_id"] == integration_id
        everything.append(deleted.text)
        for text in everything:
            assert AUTH_SECRET not in text and WEBHOOK_SECRET not in text
        missing = client.get(f"/integrations/{integration_id}")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        assert client.delete(f"/integrations/{integration_id}").status_code == 404


def test_a_chosen_id_is_kept_and_reposting_it_replaces_the_definition(local_gateway, url):
    with local_gateway.rest() as client:
        chosen = "int_chosen_" + secrets.token_hex(4)
        create(client, pull_integration(url, integration_id=chosen, auth_type="bearer", auth_secret=AUTH_SECRET))
        again = create(client, pull_integration(url, integration_id=chosen, name="CRM v2", auth_type="bearer"))
        assert (again["integration_id"], again["name"], again["has_auth_secret"]) == (chosen, "CRM v2", True)
        assert client.delete(f"/integrations/{chosen}").status_code == 200


def test_a_secret_never_comes_back_through_the_endpoint_or_a_moved_url(local_gateway, fake, url):
    with local_gateway.rest() as client:
        made = create(client, pull_integration(url, scope="project", endpoint_url=f"{url}/echo", auth_type="bearer",
                                               auth_secret=AUTH_SECRET,
                                               output_map=[{"key": "auth", "path": "headers.authorization"}]))
        integration_id = made["integration_id"]
        # An endpoint that echoes the request: the secret is blanked out of the values shown.
        result = result_of(client.post(f"/integrations/{integration_id}/test", json={}))
        assert result["values"] == {"auth": "Bearer [redacted]"}
        # Moving the integration to another host needs the secret again (else a key that may edit
        # integrations could send it to a server of its own).
        moved = client.patch(f"/integrations/{integration_id}", json={"endpoint_url": "https://collector.example/"})
        assert (moved.status_code, moved.json()["error"]) == (400, "auth_secret_required")
        assert client.get(f"/integrations/{integration_id}").json()["integration"]["endpoint_url"] == f"{url}/echo"
        # So does any change to where or how it is sent: another path on the same host may echo it.
        same_host = client.patch(f"/integrations/{integration_id}", json={"endpoint_url": f"{url}/data"})
        assert (same_host.status_code, same_host.json()["error"]) == (400, "auth_secret_required")
        for change in ({"method": "POST"}, {"query_template": {"t": "{{secret}}"}}, {"auth_type": "none"}):
            refused = client.patch(f"/integrations/{integration_id}", json=change)
            assert (refused.status_code, refused.json()["error"]) == (400, "auth_secret_required"), change
        resupplied = client.patch(f"/integrations/{integration_id}", json={
            "endpoint_url": "https://collector.example/", "auth_secret": "a-new-secret-for-the-new-host"})
        assert resupplied.status_code == 200, resupplied.text
        client.delete(f"/integrations/{integration_id}")


def test_a_secret_in_the_query_stays_out_of_the_log(local_gateway, fake, url, caplog):
    secret = "query-secret-" + secrets.token_hex(8)
    with local_gateway.rest() as client, caplog.at_level(logging.INFO), caplog.at_level(logging.DEBUG, "httpx"):
        made = create(client, pull_integration(url, scope="project", endpoint_url=f"{url}/text", auth_type="bearer",
                                               auth_secret=secret, query_template={"token": "{{secret}}"}))
        result = result_of(client.post(f"/integrations/{made['integration_id']}/test", json={}))
        assert result["reason"] == "invalid_json" and fake.calls[-1]["path"] == "/text"
        client.delete(f"/integrations/{made['integration_id']}")
    assert "HTTP Request" in caplog.text and made["integration_id"] in caplog.text  # the call was logged
    assert secret not in caplog.text


def test_crud_through_the_mnexium_sdk(local_gateway, fake, url):
    sdk = Mnexium(api_key=KEY, base_url=local_gateway.api, max_retries=0)
    try:
        made = sdk.integrations.create(IntegrationCreateOptions(
            name="Billing", mode="pull", endpoint_url=f"{url}/data", scope="project",
            output_map=[IntegrationOutputMapEntry(key="plan", path="data.items[0].plan", default="free")],
            auth_type="api_key_header", auth_config={"header_name": "x-billing-key"}, auth_secret=AUTH_SECRET,
            cache_ttl_seconds=60))
        integration_id = made["integration_id"]
        assert made["has_auth_secret"] is True and AUTH_SECRET not in json.dumps(made)
        assert integration_id in [i["integration_id"] for i in sdk.integrations.list()]
        assert sdk.integrations.get(integration_id)["name"] == "Billing"
        updated = sdk.integrations.update(integration_id, IntegrationUpdateOptions(description="the plan",
                                                                                  is_active=False))
        assert (updated["description"], updated["is_active"]) == ("the plan", False)
        assert integration_id not in [i["integration_id"] for i in sdk.integrations.list()]
        assert integration_id in [i["integration_id"] for i in sdk.integrations.list(
            IntegrationListOptions(include_inactive=True))]
        sdk.integrations.update(integration_id, IntegrationUpdateOptions(is_active=True))
        result = sdk.integrations.test(integration_id)
        assert (result["ok"], result["values"], result["cache_written"]) == (True, {"plan": "pro"}, False)
        assert fake.calls[-1]["headers"]["x-billing-key"] == AUTH_SECRET
        assert sdk.integrations.sync(integration_id, IntegrationExecutionOptions())["cache_written"] is True
        sdk.integrations.delete(integration_id)
        assert sdk.integrations.get(integration_id) is None
    finally:
        sdk.close()


BAD_BODIES = [
    ({"mode": "pull", "endpoint_url": "https://api.example.com/x", "output_map": [{"key": "a", "path": "a"}]},
     "name_required"),
    ({"name": "x", "endpoint_url": "https://api.example.com/x", "output_map": [{"key": "a", "path": "a"}]},
     "mode_required"),
    ({"name": "x", "mode": "pull", "endpoint_url": "https://api.example.com/x"}, "output_map_required"),
    ({"name": "x", "mode": "pull", "output_map": [{"key": "a", "path": "a"}]}, "endpoint_url_required"),
    ({"name": "x", "mode": "sometimes", "output_map": [{"key": "a", "path": "a"}]}, "invalid_mode"),
    ({"name": "x", "mode": "pull", "endpoint_url": "ftp://api.example.com/x",
      "output_map": [{"key": "a", "path": "a"}]}, "invalid_endpoint_url"),
    ({"name": "x", "mode": "pull", "endpoint_url": "file:///etc/passwd", "output_map": [{"key": "a", "path": "a"}]},
     "invalid_endpoint_url"),
    ({"name": "x", "mode": "pull", "endpoint_url": "https://user:pw@api.example.com/",
      "output_map": [{"key": "a", "path": "a"}]}, "invalid_endpoint_url"),
    ({"name": "x", "mode": "pull", "endpoint_url": "https://api.example.com/", "output_map": []},
     "invalid_output_map"),
    ({"name": "x", "mode": "pull", "endpoint_url": "https://api.example.com/",
      "output_map": [{"key": "a", "path": "a..b"}]}, "invalid_output_map"),
    ({"name": "x", "mode": "pull", "endpoint_url": "https://api.example.com/",
      "output_map": [{"key": "a", "path": "a"}, {"key": "a", "path": "b"}]}, "invalid_output_map"),
    ({"name": "x", "mode": "pull", "endpoint_url": "https://api.example.com/", "output_map": "a"},
     "invalid_output_map"),
    ({"name": "x", "mode": "pull", "endpoint_url": "https://api.example.com/", "timeout_ms": "fast",
      "output_map": [{"key": "a", "path": "a"}]}, "invalid_timeout_ms"),
    ({"name": "x", "mode": "pull", "endpoint_url": "https://api.example.com/", "cache_ttl_seconds": -1,
      "output_map": [{"key": "a", "path": "a"}]}, "invalid_cache_ttl_seconds"),
    ({"name": "x", "mode": "pull", "endpoint_url": "https://api.example.com/", "method": "DELETE",
      "output_map": [{"key": "a", "path": "a"}]}, "invalid_method"),
    ({"name": "x", "mode": "pull", "endpoint_url": "https://api.example.com/", "auth_type": "bearer",
      "output_map": [{"key": "a", "path": "a"}]}, "auth_secret_required"),
    ({"name": "x", "mode": "pull", "endpoint_url": "https://api.example.com/", "auth_type": "oauth",
      "auth_secret": "s", "output_map": [{"key": "a", "path": "a"}]}, "invalid_auth_type"),
    ({"name": "x", "mode": "pull", "endpoint_url": "https://api.example.com/",
      "headers_template": {"x-user": "{{user.password}}"}, "output_map": [{"key": "a", "path": "a"}]},
     "invalid_template"),
    ({"name": "x", "mode": "pull", "endpoint_url": "https://api.example.com/",
      "body_template": {"q": "{{ __import__('os') }}"}, "output_map": [{"key": "a", "path": "a"}]},
     "invalid_template"),
    ({"name": "x", "mode": "pull", "endpoint_url": "https://api.example.com/",
      "headers_template": {"Host": "internal"}, "output_map": [{"key": "a", "path": "a"}]}, "invalid_template"),
    ({"name": "x", "mode": "pull", "endpoint_url": "https://api.example.com/",
      "headers_template": {"x-a": {"nested": 1}}, "output_map": [{"key": "a", "path": "a"}]}, "invalid_template"),
    ({"name": "x", "mode": "pull", "endpoint_url": "https://api.example.com/", "auth_secrets": "typo",
      "output_map": [{"key": "a", "path": "a"}]}, "unknown_field"),
    ({"name": "x" * 201, "mode": "webhook", "output_map": [{"key": "a", "path": "a"}]}, "name_too_long"),
    ({"name": "x", "mode": "webhook", "webhook_secret": 42, "output_map": [{"key": "a", "path": "a"}]},
     "invalid_webhook_secret"),
    ({"name": "x", "mode": "webhook", "integration_id": "a/b", "output_map": [{"key": "a", "path": "a"}]},
     "invalid_id"),
    ({"name": "x", "mode": "pull", "endpoint_url": "https://api.example.com/",
      "auth_config": {"password": "p"}, "output_map": [{"key": "a", "path": "a"}]}, "invalid_auth_config"),
]


SCOPE_LEAKS = [
    # Values cached for the whole project cannot depend on one subject (every subject reads them).
    {"scope": "project", "query_template": {"id": "{{subject_id}}"}},
    {"scope": "project", "endpoint_url": "https://api.example.com/{{chat_id}}"},
    {"scope": "subject", "headers_template": {"x-chat": "{{chat_id}}"}},
]


@pytest.mark.parametrize("fields", SCOPE_LEAKS)
def test_an_integration_cannot_use_ids_narrower_than_its_scope(shared_gateway, fields):
    with shared_gateway.rest() as client:
        body = {"name": "x", "mode": "pull", "endpoint_url": "https://api.example.com/",
                "output_map": [{"key": "a", "path": "a"}], **fields}
        response = client.post("/integrations", json=body)
        assert (response.status_code, response.json()["error"]) == (400, "invalid_template")
        assert client.get("/integrations").json()["data"] == []


def test_a_short_secret_is_refused(shared_gateway):
    with shared_gateway.rest() as client:
        response = client.post("/integrations", json={"name": "x", "mode": "webhook", "webhook_secret": "abc",
                                                      "output_map": [{"key": "a", "path": "a"}]})
        assert (response.status_code, response.json()["param"]) == (400, "webhook_secret")


@pytest.mark.parametrize(("body", "code"), BAD_BODIES, ids=[code for _, code in BAD_BODIES])
def test_bad_bodies_are_400_and_store_nothing(shared_gateway, body, code):
    with shared_gateway.rest() as client:
        response = client.post("/integrations", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == code, response.text
        assert response.json()["message"]
        assert client.get("/integrations", params={"include_inactive": "true"}).json()["data"] == []


def test_malformed_json_and_a_bad_patch_are_400(local_gateway, url):
    with local_gateway.rest() as client:
        assert client.post("/integrations", content=b"{nope").json()["error"] == "invalid_json_body"
        assert client.post("/integrations", json=[1]).json()["error"] == "invalid_json_body"
        made = create(client, pull_integration(url))
        before = client.get(f"/integrations/{made['integration_id']}").json()
        for patch, code in (({"endpoint_url": "gopher://x"}, "invalid_endpoint_url"),
                            ({"scope": "team"}, "invalid_scope"),
                            ({"integration_id": "int_other"}, "invalid_integration_id"),
                            ({"output_map": [{"key": "k"}]}, "invalid_output_map")):
            response = client.patch(f"/integrations/{made['integration_id']}", json=patch)
            assert (response.status_code, response.json()["error"]) == (400, code), response.text
        assert client.get(f"/integrations/{made['integration_id']}").json() == before
        assert client.post(f"/integrations/{made['integration_id']}/sync", json={}).json()["error"] == (
            "subject_id_required")
        client.delete(f"/integrations/{made['integration_id']}")


# -- pull --------------------------------------------------------------------------------------

def test_pull_renders_templates_maps_values_and_sync_caches_them(start_gateway, storage, fake, url, tmp_path):
    gateway = start_gateway(storage, integrations=LIMITS)
    reader = Reader(storage, tmp_path, LIMITS)
    with gateway.rest() as client:
        made = create(client, pull_integration(
            url, method="POST", auth_type="bearer", auth_secret=AUTH_SECRET, cache_ttl_seconds=600,
            headers_template={"x-user": "{{subject_id}}", "x-tenant": "{{ project_id }}"},
            query_template={"tenant": "{{project_id}}", "limit": 5},
            body_template={"lookup": {"who": "{{subject_id}}", "token": "{{secret}}"}}))
        integration_id = made["integration_id"]

        tested = result_of(client.post(f"/integrations/{integration_id}/test",
                                       json={"subject_id": "ada", "chat_id": "chat-9"}))
        assert tested == {"ok": True, "reason": "ok", "status": 200, "integration_id": integration_id,
                          "scope": "subject", "cache_written": False, "latency_ms": tested["latency_ms"],
                          "values": {"name": "Ada", "plan": "pro", "tier": "standard"}}
        call = fake.calls[-1]
        assert call["method"] == "POST" and call["headers"]["authorization"] == f"Bearer {AUTH_SECRET}"
        assert (call["headers"]["x-user"], call["headers"]["x-tenant"]) == ("ada", "project-a")
        assert call["query"] == {"tenant": "project-a", "limit": "5"}
        assert call["body"] == {"lookup": {"who": "ada", "token": AUTH_SECRET}}
        assert call["headers"]["host"] == url.removeprefix("http://")
        # A dry run keeps nothing.
        assert reader.values(integration_id, subject_id="ada") is None

        synced = result_of(client.post(f"/integrations/{integration_id}/sync", json={"subject_id": "ada"}))
        assert synced["cache_written"] is True and synced["values"]["plan"] == "pro"
        assert reader.values(integration_id, subject_id="ada") == {"name": "Ada", "plan": "pro", "tier": "standard"}
        assert reader.values(integration_id, subject_id="bob") is None  # another subject's scope
        # A second sync refreshes what is kept.
        fake.plan = "enterprise"
        try:
            result_of(client.post(f"/integrations/{integration_id}/sync", json={"subject_id": "ada"}))
        finally:
            fake.plan = "pro"
        assert reader.values(integration_id, subject_id="ada")["plan"] == "enterprise"
        assert AUTH_SECRET not in client.get("/integrations").text


def test_basic_auth_and_a_get_without_a_body(local_gateway, fake, url):
    with local_gateway.rest() as client:
        made = create(client, pull_integration(url, scope="chat", auth_type="basic", auth_secret=AUTH_SECRET,
                                               auth_config={"username": "gateway"},
                                               body_template={"ignored": "{{chat_id}}"}))
        result = result_of(client.post(f"/integrations/{made['integration_id']}/test",
                                       json={"subject_id": "u-1", "chat_id": "c-1"}))
        assert result["ok"] is True and result["scope"] == "chat"
        call = fake.calls[-1]
        assert call["method"] == "GET" and call["body"] is None
        assert call["headers"]["authorization"] == "Basic " + base64.b64encode(
            f"gateway:{AUTH_SECRET}".encode()).decode()
        client.delete(f"/integrations/{made['integration_id']}")


def test_values_expire_after_the_ttl_and_live_fetch_refills_them(local_gateway, fake, url, tmp_path):
    reader = Reader(local_gateway.config.storage.model_dump(), tmp_path, LIMITS)
    with local_gateway.rest() as client:
        lazy = create(client, pull_integration(url, scope="project", cache_ttl_seconds=1))["integration_id"]
        live = create(client, pull_integration(url, scope="project", cache_ttl_seconds=1,
                                               allow_live_fetch=True))["integration_id"]
        result_of(client.post(f"/integrations/{live}/sync", json={}))
        calls = len(fake.calls)
        assert reader.values(live)["name"] == "Ada"
        assert len(fake.calls) == calls  # within the TTL: the cached values, no call
        time.sleep(1.3)
        assert reader.values(live, live_fetch=False) is None  # expired, and no live fetch asked for
        assert reader.values(live, live_fetch=True)["name"] == "Ada"
        assert len(fake.calls) == calls + 1
        assert reader.values(live, live_fetch=False)["name"] == "Ada"  # the live fetch was cached
        # An integration that does not allow live fetches never calls out for a reader.
        assert reader.values(lazy, live_fetch=True) is None
        assert len(fake.calls) == calls + 1
        # Unknown or inactive: None.
        assert reader.values("int_nothing_here", live_fetch=True) is None
        client.patch(f"/integrations/{live}", json={"is_active": False})
        assert reader.values(live, live_fetch=True) is None


def test_a_slow_endpoint_times_out_at_the_configured_cap(local_gateway, fake, url):
    with local_gateway.rest() as client:
        own = create(client, pull_integration(url, scope="project", endpoint_url=f"{url}/slow", timeout_ms=300))
        result = result_of(client.post(f"/integrations/{own['integration_id']}/test", json={}))
        assert (result["ok"], result["reason"], result["values"]) == (False, "timeout", {})
        assert 250 <= result["latency_ms"] < 1500
        # A longer timeout_ms is capped by integrations.max_timeout_ms (1000 here).
        capped = create(client, pull_integration(url, scope="project", endpoint_url=f"{url}/slow", timeout_ms=60_000))
        started = time.monotonic()
        result = result_of(client.post(f"/integrations/{capped['integration_id']}/sync", json={}))
        assert (result["ok"], result["reason"], result["cache_written"]) == (False, "timeout", False)
        assert time.monotonic() - started < 2.5


@pytest.mark.parametrize(("path", "reason"), [("/big", "response_too_large"), ("/big-stream", "response_too_large"),
                                              ("/text", "invalid_json"), ("/redirect", "redirect_refused")])
def test_answers_the_gateway_will_not_take(local_gateway, fake, url, path, reason):
    with local_gateway.rest() as client:
        made = create(client, pull_integration(url, scope="project", endpoint_url=f"{url}{path}"))
        result = result_of(client.post(f"/integrations/{made['integration_id']}/sync", json={}))
        assert (result["ok"], result["reason"], result["values"], result["cache_written"]) == (
            False, reason, {}, False)
        assert [c["path"] for c in fake.calls] == [path]  # the redirect was not followed


# -- outbound safety -----------------------------------------------------------------------------

def test_private_addresses_are_refused_by_default(start_gateway, storage_sqlite, fake, url):
    gateway = start_gateway(storage_sqlite)  # integrations: the defaults
    port = url.rsplit(":", 1)[1]
    with gateway.rest() as client:
        for target in (f"http://127.0.0.1:{port}/data", "http://169.254.169.254/latest/meta-data/",
                       f"http://[::1]:{port}/data", "http://10.0.0.5/", "http://100.64.1.1/",
                       "http://[fe80::1]/", "http://0.0.0.0/", "http://[::ffff:169.254.169.254]/"):
            response = client.post("/integrations", json=pull_integration(url, endpoint_url=target))
            assert (response.status_code, response.json()["error"]) == (400, "address_refused"), target
        assert client.get("/integrations").json()["data"] == []
        # A hostname is checked when called: every address it resolves to (localhost: loopback).
        made = create(client, pull_integration(url, scope="project", endpoint_url=f"http://localhost:{port}/data"))
        for action in ("test", "sync"):
            result = result_of(client.post(f"/integrations/{made['integration_id']}/{action}", json={}))
            assert (result["ok"], result["reason"], result["cache_written"]) == (False, "address_refused", False)
    assert fake.calls == []


def test_only_allow_listed_hosts_are_called(start_gateway, storage_sqlite, fake, url):
    gateway = start_gateway(storage_sqlite, integrations={**LIMITS, "allowed_hosts": ["localhost", "*.example.com"]})
    port = url.rsplit(":", 1)[1]
    with gateway.rest() as client:
        for target in ("https://evil.test/x", "https://example.com.evil.test/", "https://notexample.com/"):
            response = client.post("/integrations", json=pull_integration(url, endpoint_url=target))
            assert (response.status_code, response.json()["error"]) == (400, "host_not_allowed"), target
        create(client, pull_integration(url, endpoint_url="https://api.example.com/data"))
        made = create(client, pull_integration(url, scope="project", endpoint_url=f"http://localhost:{port}/data"))
        result = result_of(client.post(f"/integrations/{made['integration_id']}/test", json={}))
        assert (result["ok"], result["values"]["name"]) == (True, "Ada")
    assert fake.calls[-1]["headers"]["host"] == f"localhost:{port}"


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::",
                                     "fe80::1", "fc00::1", "fd12::1", "ff02::1", "::ffff:127.0.0.1",
                                     "::ffff:169.254.169.254"])
def test_non_public_addresses_are_refused(address):
    assert is_refused_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert not is_refused_address(ipaddress.ip_address(address))


# -- webhooks ------------------------------------------------------------------------------------

def webhook_integration(client: httpx.Client, **fields: Any) -> str:
    return create(client, {"name": "Billing events", "mode": "webhook", "scope": "subject",
                           "webhook_secret": WEBHOOK_SECRET, "cache_ttl_seconds": 3600,
                           "output_map": [{"key": "plan", "path": "customer.plan"},
                                          {"key": "name", "path": "customer.name"},
                                          {"key": "seats", "path": "customer.seats[0]", "default": 1}],
                           **fields})["integration_id"]


def test_signed_webhooks_are_accepted_raw_and_as_the_sdk_sends_them(start_gateway, storage, tmp_path):
    gateway = start_gateway(storage, integrations=LIMITS)
    reader = Reader(storage, tmp_path, LIMITS)
    with gateway.rest() as client:
        integration_id = webhook_integration(client)
        # Compact UTF-8 JSON, signed over exactly these bytes.
        raw = json.dumps({"customer": {"plan": "pro", "name": "José"}}, separators=(",", ":"),
                         ensure_ascii=False).encode()
        response = client.post(f"/integrations/{integration_id}/webhook", content=raw,
                               headers=signed(raw, {"x-mnx-subject-id": "jose", "x-event-id": "evt-1"}))
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer == {"ok": True, "deduplicated": False, "integration_id": integration_id,
                          "values": {"plan": "pro", "name": "José", "seats": 1},
                          "keys_written": ["plan", "name", "seats"], "latency_ms": answer["latency_ms"]}
        assert reader.values(integration_id, subject_id="jose") == {"plan": "pro", "name": "José", "seats": 1}

    # The SDK signs json.dumps(payload) but sends compact JSON: accepted too.
    sdk = Mnexium(api_key=KEY, base_url=gateway.api, max_retries=0)
    try:
        pushed = sdk.integrations.webhook(integration_id, {"customer": {"plan": "team", "seats": [12], "name": "Zoë"}},
                                          IntegrationWebhookOptions(secret=WEBHOOK_SECRET, event_id="evt-2",
                                                                    subject_id="jose"))
        assert pushed["ok"] is True and pushed["deduplicated"] is False
        assert reader.values(integration_id, subject_id="jose") == {"plan": "team", "name": "Zoë", "seats": 12}
        # A signature with the sha256= prefix, made by the SDK's own helper.
        helper = sdk.integrations.sign_webhook({"customer": {"plan": "max"}}, secret=WEBHOOK_SECRET)
        response = httpx.post(f"{gateway.api}/integrations/{integration_id}/webhook", content=helper.raw_body,
                              headers={"x-mnexium-key": KEY, "x-mnx-webhook-timestamp": helper.timestamp,
                                       "x-mnx-webhook-signature": "sha256=" + helper.signature,
                                       "x-mnx-subject-id": "jose"})
        assert response.status_code == 200, response.text
        assert reader.values(integration_id, subject_id="jose")["plan"] == "max"
    finally:
        sdk.close()


def test_bad_signatures_stale_timestamps_and_repeats_write_nothing(local_gateway, tmp_path):
    reader = Reader(local_gateway.config.storage.model_dump(), tmp_path, LIMITS)
    with local_gateway.rest() as client:
        integration_id = webhook_integration(client, scope="project")
        hook = f"/integrations/{integration_id}/webhook"
        body = json.dumps({"customer": {"plan": "forged"}}).encode()

        def refused(headers: dict[str, str], status: int, code: str, content: bytes = body) -> None:
            response = client.post(hook, content=content, headers=headers)
            assert (response.status_code, response.json()["error"]) == (status, code), response.text
            assert WEBHOOK_SECRET not in response.text

        refused(signed(body, secret="not-the-secret"), 401, "invalid_signature")
        refused({**signed(body), "x-mnx-webhook-signature": "00" * 32}, 401, "invalid_signature")
        # Signed, then changed on the way.
        refused(signed(body), 401, "invalid_signature", content=body.replace(b"forged", b"forgex"))
        refused(signed(body, timestamp=int(time.time()) - 301), 401, "stale_timestamp")
        refused(signed(body, timestamp=int(time.time()) + 301), 401, "stale_timestamp")
        refused({"content-type": "application/json"}, 400, "webhook_timestamp_required")
        refused({k: v for k, v in signed(body).items() if k != "x-mnx-webhook-signature"}, 400,
                "webhook_signature_required")
        assert reader.values(integration_id) is None
        # No project key: 401 before anything else.
        response = httpx.post(f"{local_gateway.api}{hook}", content=body, headers=signed(body))
        assert (response.status_code, response.json()["error"]) == (401, "unauthorized")

        first = json.dumps({"customer": {"plan": "pro"}}).encode()
        assert client.post(hook, content=first, headers=signed(first, {"x-event-id": "evt-7"})).json()[
            "deduplicated"] is False
        repeat = json.dumps({"customer": {"plan": "replayed"}}).encode()
        again = client.post(hook, content=repeat, headers=signed(repeat, {"x-event-id": "evt-7"}))
        assert again.json() == {"ok": True, "deduplicated": True, "integration_id": integration_id}
        assert reader.values(integration_id)["plan"] == "pro"


def test_webhooks_need_a_webhook_integration_with_a_secret(local_gateway, url):
    with local_gateway.rest() as client:
        pull_only = create(client, pull_integration(url, scope="project"))["integration_id"]
        no_secret = create(client, {"name": "n", "mode": "webhook", "output_map": [{"key": "a", "path": "a"}]})[
            "integration_id"]
        body = b"{}"
        for integration_id, code in ((pull_only, "webhook_not_configured"), (no_secret, "webhook_secret_not_set")):
            response = client.post(f"/integrations/{integration_id}/webhook", content=body, headers=signed(body))
            assert (response.status_code, response.json()["error"]) == (400, code)
        assert client.post(f"/integrations/{no_secret}/sync", json={}).json()["error"] == "pull_not_configured"


# -- tenancy and erasure -------------------------------------------------------------------------

def test_another_project_cannot_see_change_or_run_an_integration(local_gateway, fake, url):
    with local_gateway.rest() as a, local_gateway.rest(KEY_B) as b:
        integration_id = create(a, pull_integration(url, mode="both", scope="project", webhook_secret=WEBHOOK_SECRET,
                                                    name="A's secret CRM"))["integration_id"]
        assert "A's secret CRM" not in b.get("/integrations", params={"include_inactive": "true"}).text
        body = json.dumps({"customer": {"plan": "b"}}).encode()
        for response in (b.get(f"/integrations/{integration_id}"),
                         b.patch(f"/integrations/{integration_id}", json={"name": "B was here"}),
                         b.post(f"/integrations/{integration_id}/test", json={}),
                         b.post(f"/integrations/{integration_id}/sync", json={}),
                         b.post(f"/integrations/{integration_id}/webhook", content=body, headers=signed(body)),
                         b.delete(f"/integrations/{integration_id}")):
            assert (response.status_code, response.json()["error"]) == (404, "not_found"), response.request.url
        assert fake.calls == []
        assert a.get(f"/integrations/{integration_id}").json()["integration"]["name"] == "A's secret CRM"


def test_erasing_a_subject_erases_its_cached_values(start_gateway, storage, url, tmp_path):
    gateway = start_gateway(storage, integrations=LIMITS)
    reader = Reader(storage, tmp_path, LIMITS)
    with gateway.rest() as client:
        pulled = create(client, pull_integration(url))["integration_id"]
        pushed = webhook_integration(client, scope="chat")
        project_wide = create(client, pull_integration(url, scope="project"))["integration_id"]
        result_of(client.post(f"/integrations/{project_wide}/sync", json={"subject_id": "gone"}))
        result_of(client.post(f"/integrations/{pulled}/sync", json={"subject_id": "gone"}))
        result_of(client.post(f"/integrations/{pulled}/sync", json={"subject_id": "stays"}))
        body = json.dumps({"customer": {"plan": "pro"}}).encode()
        assert client.post(f"/integrations/{pushed}/webhook", content=body, headers=signed(
            body, {"x-mnx-subject-id": "gone", "x-mnx-chat-id": "chat-1"})).status_code == 200
        assert reader.values(pushed, subject_id="gone", chat_id="chat-1")["plan"] == "pro"
        # Kept with its subject: another subject reusing the chat id reads none of it.
        assert reader.values(pushed, subject_id="other", chat_id="chat-1") is None
        assert client.delete("/subjects/gone").status_code == 200
        assert reader.values(pulled, subject_id="gone") is None
        assert reader.values(pushed, subject_id="gone", chat_id="chat-1") is None
        assert reader.values(pulled, subject_id="stays")["name"] == "Ada"
        # The project's own values are no subject's, even when a subject's call wrote them.
        assert reader.values(project_wide)["name"] == "Ada"
