"""Records (contract §10) through a running gateway, on SQLite and on Redis: schemas, validated
CRUD with its audit trail, the query language on indexes, hybrid search, recall into a chat
turn, erasure, events and the mnexium SDK's records client. The LLM provider is the only fake."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from datetime import date, datetime, timedelta, UTC
from typing import Any

import httpx
import pytest
from mnexium import Mnexium

from gateway.config import parse_config
from gateway.records.records import encode_cursor, query_fingerprint
from gateway.services import Services
from tests.conftest import KEY, KEY_B, PROVIDER_KEY, drop_redis_prefix, edge_memory, require_redis, REDIS_URL

_names = itertools.count()


def new_type() -> str:
    return f"t{next(_names)}_{id(object()) % 10_000}"


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def gw(request, module_gateway):
    if request.param == "redis":
        require_redis()
        prefix = f"mnxtest:records:{id(request)}:"
        yield module_gateway({"backend": "redis", "redis": {"url": REDIS_URL, "key_prefix": prefix}})
        drop_redis_prefix(prefix)
    else:
        yield module_gateway()


def ok(response: httpx.Response, *statuses: int) -> Any:
    assert response.status_code in (statuses or (200,)), f"{response.status_code} {response.text}"
    return response.json()


def define(rest: httpx.Client, type_name: str, fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return ok(rest.post("/records/schemas", json={"type_name": type_name, "fields": fields, **extra}), 200, 201)


def insert(rest: httpx.Client, type_name: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return ok(rest.post(f"/records/{type_name}", json={"data": data, **extra}), 201)


def query(rest: httpx.Client, type_name: str, **body: Any) -> dict[str, Any]:
    return ok(rest.post(f"/records/{type_name}/query", json=body))


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"{response.status_code} {response.text}"
    body = response.json()
    assert isinstance(body["error"], str) and body["message"], body
    return body


TICKET_FIELDS = {
    "title": {"type": "string", "required": True, "description": "One line"},
    "body": "text",
    "priority": "integer",
    "amount": "number",
    "status": {"type": "enum", "values": ["open", "pending", "closed"]},
    "due": "date",
    "opened_at": "datetime",
    "urgent": "boolean",
    "tags": "string[]",
}


# --- schemas ---------------------------------------------------------------------------------

def test_a_schema_is_defined_read_listed_and_redefined(gw):
    type_name = new_type()
    with gw.rest() as rest:
        created = rest.post("/records/schemas", json={"type_name": type_name, "fields": TICKET_FIELDS,
                                                      "display_name": "Ticket", "description": "Support tickets"})
        schema = ok(created, 201)
        assert schema["type_name"] == type_name and schema["project_id"] == "project-a"
        assert schema["fields"]["title"]["type"] == "string" and schema["fields"]["title"]["required"] is True
        assert schema["fields"]["status"]["values"] == ["open", "pending", "closed"]
        assert schema["fields"]["tags"]["type"] == "array" and schema["fields"]["tags"]["items"]["type"] == "string"
        assert ok(rest.get(f"/records/schemas/{type_name}"))["fields"] == schema["fields"]
        assert type_name in [s["type_name"] for s in ok(rest.get("/records/schemas"))["schemas"]]
        # An added optional field is always compatible: 200, the new field is there.
        again = ok(rest.post("/records/schemas", json={"type_name": type_name,
                                                       "schema": {"fields": {**TICKET_FIELDS, "team": "string"}}}))
        assert "team" in again["fields"] and again["created_at"] == schema["created_at"]
        error_of(rest.get("/records/schemas/no_such_type"), 404)
        assert error_of(rest.get("/records/no_such_type"), 404)["error"] == "schema_not_found"
        # Another project sees none of it.
    with gw.rest(KEY_B) as other:
        assert error_of(other.get(f"/records/schemas/{type_name}"), 404)["error"] == "schema_not_found"
        assert type_name not in [s["type_name"] for s in ok(other.get("/records/schemas"))["schemas"]]


@pytest.mark.parametrize("fields, param", [
    ({"title": {"type": "nonsense"}}, "fields.title.type"),
    ({"status": {"type": "enum"}}, "fields.status"),
    ({"9lives": "string"}, "fields.9lives"),
    ({"owner": "ref"}, "fields.owner"),
])
def test_a_bad_schema_is_a_400_naming_the_field_and_nothing_is_defined(gw, fields, param):
    type_name = new_type()
    with gw.rest() as rest:
        body = error_of(rest.post("/records/schemas", json={"type_name": type_name, "fields": fields}), 400)
        assert body["param"].startswith(param), body
        error_of(rest.get(f"/records/schemas/{type_name}"), 404)
        assert error_of(rest.post("/records/schemas", json={"type_name": "schemas", "fields": {"a": "string"}}),
                        400)["param"] == "type_name"


def test_redefining_a_schema_some_records_would_violate_is_a_409_with_their_count(gw):
    type_name = new_type()
    with gw.rest() as rest:
        define(rest, type_name, {"title": "string", "priority": "integer"})
        insert(rest, type_name, {"title": "a"})
        insert(rest, type_name, {"title": "b"})
        third = insert(rest, type_name, {"title": "c", "priority": 2})
        conflict = error_of(rest.post("/records/schemas", json={
            "type_name": type_name, "fields": {"title": "string", "priority": {"type": "integer", "required": True}}}),
            409)
        assert conflict["error"] == "schema_conflict" and conflict["count"] == 2, conflict
        # Nothing changed: the field is still optional.
        assert ok(rest.get(f"/records/schemas/{type_name}"))["fields"]["priority"].get("required") is False
        # A type change that only the third record violates.
        conflict = error_of(rest.post("/records/schemas", json={
            "type_name": type_name, "fields": {"title": "string", "priority": "boolean"}}), 409)
        assert conflict["count"] == 1 and third["record_id"] in conflict["message"]
        # Once no record is in the way, the change applies.
        ok(rest.put(f"/records/{type_name}/{third['record_id']}", json={"data": {"priority": None}}))
        ok(rest.post("/records/schemas", json={"type_name": type_name,
                                               "fields": {"title": "string", "priority": "boolean"}}))


# --- records ---------------------------------------------------------------------------------

def test_a_record_is_inserted_read_merged_soft_deleted_and_audited(gw):
    type_name = new_type()
    with gw.rest() as rest:
        define(rest, type_name, TICKET_FIELDS)
        record = insert(rest, type_name, {"title": "Printer jam", "priority": 2, "amount": 9.5, "status": "open",
                                          "due": "2027-01-31", "opened_at": "2026-12-02T10:00:00+02:00",
                                          "urgent": False, "tags": ["hardware", "office"]}, owner_id="alice")
        assert re.fullmatch(r"rec_\w+", record["record_id"])
        assert record["owner_id"] == "alice" and record["visibility"] == "private" and record["is_deleted"] is False
        assert record["data"]["opened_at"] == "2026-12-02T08:00:00Z"  # normalised to UTC
        assert record["provenance"]["source"] == "api" and record["provenance"]["key_name"] == "main"
        assert not any(key.startswith("_") for key in record)
        record_id = record["record_id"]
        assert ok(rest.get(f"/records/{type_name}/{record_id}")) == record
        # PUT merges: the fields not named stay, a null removes an optional one.
        merged = ok(rest.put(f"/records/{type_name}/{record_id}", json={"data": {"status": "closed", "amount": None}}))
        assert merged["data"]["status"] == "closed" and merged["data"]["title"] == "Printer jam"
        assert "amount" not in merged["data"] and merged["updated_at"] >= record["updated_at"]
        assert error_of(rest.put(f"/records/{type_name}/{record_id}", json={"data": {"title": None}}),
                        400)["param"] == "data.title"  # required: cannot be removed
        public = insert(rest, type_name, {"title": "Office move"})
        assert public["owner_id"] is None and public["visibility"] == "public"
        ok(rest.delete(f"/records/{type_name}/{record_id}"))
        assert error_of(rest.get(f"/records/{type_name}/{record_id}"), 404)["error"] == "record_not_found"
        error_of(rest.put(f"/records/{type_name}/{record_id}", json={"data": {"status": "open"}}), 404)
        listed = ok(rest.get(f"/records/{type_name}"))
        assert [r["record_id"] for r in listed["records"]] == [public["record_id"]] and listed["total"] == 1
        trail = ok(rest.get(f"/records/{type_name}/{record_id}/history"))["data"]
        assert [entry["action"] for entry in trail] == ["created", "updated", "deleted"]
        assert trail[1]["changed_fields"] == ["amount", "status"] and trail[2]["by"]["key_name"] == "main"


def test_a_batch_is_inserted_all_or_nothing(gw):
    type_name = new_type()
    with gw.rest() as rest:
        define(rest, type_name, {"title": {"type": "string", "required": True}, "due": "date"})
        made = ok(rest.post(f"/records/{type_name}/batch", json={"records": [
            {"data": {"title": "first", "due": "2027-02-01"}, "owner_id": "bo"}, {"data": {"title": "second"}}]}), 201)
        assert [r["data"]["title"] for r in made["records"]] == ["first", "second"] and made["count"] == 2
        assert made["records"][0]["owner_id"] == "bo" and made["records"][1]["visibility"] == "public"
        for body, param in (({"records": [{"data": {"title": "ok"}}, {"data": {"title": "bad", "due": "soon"}}]},
                             "records[1].data.due"),
                            ({"records": [{"data": {"title": "ok"}}, {"owner_id": "x"}]}, "records[1].data"),
                            ({"records": [{"data": {"title": "ok"}}, "nope"]}, "records[1]"),
                            ({"records": []}, "records"),
                            ({"records": [{"data": {"title": "x"}}] * 501}, "records")):
            assert error_of(rest.post(f"/records/{type_name}/batch", json=body), 400)["param"] == param
        assert ok(rest.get(f"/records/{type_name}"))["total"] == 2
        hits = ok(rest.post(f"/records/{type_name}/search", json={"query": "second"}))["records"]
        assert [h["record_id"] for h in hits] == [made["records"][1]["record_id"]]


def test_listing_filters_by_owner_pages_and_is_per_project(gw):
    type_name = new_type()
    with gw.rest() as rest:
        define(rest, type_name, {"title": "string"})
        mine = [insert(rest, type_name, {"title": f"mine {i}"}, owner_id="owner-1")["record_id"] for i in range(3)]
        insert(rest, type_name, {"title": "theirs"}, subject_id="owner-2")  # the legacy spelling of owner_id
        page = ok(rest.get(f"/records/{type_name}", params={"subject_id": "owner-1", "limit": 2}))
        assert [r["record_id"] for r in page["records"]] == mine[:2] and page["total"] == 3
        rest_of_it = ok(rest.get(f"/records/{type_name}", headers={"x-subject-id": "owner-1"},
                                 params={"offset": 2}))
        assert [r["record_id"] for r in rest_of_it["data"]] == mine[2:]
        error_of(rest.get(f"/records/{type_name}", params={"limit": "many"}), 400)
        # Out of range is clamped, as clients send e.g. limit=1000 (contract §10.4).
        assert ok(rest.get(f"/records/{type_name}", params={"limit": 1000}))["count"] == 4
    with gw.rest(KEY_B) as other:
        error_of(other.get(f"/records/{type_name}/{mine[0]}"), 404)
        error_of(other.put(f"/records/{type_name}/{mine[0]}", json={"data": {"title": "B"}}), 404)
        error_of(other.delete(f"/records/{type_name}/{mine[0]}"), 404)
    with gw.rest() as rest:
        assert ok(rest.get(f"/records/{type_name}/{mine[0]}"))["data"]["title"] == "mine 0"


@pytest.mark.parametrize("data, param, code", [
    ({"title": 5}, "data.title", "invalid_field_value"),
    ({"title": "x", "priority": "high"}, "data.priority", "invalid_field_value"),
    ({"title": "x", "priority": 2.5}, "data.priority", "invalid_field_value"),
    ({"title": "x", "priority": True}, "data.priority", "invalid_field_value"),
    ({"title": "x", "amount": "9.5"}, "data.amount", "invalid_field_value"),
    ({"title": "x", "urgent": "yes"}, "data.urgent", "invalid_field_value"),
    ({"title": "x", "status": "archived"}, "data.status", "invalid_field_value"),
    ({"title": "x", "due": "31/01/2027"}, "data.due", "invalid_field_value"),
    ({"title": "x", "opened_at": "yesterday"}, "data.opened_at", "invalid_field_value"),
    ({"title": "x", "tags": "hardware"}, "data.tags", "invalid_field_value"),
    ({"title": "x", "tags": ["ok", 3]}, "data.tags", "invalid_field_value"),
    ({"title": "x" * 1001}, "data.title", "invalid_field_value"),
    ({"priority": 1}, "data.title", "missing_required_field"),
    ({"title": "x", "colour": "red"}, "data.colour", "unknown_field"),
])
def test_a_record_that_breaks_its_schema_is_a_400_naming_the_field_and_nothing_is_stored(gw, data, param, code):
    type_name = new_type()
    with gw.rest() as rest:
        define(rest, type_name, TICKET_FIELDS)
        body = error_of(rest.post(f"/records/{type_name}", json={"data": data}), 400)
        assert (body["param"], body["error"]) == (param, code), body
        assert ok(rest.get(f"/records/{type_name}"))["total"] == 0


def test_references_must_name_a_live_record_of_the_target_type(gw):
    customer, order = new_type(), new_type()
    with gw.rest() as rest:
        define(rest, customer, {"name": "string"})
        define(rest, order, {"item": "string", "customer": f"ref:{customer}"})
        alice = insert(rest, customer, {"name": "Alice"})
        placed = insert(rest, order, {"item": "Lamp", "customer": alice["record_id"]})
        assert placed["data"]["customer"] == alice["record_id"]
        wrong_type = insert(rest, order, {"item": "Desk"})["record_id"]  # an order is no customer
        for target in ("rec_missing", wrong_type):
            body = error_of(rest.post(f"/records/{order}", json={"data": {"item": "Desk", "customer": target}}), 400)
            assert body["param"] == "data.customer", body
        ok(rest.delete(f"/records/{customer}/{alice['record_id']}"))
        error_of(rest.post(f"/records/{order}", json={"data": {"item": "Pen", "customer": alice["record_id"]}}), 400)


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'{"data": [1, 2]}', b'{"data": {"title": "x"}, "visibility": "secret"}',
    b'{"data": {"title": "x"}, "owner_id": 7}', b'{"data": {"title": "x"}, "collaborators": "bob"}',
])
def test_a_malformed_insert_is_a_400_and_nothing_is_stored(gw, body):
    type_name = new_type()
    with gw.rest() as rest:
        define(rest, type_name, TICKET_FIELDS)
        error_of(rest.post(f"/records/{type_name}", content=body, headers={"content-type": "application/json"}), 400)
        assert ok(rest.get(f"/records/{type_name}"))["total"] == 0


def test_an_unauthorized_or_read_only_key_writes_nothing(gw):
    type_name = new_type()
    with gw.rest() as rest:
        define(rest, type_name, {"title": "string"})
    with httpx.Client(base_url=gw.api, timeout=10) as anonymous:
        assert anonymous.post(f"/records/{type_name}", json={"data": {"title": "x"}}).status_code == 401
    with gw.rest("mnx_wrong_key") as wrong:
        assert wrong.get(f"/records/{type_name}").status_code == 401
    with gw.rest() as rest:
        assert ok(rest.get(f"/records/{type_name}"))["total"] == 0


# --- query -----------------------------------------------------------------------------------

def _tickets() -> list[dict[str, Any]]:
    statuses = ["open", "pending", "closed"]
    start = date(2027, 1, 1)
    tickets = []
    for i in range(40):
        data: dict[str, Any] = {"title": f"Ticket {i:02d} {'printer' if i % 4 == 0 else 'laptop'}",
                                "priority": i % 5, "status": statuses[i % 3], "urgent": i % 7 == 0,
                                "tags": ["hw"] if i % 2 else ["hw", "office"],
                                "body": "The toner is EMPTY again" if i % 6 == 0 else "Screen flickers"}
        if i % 8 != 3:
            data["amount"] = round(i * 1.25, 2)
        if i % 10 != 9:
            data["due"] = (start + timedelta(days=i)).isoformat()
        tickets.append(data)
    return tickets


@pytest.fixture(scope="module")
def ticket_type(gw) -> tuple[str, list[dict[str, Any]]]:
    """One type with 40 records of every field type (some values missing), shared by the query tests."""
    type_name = new_type()
    with gw.rest() as rest:
        define(rest, type_name, TICKET_FIELDS)
        records = [insert(rest, type_name, data, owner_id="owner-even" if i % 2 == 0 else "owner-odd")
                   for i, data in enumerate(_tickets())]
    return type_name, records


def _titles(records: list[dict[str, Any]]) -> list[str]:
    return [r["data"]["title"] for r in records]


def _expected(records: list[dict[str, Any]], keep) -> list[str]:
    return _titles([r for r in records if keep(r["data"])])


QUERIES = [
    ({"status": "open"}, lambda d: d["status"] == "open"),
    ({"priority": {"$gte": 3}}, lambda d: d["priority"] >= 3),
    ({"priority": {"$gt": 1, "$lt": 4}}, lambda d: 1 < d["priority"] < 4),
    ({"amount": {"$lte": 10}}, lambda d: "amount" in d and d["amount"] <= 10),
    ({"amount": {"$null": True}}, lambda d: "amount" not in d),
    ({"amount": None}, lambda d: "amount" not in d),
    ({"due": {"$null": False}, "priority": 0}, lambda d: "due" in d and d["priority"] == 0),
    ({"due": {"$gte": "2027-01-10", "$lt": "2027-01-20"}},
     lambda d: "due" in d and "2027-01-10" <= d["due"] < "2027-01-20"),
    ({"status": {"$in": ["open", "closed"]}, "urgent": True},
     lambda d: d["status"] in ("open", "closed") and d["urgent"]),
    ({"status": {"$nin": ["open"]}}, lambda d: d["status"] != "open"),
    ({"status": {"$ne": "pending"}, "priority": 4}, lambda d: d["status"] != "pending" and d["priority"] == 4),
    ({"tags": "office"}, lambda d: "office" in d["tags"]),
    ({"body": {"$contains": "toner is empty"}}, lambda d: "toner is empty" in d["body"].lower()),
    ({"title": {"$contains": "PRINTER"}, "priority": {"$in": [0, 4]}},
     lambda d: "printer" in d["title"] and d["priority"] in (0, 4)),
    ({"$or": [{"priority": 4}, {"status": "pending", "urgent": True}]},
     lambda d: d["priority"] == 4 or (d["status"] == "pending" and d["urgent"])),
    ({"$or": [{"priority": 4}, {"body": {"$contains": "toner"}}]},
     lambda d: d["priority"] == 4 or "toner" in d["body"].lower()),
    ({"$and": [{"priority": {"$gte": 2}}, {"$not": {"status": "closed"}}]},
     lambda d: d["priority"] >= 2 and d["status"] != "closed"),
    ({"title": {"$gte": "Ticket 30"}}, lambda d: d["title"] >= "Ticket 30"),
]


@pytest.mark.parametrize("where, keep", QUERIES, ids=[json.dumps(w) for w, _ in QUERIES])
def test_a_query_returns_exactly_the_matching_records_in_creation_order(gw, ticket_type, where, keep):
    type_name, records = ticket_type
    with gw.rest() as rest:
        found = query(rest, type_name, where=where, limit=250)
    expected = _expected(records, keep)
    assert expected, "the case must match something"
    # Without order_by: creation order, except a query on one range, in that field's order.
    assert sorted(_titles(found["records"])) == sorted(expected)
    assert found["count"] == len(expected) and found["next_cursor"] is None


def test_order_by_sorts_with_missing_values_last_and_pages_by_cursor(gw, ticket_type):
    type_name, records = ticket_type
    with gw.rest() as rest:
        by_amount = query(rest, type_name, order_by="-amount", limit=250)["records"]
        amounts = [r["data"].get("amount") for r in by_amount]
        present = [a for a in amounts if a is not None]
        assert present == sorted(present, reverse=True) and amounts[len(present):] == [None] * (40 - len(present))
        by_due = query(rest, type_name, where={"status": "open"}, order_by="due", limit=250)["records"]
        dues = [r["data"].get("due") for r in by_due]
        assert [d for d in dues if d] == sorted(d for d in dues if d) and dues[-1] is None
        # Cursor paging walks every match once, in order.
        seen: list[str] = []
        page = query(rest, type_name, where={"priority": {"$lte": 3}}, order_by="title", limit=7)
        while True:
            seen += _titles(page["records"])
            if page["next_cursor"] is None:
                break
            page = query(rest, type_name, where={"priority": {"$lte": 3}}, order_by="title", limit=7,
                         cursor=page["next_cursor"])
        assert seen == sorted(_expected(records, lambda d: d["priority"] <= 3))
        # Offset paging and the owner filter.
        second = query(rest, type_name, order_by="created_at", offset=5, limit=5, owner_id="owner-odd")["records"]
        assert _titles(second) == _titles([r for r in records if r["owner_id"] == "owner-odd"][5:10])
        newest = query(rest, type_name, order_by="-created_at", limit=1)["records"]
        assert newest[0]["record_id"] == records[-1]["record_id"]


@pytest.mark.parametrize("body, param, code", [
    ({"where": {"colour": "red"}}, "where.colour", "unknown_field"),
    ({"where": {"priority": "high"}}, "where.priority", "invalid_where"),
    ({"where": {"priority": {"$gt": "3"}}}, "where.priority", "invalid_where"),
    ({"where": {"status": {"$gt": "open"}}}, "where.status", "invalid_where"),
    ({"where": {"priority": {"$regex": ".*"}}}, "where.priority", "invalid_where"),
    ({"where": {"priority": {"$contains": 3}}}, "where.priority", "invalid_where"),
    ({"where": {"$or": {"priority": 1}}}, "where", "invalid_where"),
    ({"where": [1]}, "where", "invalid_where"),
    ({"order_by": "colour"}, "order_by", None),
    ({"order_by": "body"}, "order_by", None),
    ({"limit": 0}, "limit", None),
    ({"cursor": "not-a-cursor"}, "cursor", "invalid_cursor"),
])
def test_a_bad_query_is_a_400_naming_what_is_wrong(gw, ticket_type, body, param, code):
    type_name, _ = ticket_type
    with gw.rest() as rest:
        error = error_of(rest.post(f"/records/{type_name}/query", json=body), 400)
    assert error["param"].startswith(param), error
    if code:
        assert error["error"] == code, error


def test_a_cursor_only_continues_the_query_it_came_from(gw, ticket_type):
    type_name, _ = ticket_type
    with gw.rest() as rest:
        cursor = query(rest, type_name, where={"status": "open"}, limit=2)["next_cursor"]
        assert cursor
        error = error_of(rest.post(f"/records/{type_name}/query", json={"where": {"status": "closed"},
                                                                        "cursor": cursor}), 400)
    assert error["error"] == "invalid_cursor"


def test_indexed_filters_never_read_the_whole_type(start_gateway, storage):
    """With records.max_examined at 100 over 300 records, a filter no index narrows is refused,
    while indexed equality, ranges and ordering answer: they read only what they match."""
    gateway = start_gateway(storage, records={"max_examined": 100})
    type_name = new_type()
    with gateway.rest() as rest:
        define(rest, type_name, {"n": "integer", "kind": "string", "note": "text"})
        for start in range(0, 300, 50):
            for i in range(start, start + 50):
                insert(rest, type_name, {"n": i, "kind": f"k{i % 30}", "note": "plain"})
        assert len(query(rest, type_name, where={"kind": "k7"})["records"]) == 10
        assert [r["data"]["n"] for r in query(rest, type_name, where={"n": {"$gte": 250, "$lt": 260}})["records"]] \
            == list(range(250, 260))
        assert [r["data"]["n"] for r in query(rest, type_name, order_by="-n", limit=3)["records"]] == [299, 298, 297]
        refused = error_of(rest.post(f"/records/{type_name}/query", json={"where": {"note": {"$contains": "x"}}}),
                           400)
        assert refused["error"] == "query_too_broad"


def test_paging_and_ordering_never_read_what_they_skip(start_gateway, storage):
    """Under a small records.max_examined, deep pages of the whole type, ordered or not, and a
    filter no index narrows ordered by an indexed field all answer: the store skips the offset,
    and the order field's index is walked only until the page is full."""
    gateway = start_gateway(storage, records={"max_examined": 100})
    type_name = new_type()
    with gateway.rest() as rest:
        define(rest, type_name, {"n": {"type": "integer", "required": True}, "note": "text", "tag": "string"})
        made = ok(rest.post(f"/records/{type_name}/batch", json={"records": [
            {"data": {"n": i, "note": "even" if i % 2 == 0 else "odd", **({"tag": f"t{i}"} if i % 3 else {})}}
            for i in range(300)]}), 201)["records"]
        assert [r["data"]["n"] for r in query(rest, type_name, offset=250, limit=5)["records"]] == list(range(250, 255))
        assert [r["data"]["n"] for r in query(rest, type_name, order_by="-created_at", offset=290, limit=20)[
            "records"]] == list(range(9, -1, -1))
        assert [r["data"]["n"] for r in query(rest, type_name, order_by="n", offset=297)["records"]] == [297, 298, 299]
        odd_first = query(rest, type_name, where={"note": {"$contains": "odd"}}, order_by="-n", limit=3)
        assert [r["data"]["n"] for r in odd_first["records"]] == [299, 297, 295]
        # An optional field: its index holds the 200 records that have a value.
        by_tag = [r["data"]["tag"] for r in query(rest, type_name, order_by="tag", offset=190, limit=10)["records"]]
        assert by_tag == sorted(f"t{i}" for i in range(300) if i % 3)[190:]
        # A batch, and records made in one millisecond, come back in creation order.
        ids = [r["record_id"] for r in made]
        assert [r["record_id"] for r in query(rest, type_name, where={"n": {"$in": [5, 1, 3, 2]}})["records"]] \
            == [ids[1], ids[2], ids[3], ids[5]]
        either = query(rest, type_name, where={"$or": [{"n": {"$lt": 3}}, {"tag": "t299"}]})["records"]
        assert [r["record_id"] for r in either] == [ids[0], ids[1], ids[2], ids[299]]


