"""Export and import (issue 24 item 6): a subject's or a project's data out as JSONL and back.

* GET /subjects/{id}/export holds everything the subject has (memories with their superseded
  versions, claims, profile, records, history, state, prompts, policies, integration values,
  recall events, audit records), needs ``subjects:export``, and shows project B nothing of A's;
* the round trip SQLite -> export -> Redis -> export -> SQLite loses nothing (the data lines of
  the exports are the same), importing twice is importing once, and the imported memories are
  found by search (re-indexed through the memory service);
* a malformed, unknown-kind, truncated or other project's file is refused naming its line, and
  nothing of it is written;
* what an erasure deletes and what a subject export reads are the same collections, and every
  collection the gateway declares is exported or listed as not exported, with why.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import pkgutil
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import gateway
from gateway.cli import main
from gateway.config import parse_config
from gateway.export.dump import export_lines
from gateway.export.kinds import (
    END, HEADER, KINDS, NOT_EXPORTED, PROJECT_KINDS, SUBJECT_COLLECTIONS_BESIDE_KINDS, SUBJECT_KINDS,
)
from gateway.services import Services
from gateway.store import Collection
from gateway.store.sqlite import SqliteDocumentStore
from tests.conftest import (
    KEY, KEY_B, PROVIDER_KEY, REDIS_URL, drop_redis_prefix, edge_memory, require_redis, wait_until,
)
from tests.test_integrations import WEBHOOK_SECRET, signed

PROJECT = "project-a"
SUBJECT = "ada"
READER_KEY = "mnx_live_export_test_reader"  # every read scope of the subject's data, not subjects:export
EXPORTER_KEY = "mnx_live_export_test_exporter"  # subjects:export only
PROJECTS = [
    {"id": "project-a", "keys": [{"name": "main", "key": KEY, "scopes": ["*"]},
                                 {"name": "reader", "key": READER_KEY,
                                  "scopes": ["memories:read", "history:read", "state:read", "profiles:read",
                                             "records:read", "subjects:delete"]},
                                 {"name": "exporter", "key": EXPORTER_KEY, "scopes": ["subjects:export"]}]},
    {"id": "project-b", "keys": [{"name": "main", "key": KEY_B, "scopes": ["*"]}]},
]
RECORD_SCHEMA = {"type_name": "ticket", "fields": {"title": {"type": "string", "required": True},
                                                   "status": {"type": "string"}}}


def config_file(tmp_path: Path, name: str, storage: dict[str, Any], index: Path, provider_url: str) -> Path:
    """A gateway.yaml for the CLI commands, the same settings as the test gateways."""
    data = {"storage": storage, "memory": edge_memory(index), "projects": PROJECTS, "audit": {"enabled": True},
            "providers": {"openai": {"api_base": provider_url + "/v1"}}, "defaults": {"learn": False}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def sqlite(tmp_path: Path, name: str) -> dict[str, Any]:
    return {"backend": "sqlite", "sqlite": {"path": str(tmp_path / f"{name}.db")}}


def lines_of(text: str | bytes) -> list[dict[str, Any]]:
    raw = text.decode() if isinstance(text, bytes) else text
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def data_lines(path: Path) -> list[str]:
    """The document lines of an export, order aside (what must survive a round trip)."""
    return sorted(json.dumps(line, sort_keys=True) for line in lines_of(path.read_bytes())
                  if line["kind"] not in (HEADER, END))


def cli_export(config: Path, target: Path, *extra: str) -> Path:
    assert main(["export", "--config", str(config), "--project", PROJECT, "-o", str(target), *extra]) == 0
    return target


def populate(gateway: Any) -> dict[str, Any]:
    """Subject ``ada`` with something of every kind, through the API as a client stores it."""
    made: dict[str, Any] = {}
    with gateway.rest() as rest:
        def ok(response: httpx.Response) -> Any:
            assert response.status_code in (200, 201), response.text
            return response.json()

        made["red"] = ok(rest.post("/memories", json={"subject_id": SUBJECT, "text": "User's favorite color is red"}))
        made["blue"] = ok(rest.post("/memories", json={"subject_id": SUBJECT,
                                                       "text": "User's favorite color is blue"}))
        made["lab"] = ok(rest.post("/memories", json={"subject_id": SUBJECT,
                                                      "text": "Ada works at the Lovelace analytical laboratory"}))
        made["veg"] = ok(rest.post("/memories", json={"subject_id": SUBJECT, "text": "User is vegetarian"}))
        # A duplicate in other words: versioning's judgement is kept (memory_duplicate_wordings).
        assert ok(rest.post("/memories", json={"subject_id": SUBJECT, "text": "User follows a vegetarian diet"}))[
            "duplicate_of"] == made["veg"]["id"]
        ok(rest.patch("/profiles", json={"subject_id": SUBJECT, "updates": [{"field_key": "name", "value": "Ada"}]}))
        ok(rest.put("/state/onboarding", headers={"x-subject-id": SUBJECT}, json={"value": {"step": 2}}))
        ok(rest.put("/state/draft", headers={"x-subject-id": SUBJECT}, json={"value": "hi", "ttl_seconds": 3600}))
        ok(rest.post("/prompts", json={"name": "ada's", "prompt_text": "Call her Ada.", "scope": "subject",
                                       "scope_id": SUBJECT}))
        ok(rest.post("/prompts", json={"name": "house style", "prompt_text": "Be brief."}))
        ok(rest.post("/memory/policies", json={"name": "ada's", "policy_text": "Keep her projects.",
                                               "scope": "subject", "scope_id": SUBJECT}))
        ok(rest.post("/records/schemas", json=RECORD_SCHEMA))
        made["owned"] = ok(rest.post("/records/ticket", json={"owner_id": SUBJECT, "data": {
            "title": "Difference engine jams", "status": "open"}}))
        made["shared"] = ok(rest.post("/records/ticket", json={"owner_id": "babbage", "collaborators": [SUBJECT],
                                                                "data": {"title": "Punch cards", "status": "open"}}))
        integration = ok(rest.post("/integrations", json={
            "name": "Billing", "mode": "webhook", "scope": "subject", "webhook_secret": WEBHOOK_SECRET,
            "cache_ttl_seconds": 3600, "output_map": [{"key": "plan", "path": "customer.plan"}]}))
        made["integration_id"] = integration["integration"]["integration_id"]
        body = json.dumps({"customer": {"plan": "pro"}}).encode()
        assert rest.post(f"/integrations/{made['integration_id']}/webhook", content=body,
                         headers=signed(body, {"x-mnx-subject-id": SUBJECT})).status_code == 200
    turn = httpx.post(gateway.url + "/v1/chat/completions", headers={"x-mnexium-key": KEY,
                                                                    "x-openai-key": PROVIDER_KEY}, json={
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Where does Ada work? Lovelace laboratory"}],
        "mnx": {"subject_id": SUBJECT, "chat_id": "chat-1", "recall": True, "history": True, "log": True}},
        timeout=30)
    assert turn.status_code == 200, turn.text
    return made


def export_subject(gateway: Any, key: str = KEY, subject: str = SUBJECT) -> httpx.Response:
    return httpx.get(f"{gateway.api}/subjects/{subject}/export", headers={"x-mnexium-key": key}, timeout=30)


def wait_for_after_turn_writes(gateway: Any) -> None:
    """Recall events are written just after the answer, in a batch; the audit record with the history."""
    def written() -> bool:
        text = export_subject(gateway).text
        return '"recall_turns"' in text and '"audit_turns"' in text
    assert wait_until(written, timeout=10), sorted({line["kind"] for line in lines_of(export_subject(gateway).text)})


def test_a_subject_export_holds_everything_stored_for_the_subject(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite, projects=PROJECTS, audit={"enabled": True})
    made = populate(gateway)
    wait_for_after_turn_writes(gateway)
    answer = export_subject(gateway)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    lines = lines_of(answer.content)
    header, end = lines[0], lines[-1]
    assert header["kind"] == HEADER
    assert {k: header["data"][k] for k in ("format", "version", "project_id", "subject_id")} == {
        "format": "mnx-gateway-export", "version": 1, "project_id": PROJECT, "subject_id": SUBJECT}
    assert header["data"]["exported_at"] and header["data"]["gateway_version"]
    assert end == {"kind": END, "data": {"lines": len(lines) - 1}}
    kinds: dict[str, list[dict[str, Any]]] = {}
    for line in lines[1:-1]:
        kinds.setdefault(line["kind"], []).append(line)
    # Every version of a memory, the superseded one pointing at what replaced it.
    memories = {line["id"]: line["data"] for line in kinds["memories"]}
    assert set(memories) == {made["red"]["id"], made["blue"]["id"], made["lab"]["id"], made["veg"]["id"]}
    assert memories[made["red"]["id"]]["listing"] == "superseded"
    assert memories[made["red"]["id"]]["superseded_by"] == made["blue"]["id"]
    # The recalled memory carries its recall count.
    assert any(line.get("tallies") for line in kinds["memories"])
    assert {line["data"]["status"] for line in kinds["claims"]} >= {"active", "superseded"}
    assert kinds["claim_truths"] and kinds["claim_edges"] and kinds["claim_assertions"]
    assert kinds["claim_truth_changes"][0]["data"]["subject_id"] == SUBJECT
    assert [line["data"]["value"] for line in kinds["profile_fields"]] == ["Ada"]
    assert {line["data"]["key"] for line in kinds["agent_state"]} == {"onboarding", "draft"}
    assert [line for line in kinds["agent_state"] if line["data"]["key"] == "draft"][0]["expires_at"] > time.time()
    assert [line["data"]["prompt_text"] for line in kinds["prompts"]] == ["Call her Ada."]  # not the project's
    assert [line["data"]["policy_text"] for line in kinds["memory_policies"]] == ["Keep her projects."]
    # Owned and collaborated on, with the schema they need.
    assert {line["id"] for line in kinds["records"]} == {made["owned"]["record_id"], made["shared"]["record_id"]}
    assert [line["id"] for line in kinds["record_schemas"]] == ["ticket"]
    assert [line["data"]["content"] for line in kinds["chat_messages"]][0].startswith("Where does Ada work")
    assert kinds["chats"] and kinds["recall_turns"] and kinds["audit_turns"]
    assert kinds["integration_values"][0]["data"]["values"] == {"plan": "pro"}
    assert "integrations" not in kinds  # the project's configuration, not the subject's


def test_export_needs_its_scope_and_shows_another_project_nothing(start_gateway, storage_sqlite):
    gateway = start_gateway(storage_sqlite, projects=PROJECTS, audit={"enabled": True})
    populate(gateway)
    refused = export_subject(gateway, READER_KEY)
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden" and "subjects:export" in refused.json()["message"]
    assert export_subject(gateway, EXPORTER_KEY).status_code == 200
    # Project B naming A's subject gets B's (empty) export, as for a subject nobody has.
    foreign = lines_of(export_subject(gateway, KEY_B).content)
    assert [line["kind"] for line in foreign] == [HEADER, END]
    assert foreign[0]["data"]["project_id"] == "project-b"
    assert SUBJECT_KINDS and "Lovelace" not in export_subject(gateway, KEY_B).text


def test_every_exported_id_reads_its_document_back(start_gateway, storage_sqlite, tmp_path, provider):
    gateway = start_gateway(storage_sqlite, projects=PROJECTS, audit={"enabled": True})
    populate(gateway)
    config = config_file(tmp_path, "a", storage_sqlite, tmp_path / "unused-index", provider.url)
    exported = lines_of(cli_export(config, tmp_path / "a.jsonl").read_bytes())
    assert exported[0]["data"]["subject_id"] is None
    documents = [line for line in exported if line["kind"] in KINDS]
    assert {line["kind"] for line in documents} >= {"memories", "records", "integrations", "prompts"}
    integration = next(line for line in documents if line["kind"] == "integrations")
    assert integration["data"]["secrets"] == {}  # never a secret in a file

    async def check() -> None:
        store = SqliteDocumentStore(storage_sqlite["sqlite"]["path"])
        try:
            for line in documents:
                stored = await store.get(KINDS[line["kind"]].collection, PROJECT, line["id"])
                if line["kind"] == "integrations":
                    stored = {**stored, "secrets": {}}  # type: ignore[dict-item]
                assert stored == line["data"], line
        finally:
            await store.close()
    asyncio.run(check())


def test_round_trip_sqlite_redis_sqlite_loses_nothing(start_gateway, storage_sqlite, tmp_path, provider):
    require_redis()
    source = start_gateway(storage_sqlite, projects=PROJECTS, audit={"enabled": True})
    made = populate(source)
    wait_for_after_turn_writes(source)
    source_config = config_file(tmp_path, "source", storage_sqlite, tmp_path / "unused-index", provider.url)
    first = cli_export(source_config, tmp_path / "first.jsonl")
    # Something of every kind but those no client can make any more (written by older versions),
    # chat summaries (folded only past a long chat's budget) and older profile values.
    kinds = {json.loads(line)["kind"] for line in data_lines(first)}
    assert kinds == set(KINDS) - {"memory_claims", "memory_recalls", "chat_summaries", "profile_history"} | {
        "claim_truth_changes"}

    prefix = f"mnxtest:{secrets.token_hex(6)}:"
    redis_storage = {"backend": "redis", "redis": {"url": REDIS_URL, "key_prefix": prefix}}
    try:
        redis_config = config_file(tmp_path, "redis", redis_storage, tmp_path / "redis-index", provider.url)
        for _ in range(2):  # importing twice is importing once
            assert main(["import", "--config", str(redis_config), "--project", PROJECT, str(first)]) == 0
        second = cli_export(redis_config, tmp_path / "second.jsonl")
        assert data_lines(second) == data_lines(first)

        # The imported side searches, reads truths and records, as the source did.
        target = start_gateway(redis_storage, projects=PROJECTS, audit={"enabled": True},
                               memory=edge_memory(tmp_path / "redis-index"))
        with target.rest() as rest:
            found = rest.get("/memories/search", params={"subject_id": SUBJECT, "q": "Lovelace laboratory"}).json()
            assert made["lab"]["id"] in [hit["id"] for hit in found["data"]]
            truth = rest.get(f"/claims/subject/{SUBJECT}/slot/favorite_color").json()
            assert truth["object_value"] == "blue"
            owned = rest.get(f"/records/ticket/{made['owned']['record_id']}").json()
            assert owned["data"]["title"] == "Difference engine jams"
            hits = rest.post("/records/ticket/search", json={"query": "Difference engine"})
            assert made["owned"]["record_id"] in hits.text, hits.text

        back_storage = sqlite(tmp_path, "back")
        back_config = config_file(tmp_path, "back", back_storage, tmp_path / "back-index", provider.url)
        assert main(["import", "--config", str(back_config), "--project", PROJECT, str(second)]) == 0
        third = cli_export(back_config, tmp_path / "third.jsonl")
        assert data_lines(third) == data_lines(first)
    finally:
        drop_redis_prefix(prefix)


# -- refused files ---------------------------------------------------------------------------

def _valid_file(tmp_path: Path, provider_url: str, start_gateway: Any) -> tuple[Path, list[str]]:
    storage = sqlite(tmp_path, "valid-source")
    gateway = start_gateway(storage, projects=PROJECTS, audit={"enabled": True})
    with gateway.rest() as rest:
        for text in ("Ada likes tea", "Ada plays chess"):
            assert rest.post("/memories", json={"subject_id": SUBJECT, "text": text}).status_code in (200, 201)
    config = config_file(tmp_path, "valid-source", storage, tmp_path / "unused-index", provider_url)
    path = cli_export(config, tmp_path / "valid.jsonl")
    return path, path.read_text().splitlines()


def _end(lines: list[str]) -> str:
    return json.dumps({"kind": END, "data": {"lines": len(lines)}})


@pytest.mark.parametrize("case", ["not json", "unknown kind", "other project's header", "other project's document",
                                  "document without its id", "cut short", "not an object", "record without schema",
                                  "schema that does not parse", "record without its data"])
def test_a_bad_file_is_refused_naming_its_line_and_nothing_is_written(case, start_gateway, tmp_path, provider,
                                                                      capsys):
    path, lines = _valid_file(tmp_path, provider.url, start_gateway)
    body = lines[:-1]  # without the end line
    memory = next(i for i, line in enumerate(body) if json.loads(line)["kind"] == "memories")
    if case == "not json":
        body.insert(2, '{"kind": "memories", "data": {')
        bad = 3
    elif case == "unknown kind":
        body.insert(2, json.dumps({"kind": "memoirs", "data": {}}))
        bad = 3
    elif case == "other project's header":
        header = json.loads(body[0])
        header["data"]["project_id"] = "project-b"
        body[0] = json.dumps(header)
        bad = 1
    elif case == "other project's document":
        body.append(json.dumps({"kind": "claim_edges", "id": "edg_1", "data": {
            "edge_id": "edg_1", "project_id": "project-b", "subject_id": SUBJECT}}))
        bad = len(body)
    elif case == "document without its id":
        line = json.loads(body[memory])
        del line["data"]["id"], line["id"]
        body[memory] = json.dumps(line)
        bad = memory + 1
    elif case == "record without schema":
        body.append(json.dumps({"kind": "records", "id": "rec_1", "data": {
            "record_id": "rec_1", "type_name": "nowhere", "owner_id": SUBJECT, "data": {}}}))
        bad = len(body)
    elif case == "schema that does not parse":
        body.append(json.dumps({"kind": "record_schemas", "id": "t", "data": {"type_name": "t", "fields": []}}))
        bad = len(body)
    elif case == "record without its data":
        body.append(json.dumps({"kind": "record_schemas", "id": "t", "data": {
            "type_name": "t", "fields": {"title": {"type": "string"}}, "updated_at": "2026-12-02T00:00:00Z"}}))
        body.append(json.dumps({"kind": "records", "id": "r1", "data": {
            "record_id": "r1", "type_name": "t", "owner_id": SUBJECT, "collaborators": []}}))
        bad = len(body)
    elif case == "not an object":
        body.insert(1, "[1, 2]")
        bad = 2
    else:
        bad = len(body)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(body + ([] if case == "cut short" else [_end(body)])) + "\n")

    storage = sqlite(tmp_path, "target")
    target_config = config_file(tmp_path, "target", storage, tmp_path / "target-index", provider.url)
    capsys.readouterr()
    assert main(["import", "--config", str(target_config), "--project", PROJECT, str(broken)]) == 2
    error = capsys.readouterr().err
    assert f"line {bad}:" in error and "nothing was imported" in error, error
    # Nothing of the file's valid lines was written either.
    assert data_lines(cli_export(target_config, tmp_path / "after.jsonl")) == []
    # The same file, repaired, goes in.
    assert main(["import", "--config", str(target_config), "--project", PROJECT, str(path)]) == 0
    assert len(data_lines(cli_export(target_config, tmp_path / "after.jsonl"))) == len(lines) - 2


# -- what erasure deletes is what an export reads --------------------------------------------

class RecordingStore:
    """A real store that notes which collections each call touched (a test's window onto it)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.read: set[str] = set()
        self.deleted: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)
        if name in ("find", "get", "tallies", "count", "find_ordered"):
            noted = self.read
        elif name in ("delete", "delete_where", "delete_tallies"):
            noted = self.deleted
        else:
            return method

        async def call(collection: Collection, *args: Any, **kwargs: Any) -> Any:
            noted.add(collection.name)
            return await method(collection, *args, **kwargs)
        return call