def test_an_owners_query_reads_by_owner_when_they_have_fewer_records(start_gateway, storage):
    """Two records of one owner among 300 that all match the where: the owner's listing is read,
    not the where's index, so a small records.max_examined does not refuse it."""
    gateway = start_gateway(storage, records={"max_examined": 100})
    type_name = new_type()
    with gateway.rest() as rest:
        define(rest, type_name, {"status": "string", "n": "integer"})
        ok(rest.post(f"/records/{type_name}/batch", json={"records": [
            {"data": {"status": "open", "n": i}, "owner_id": "many"} for i in range(300)]}), 201)
        ok(rest.post(f"/records/{type_name}/batch", json={"records": [
            {"data": {"status": "open", "n": i}, "owner_id": "few"} for i in (7, 3)]}), 201)
        for body in ({"where": {"status": "open"}}, {"where": {"status": "open"}, "order_by": "-n"}):
            found = query(rest, type_name, owner_id="few", **body)["records"]
            assert sorted(r["data"]["n"] for r in found) == [3, 7] and {r["owner_id"] for r in found} == {"few"}
        # A crafted cursor past the deepest page is a 400, not a store error.
        fingerprint = query_fingerprint(type_name, None, None, None)
        cursor = encode_cursor(2 ** 63 - 1, fingerprint)
        assert error_of(rest.post(f"/records/{type_name}/query", json={"cursor": cursor}),
                        400)["error"] == "invalid_cursor"


def test_a_redefinition_elsewhere_in_a_type_ignores_references_to_deleted_records(gw):
    customer, order = new_type(), new_type()
    with gw.rest() as rest:
        define(rest, customer, {"name": "string"})
        define(rest, order, {"item": "string", "customer": f"ref:{customer}",
                             "status": {"type": "enum", "values": ["open", "legacy"]}})
        ann = insert(rest, customer, {"name": "Ann"})
        insert(rest, order, {"item": "Lamp", "customer": ann["record_id"], "status": "open"})
        ok(rest.delete(f"/records/{customer}/{ann['record_id']}"))
        # Removing an enum value no record holds: the dangling reference is no concern of it.
        ok(rest.post("/records/schemas", json={"type_name": order, "fields": {
            "item": "string", "customer": f"ref:{customer}", "status": {"type": "enum", "values": ["open"]}}}))


@pytest.mark.parametrize("path, body", [
    ("", {"data": {"n": 2 ** 64}}),
    ("", {"data": {"amount": 10 ** 30}}),
    ("/query", {"where": {"amount": 123456789012345678901234567890}}),
    ("/query", {"where": {"n": {"$in": [1, 2 ** 70]}}}),
])
def test_huge_integers_are_a_400_and_store_nothing(gw, path, body):
    type_name = new_type()
    with gw.rest() as rest:
        define(rest, type_name, {"n": "integer", "amount": "number"})
        error = error_of(rest.post(f"/records/{type_name}{path}", json=body), 400)
        assert error["param"].startswith(("data.", "where.")), error
        assert ok(rest.get(f"/records/{type_name}"))["total"] == 0