def test_erasure_and_subject_export_cover_the_same_collections(tmp_path, provider):
    config = parse_config({"storage": sqlite(tmp_path, "covered"), "memory": edge_memory(tmp_path / "index"),
                           "projects": PROJECTS, "audit": {"enabled": True},
                           "providers": {"openai": {"api_base": provider.url + "/v1"}}})

    async def run() -> tuple[set[str], set[str]]:
        from gateway import registry

        recording = RecordingStore(registry.create("store", "sqlite", config.storage, None))
        services = Services.build(config, store=recording)
        try:
            await services.erasure.erase(PROJECT, SUBJECT)
            erased = set(recording.deleted)
            recording.read.clear()
            async for _ in export_lines(recording, PROJECT, SUBJECT):
                pass
            return erased, set(recording.read)
        finally:
            await services.aclose()

    erased, exported = asyncio.run(run())
    assert exported == erased, (f"erased but not exported: {sorted(erased - exported)}; "
                                f"exported but not erased: {sorted(exported - erased)}")
    assert {kind.name for kind in SUBJECT_KINDS} | set(SUBJECT_COLLECTIONS_BESIDE_KINDS) == erased


def test_every_declared_collection_is_exported_or_says_why_not():
    declared: set[str] = set()
    for module in pkgutil.walk_packages(gateway.__path__, "gateway."):
        if module.name.endswith("__main__"):  # runs the CLI
            continue
        loaded = importlib.import_module(module.name)
        declared |= {value.name for value in vars(loaded).values() if isinstance(value, Collection)}
    accounted = {*KINDS, *SUBJECT_COLLECTIONS_BESIDE_KINDS, *NOT_EXPORTED}
    assert declared - accounted == set(), "export these (gateway/export/kinds.py) or say why not (NOT_EXPORTED)"
    assert {kind.name for kind in PROJECT_KINDS} <= declared