# --- search ----------------------------------------------------------------------------------

def test_search_finds_records_by_their_text_fields_filtered_by_owner_and_where(gw):
    type_name = new_type()
    with gw.rest() as rest:
        define(rest, type_name, {"title": "string", "body": "text", "priority": "integer"})
        toner = insert(rest, type_name, {"title": "Printer out of toner", "body": "The office printer needs toner",
                                         "priority": 1}, owner_id="sam")
        insert(rest, type_name, {"title": "Laptop screen", "body": "flickers after the update", "priority": 3},
               owner_id="sam")
        other = insert(rest, type_name, {"title": "Toner order", "body": "order two toner cartridges",
                                         "priority": 3}, owner_id="kim")
        hits = ok(rest.post(f"/records/{type_name}/search", json={"query": "printer toner"}))["records"]
        assert [h["record_id"] for h in hits][:2] == [toner["record_id"], other["record_id"]]
        assert 0 < hits[0]["similarity"] <= 1 and hits[0]["data"] == toner["data"]
        mine = ok(rest.post(f"/records/{type_name}/search", json={"query": "toner", "owner_id": "kim"}))["records"]
        assert [h["record_id"] for h in mine] == [other["record_id"]]
        urgent = ok(rest.post(f"/records/{type_name}/search", json={"query": "toner", "where": {"priority": 1}}))
        assert [h["record_id"] for h in urgent["records"]] == [toner["record_id"]]
        # An update is searchable at once; a deleted record is not.
        ok(rest.put(f"/records/{type_name}/{toner['record_id']}", json={"data": {"body": "The scanner is broken"}}))
        hits = ok(rest.post(f"/records/{type_name}/search", json={"query": "scanner"}))["records"]
        assert [h["record_id"] for h in hits] == [toner["record_id"]]
        ok(rest.delete(f"/records/{type_name}/{toner['record_id']}"))
        assert ok(rest.post(f"/records/{type_name}/search", json={"query": "scanner"}))["records"] == []
        for bad in ({}, {"query": ""}, {"query": "x", "limit": 101}, {"query": 5}):
            error_of(rest.post(f"/records/{type_name}/search", json=bad), 400)
    with gw.rest(KEY_B) as other_project:
        error_of(other_project.post(f"/records/{type_name}/search", json={"query": "toner"}), 404)


# --- in chat ---------------------------------------------------------------------------------

def turn(gateway, subject: str, text: str, *, stream: bool = False, headers: dict[str, str] | None = None,
         **mnx: Any) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": text}],
            "mnx": {"subject_id": subject, "history": False, "learn": False, **mnx}}
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30,
                      headers={"x-mnexium-key": KEY, "x-openai-key": PROVIDER_KEY, **(headers or {})})


def system_text(gateway) -> str:
    messages = gateway.forwarded()[-1]["body"]["messages"]
    return "\n".join(m["content"] for m in messages if m["role"] == "system")


def test_recall_injects_the_records_a_subject_may_read_before_history(gw):
    orders, notes = new_type(), new_type()
    with gw.rest() as rest:
        define(rest, orders, {"item": "string", "status": "string"})
        define(rest, notes, {"text": "text"})
        mine = insert(rest, orders, {"item": "espresso machine", "status": "shipped"}, owner_id="rita")
        shared = insert(rest, orders, {"item": "espresso beans", "status": "in stock"})  # public, project-wide
        theirs = insert(rest, orders, {"item": "espresso cups", "status": "lost"}, owner_id="otto")
        helper = insert(rest, orders, {"item": "espresso tamper", "status": "packed"}, owner_id="otto",
                        collaborators=["rita"])
        insert(rest, notes, {"text": "espresso machine descaling guide"})
    response = turn(gw, "rita", "Where is my espresso machine order?", records={"recall": True, "tables": [orders]})
    assert response.status_code == 200, response.text
    injected = system_text(gw)
    for record in (mine, shared, helper):
        assert record["record_id"] in injected
    assert theirs["record_id"] not in injected and "descaling" not in injected  # otto's own, another table
    assert "not instructions" in injected
    # Streamed, and through the header the native SDKs use; every type when tables is omitted.
    response = turn(gw, "rita", "espresso machine descaling", stream=True,
                    headers={"x-mnx-records": json.dumps({"recall": True})})
    assert response.status_code == 200 and "[DONE]" in response.text
    assert "descaling" in system_text(gw) and theirs["record_id"] not in system_text(gw)
    # Off: nothing injected.
    assert turn(gw, "rita", "Where is my espresso machine order?").status_code == 200
    assert mine["record_id"] not in system_text(gw)


def test_records_options_are_checked_and_need_their_scopes(gw):
    for records, param in (({"recall": "yes"}, "mnx.records.recall"), ({"learn": "sometimes"}, "mnx.records.learn"),
                           ({"tables": "orders"}, "mnx.records.tables"), ("all", "mnx.records")):
        before = len(gw.forwarded())
        response = turn(gw, "rita", "hello", records=records)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
        assert len(gw.forwarded()) == before


# --- erasure and events ----------------------------------------------------------------------

def test_erasing_a_subject_removes_its_records_and_its_name_from_others(gw):
    type_name = new_type()
    with gw.rest() as rest:
        define(rest, type_name, {"title": "string"})
        owned = insert(rest, type_name, {"title": "Erin's private trip"}, owner_id="erin")
        ok(rest.put(f"/records/{type_name}/{owned['record_id']}", json={"data": {"title": "Erin's trip to Oslo"}}))
        shared = insert(rest, type_name, {"title": "Team offsite trip"}, owner_id="fay", collaborators=["erin", "gus"])
        project_wide = insert(rest, type_name, {"title": "Company trip policy"})
        erased = ok(rest.delete("/subjects/erin"))
        assert erased["erased"]["records"] == 1
        error_of(rest.get(f"/records/{type_name}/{owned['record_id']}"), 404)
        error_of(rest.get(f"/records/{type_name}/{owned['record_id']}/history"), 404)
        assert ok(rest.get(f"/records/{type_name}/{shared['record_id']}"))["collaborators"] == ["gus"]
        remaining = {r["record_id"] for r in ok(rest.get(f"/records/{type_name}"))["records"]}
        assert remaining == {shared["record_id"], project_wide["record_id"]}
        hits = ok(rest.post(f"/records/{type_name}/search", json={"query": "trip Oslo"}))["records"]
        assert owned["record_id"] not in [h["record_id"] for h in hits]
        assert query(rest, type_name, where={"owner_id": "erin"})["records"] == []
    # Erin's chat no longer recalls the shared record as a collaborator (it is fay's, private).
    turn(gw, "erin", "offsite trip", records={"recall": True, "tables": [type_name]})
    assert shared["record_id"] not in system_text(gw)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_change_under_way_when_its_owner_is_erased_does_not_bring_anything_back(tmp_path, backend):
    """A PUT reads the record, the owner is erased, the PUT writes: it must not store the record
    again, and an edit of another subject's record must not list the erased one again."""
    if backend == "redis":
        require_redis()
    prefix = f"mnxtest:records-erase:{id(tmp_path)}:"
    storage = ({"backend": "sqlite", "sqlite": {"path": str(tmp_path / "g.db")}} if backend == "sqlite" else
               {"backend": "redis", "redis": {"url": REDIS_URL, "key_prefix": prefix}})

    async def scenario() -> None:
        from gateway.records.records import RECORDS, NewRecord, Provenance

        services = Services.build(parse_config({"storage": storage, "memory": edge_memory(tmp_path / "index"),
                                                "projects": [{"id": "p", "keys": [{"key": "mnx_k"}]}]}))
        await services.start()
        records, api = services.records, Provenance("api")
        try:
            await records.define_schema("p", {"type_name": "note", "fields": {"text": "string"}})
            anns = await records.insert("p", "note", NewRecord({"text": "ann's secret"}, owner_id="ann"),
                                        provenance=api)
            bobs = await records.insert("p", "note", NewRecord({"text": "bob's plan"}, owner_id="bob",
                                                               collaborators=["ann", "cy"]), provenance=api)
            store = services.store
            real_get = store.get

            async def slow_get(collection, project_id, doc_id):  # the PUTs read, then the erasure runs
                doc = await real_get(collection, project_id, doc_id)
                if collection is RECORDS:
                    await asyncio.sleep(0.3)
                return doc

            async def erase() -> None:
                await asyncio.sleep(0.1)
                await services.erasure.erase("p", "ann")

            store.get = slow_get  # type: ignore[method-assign]
            outcomes = await asyncio.gather(
                records.update("p", "note", anns["record_id"], {"text": "edited"}, provenance=api),
                records.update("p", "note", bobs["record_id"], {"text": "bob edited"}, provenance=api),
                erase(), return_exceptions=True)
            store.get = real_get  # type: ignore[method-assign]
            assert type(outcomes[0]).__name__ == "RecordNotFound", outcomes
            assert not isinstance(outcomes[1], Exception), outcomes
            assert await store.get(RECORDS, "p", anns["record_id"]) is None
            bob_now = await store.get(RECORDS, "p", bobs["record_id"])
            assert bob_now["collaborators"] == ["cy"] and bob_now["data"] == {"text": "bob edited"}
            assert await records.recall("p", "ann", "secret edited plan", tables=["note"]) == []
        finally:
            await services.aclose()
            if backend == "redis":
                drop_redis_prefix(prefix)

    asyncio.run(scenario())


def test_a_schema_change_racing_a_write_never_leaves_a_record_its_schema_refuses(tmp_path):
    """A write validated under the old schema that would land after a redefinition is refused
    (409 schema_changed); one that lands while the redefinition checks the stored records is
    checked too, and the redefinition it breaks is undone (409 schema_conflict)."""
    async def scenario() -> None:
        from gateway.errors import Conflict
        from gateway.records.records import RECORDS, NewRecord, Provenance

        services = Services.build(parse_config({
            "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "g.db")}},
            "memory": edge_memory(tmp_path / "index"), "projects": [{"id": "p", "keys": [{"key": "mnx_k"}]}]}))
        await services.start()
        records, api = services.records, Provenance("api")
        optional = {"type_name": "trip", "fields": {"city": "string", "days": "integer"}}
        required = {"type_name": "trip", "fields": {"city": "string", "days": {"type": "integer", "required": True}}}
        try:
            await records.define_schema("p", optional)
            # 1. The write validated under "days optional", the schema turned "days required" before it stored.
            index, real_embed = records.index, records.index.embed

            async def slow_embed(*args, **kwargs):
                await asyncio.sleep(0.2)
                return await real_embed(*args, **kwargs)

            index.embed = slow_embed  # type: ignore[method-assign]
            outcome = await asyncio.gather(
                records.insert("p", "trip", NewRecord({"city": "Oslo"}), provenance=api),
                records.define_schema("p", required), return_exceptions=True)
            assert isinstance(outcome[0], Conflict) and outcome[0].code == "schema_changed", outcome
            assert await services.store.count(RECORDS, "p", {"_live": "trip"}) == 0
            # ... while a write that fits the new schema too goes through (a new optional field, or
            # the very same definition again, as apps send at every start).
            await records.define_schema("p", optional)
            for redefinition in (optional, {**optional, "fields": {**optional["fields"], "note": "text"}}):
                outcome = await asyncio.gather(
                    records.insert("p", "trip", NewRecord({"city": "Bern", "days": 2}), provenance=api),
                    records.define_schema("p", redefinition), return_exceptions=True)
                assert not any(isinstance(result, Exception) for result in outcome), outcome
            index.embed = real_embed  # type: ignore[method-assign]
            assert await services.store.count(RECORDS, "p", {"_live": "trip"}) == 2
            # 2. A write that lands while a redefinition reads the stored records.
            await records.define_schema("p", optional)
            await records.insert("p", "trip", NewRecord({"city": "Rome", "days": 3}), provenance=api)
            store, real_find = services.store, services.store.find

            async def slow_find(collection, *args, **kwargs):
                found = await real_find(collection, *args, **kwargs)
                if collection is RECORDS:
                    await asyncio.sleep(0.2)
                return found

            async def late_insert() -> None:
                await asyncio.sleep(0.05)
                await records.insert("p", "trip", NewRecord({"city": "Lima"}), provenance=api)

            store.find = slow_find  # type: ignore[method-assign]
            outcome = await asyncio.gather(records.define_schema("p", required), late_insert(),
                                           return_exceptions=True)
            store.find = real_find  # type: ignore[method-assign]
            assert isinstance(outcome[0], Conflict) and outcome[0].code == "schema_conflict", outcome
            assert (await records.schema("p", "trip")).fields["days"].required is False
        finally:
            await services.aclose()

    asyncio.run(scenario())


def test_record_writes_are_published_on_the_event_stream(tmp_path):
    async def scenario() -> list[tuple[str, dict[str, Any]]]:
        services = Services.build(parse_config({
            "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "g.db")}},
            "memory": edge_memory(tmp_path / "index"), "projects": [{"id": "p", "keys": [{"key": "mnx_k"}]}]}))
        await services.start()
        from gateway.records.records import NewRecord, Provenance

        records = services.records
        seen = []
        try:
            with services.memories.events.subscribe("p", "ann") as ann:
                await records.define_schema("p", {"type_name": "trip", "fields": {"city": "string"}})
                made = await records.insert("p", "trip", NewRecord({"city": "Oslo"}, owner_id="ann"),
                                            provenance=Provenance("api"))
                await records.insert("p", "trip", NewRecord({"city": "Rome"}, owner_id="bob"),
                                     provenance=Provenance("api"))
                await records.update("p", "trip", made["record_id"], {"city": "Bergen"}, provenance=Provenance("api"))
                await records.delete("p", "trip", made["record_id"], provenance=Provenance("api"))
                while (event := ann.take_nowait()) is not None:
                    seen.append((event.type, event.data))
        finally:
            await services.aclose()
        return seen

    events = asyncio.run(scenario())
    assert [kind for kind, _ in events] == ["record.created", "record.updated", "record.deleted"]
    assert events[0][1]["data"] == {"city": "Oslo"} and events[1][1]["data"] == {"city": "Bergen"}
    assert events[0][1]["type_name"] == "trip" and events[0][1]["subject_id"] == "ann"


# --- the mnexium SDK -------------------------------------------------------------------------

def test_the_mnexium_sdk_records_client_works_unchanged(gw):
    client = Mnexium(api_key=KEY, base_url=gw.api, max_retries=0)
    type_name = new_type()
    records = client.records
    schema = records.define_schema(type_name, {"name": {"type": "string", "required": True}, "visits": "integer",
                                               "last_visit": "datetime"}, display_name="Customer")
    assert schema["type_name"] == type_name and records.get_schema(type_name)["display_name"] == "Customer"
    assert type_name in [s["type_name"] for s in records.list_schemas()]
    assert records.get_schema("no_such_type_here") is None
    stamp = datetime(2026, 12, 1, 9, 30, tzinfo=UTC).isoformat()
    ada = records.insert(type_name, {"name": "Ada", "visits": 3, "last_visit": stamp}, owner_id="ada")
    grace = records.insert(type_name, {"name": "Grace", "visits": 7})
    assert records.get(type_name, ada["record_id"])["data"]["name"] == "Ada"
    updated = records.update(type_name, ada["record_id"], {"visits": 4})
    assert updated["data"] == {"name": "Ada", "visits": 4, "last_visit": "2026-12-01T09:30:00Z"}
    frequent = records.query(type_name, where={"visits": {"$gte": 4}}, order_by="-visits")
    assert [r["record_id"] for r in frequent] == [grace["record_id"], ada["record_id"]]
    assert [r["record_id"] for r in records.query(type_name, where={"name": "Ada"}, limit=1)] == [ada["record_id"]]
    hits = records.search(type_name, "Grace", limit=5)
    assert hits[0]["record_id"] == grace["record_id"] and "similarity" in hits[0]
    records.delete(type_name, ada["record_id"])
    assert records.get(type_name, ada["record_id"]) is None
