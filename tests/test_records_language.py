"""Record schemas and the records query language (gateway/records/schema.py, query.py).

What a client of POST /records/schemas, POST /records/{type} and POST /records/{type}/query
sees from them: which definitions and values are accepted and how they are stored, which are
refused and with what code and param, which records a where matches and in what order, and
which store index a query reads its candidates from.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.errors import BadRequest
from gateway.records.query import (AllOf, AnyOf, Comparison, NoneOf, Order, Plan, index_name, matches, parse_order,
                                   parse_where, plan, sort_key)
from gateway.records.schema import (FieldDef, RecordSchema, compatibility_risks, epoch_seconds, json_schema,
                                    ordered_values, parse_schema, reindex_needed, searchable_text, validate_data)
from gateway.store.base import OrderedRange

FIELDS: dict[str, Any] = {
    "title": {"type": "string", "required": True, "display_name": "Title"},
    "notes": "text",
    "amount": "number",
    "quantity": "integer",
    "paid": "boolean",
    "due": "date",
    "sent_at": "datetime",
    "status": {"type": "enum", "values": ["open", "paid", "void"]},
    "customer": "ref:customer",
    "tags": "string[]",
    "scores": {"type": "array", "items": "number"},
    "related": {"type": "array", "items": {"type": "ref", "ref": "invoice"}},
}
SCHEMA = parse_schema({"type_name": "invoice", "fields": FIELDS, "description": "Bills we sent"})


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).astimezone(UTC).timestamp()


def refused(call, *args: Any, **kwargs: Any) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        call(*args, **kwargs)
    assert caught.value.status == 400
    return caught.value


def record(data: dict[str, Any], record_id: str = "rec_1", created_at: str = "2024-01-01T00:00:00.000Z",
           owner_id: str | None = "alice") -> dict[str, Any]:
    return {"record_id": record_id, "owner_id": owner_id, "created_at": created_at, "updated_at": created_at,
            "data": data}


# --- schema parsing ----------------------------------------------------------------------------


def test_shorthands_and_objects_define_the_same_fields():
    assert SCHEMA.type_name == "invoice" and SCHEMA.description == "Bills we sent"
    fields = SCHEMA.fields
    assert fields["title"] == FieldDef("title", "string", required=True, display_name="Title")
    assert fields["notes"] == FieldDef("notes", "text")
    assert fields["status"].values == ("open", "paid", "void")
    assert (fields["customer"].type, fields["customer"].ref, fields["customer"].array) == ("ref", "customer", False)
    assert (fields["tags"].type, fields["tags"].array) == ("string", True)
    assert (fields["scores"].type, fields["scores"].array) == ("number", True)
    assert (fields["related"].type, fields["related"].ref, fields["related"].array) == ("ref", "invoice", True)
    spelled_out = parse_schema({"type_name": "x", "fields": {"c": {"type": "ref", "ref": "customer"},
                                                             "t": {"type": "array", "items": {"type": "string"}},
                                                             "r": "ref:customer[]"}})
    assert spelled_out.fields["c"] == FieldDef("c", "ref", ref="customer")
    assert spelled_out.fields["t"] == FieldDef("t", "string", array=True)
    assert spelled_out.fields["r"] == FieldDef("r", "ref", ref="customer", array=True)


@pytest.mark.parametrize("alias,meant", [("str", "string"), ("int", "integer"), ("float", "number"),
                                         ("bool", "boolean"), ("timestamp", "datetime"), ("Number", "number")])
def test_type_aliases(alias, meant):
    assert parse_schema({"type_name": "t", "fields": {"f": alias}}).fields["f"].type == meant
    assert parse_schema({"type_name": "t", "fields": {"f": alias + "[]"}}).fields["f"] == FieldDef("f", meant,
                                                                                                   array=True)


def test_reference_alias_takes_its_target():
    assert parse_schema({"type_name": "t", "fields": {"f": {"type": "reference", "ref": "customer"}}}
                        ).fields["f"] == FieldDef("f", "ref", ref="customer")
    assert parse_schema({"type_name": "t", "fields": {"f": "reference:customer"}}).fields["f"].ref == "customer"


def test_legacy_schema_wrapper_with_extra_keys():
    legacy = parse_schema({"type_name": "deal", "schema": {"fields": {"stage": "string", "value": "number"}},
                           "subject_id": "user_1", "mnx": {"subject_id": "user_1"}})
    assert list(legacy.fields) == ["stage", "value"]
    both = parse_schema({"type_name": "deal", "fields": {"a": "number"}, "schema": {"fields": {"b": "number"}}})
    assert list(both.fields) == ["a"]


def test_to_api_round_trips():
    again = parse_schema({"type_name": "invoice", "fields": {name: d.to_api() for name, d in SCHEMA.fields.items()},
                          "description": "Bills we sent"})
    assert again == SCHEMA
    assert SCHEMA.fields["related"].to_api() == {"type": "array", "items": {"type": "ref", "ref": "invoice"},
                                                 "required": False, "description": "", "display_name": None}
    assert SCHEMA.fields["status"].to_api()["values"] == ["open", "paid", "void"]


@pytest.mark.parametrize("body,code,param", [
    ({"fields": {"a": "string"}}, "invalid_type_name", "type_name"),
    ({"type_name": "9lives", "fields": {"a": "string"}}, "invalid_type_name", "type_name"),
    ({"type_name": "bad name", "fields": {"a": "string"}}, "invalid_type_name", "type_name"),
    ({"type_name": "x" * 65, "fields": {"a": "string"}}, "invalid_type_name", "type_name"),
    ({"type_name": "t"}, "invalid_schema", "fields"),
    ({"type_name": "t", "fields": ["a"]}, "invalid_schema", "fields"),
    ({"type_name": "t", "fields": {f"f{i}": "string" for i in range(101)}}, "invalid_schema", "fields"),
    ({"type_name": "t", "fields": {"1st": "string"}}, "invalid_schema", "fields.1st"),
    ({"type_name": "t", "fields": {"a-b": "string"}}, "invalid_schema", "fields.a-b"),
    ({"type_name": "t", "fields": {"a" * 65: "string"}}, "invalid_schema", "fields." + "a" * 65),
    ({"type_name": "t", "fields": {"created_at": "datetime"}}, "invalid_schema", "fields.created_at"),
    ({"type_name": "t", "fields": {"amount": "money"}}, "invalid_schema", "fields.amount.type"),
    ({"type_name": "t", "fields": {"amount": {"type": "money"}}}, "invalid_schema", "fields.amount.type"),
    ({"type_name": "t", "fields": {"amount": {"required": True}}}, "invalid_schema", "fields.amount.type"),
    ({"type_name": "t", "fields": {"amount": 5}}, "invalid_schema", "fields.amount"),
    ({"type_name": "t", "fields": {"s": "enum"}}, "invalid_schema", "fields.s.values"),
    ({"type_name": "t", "fields": {"s": {"type": "enum", "values": []}}}, "invalid_schema", "fields.s.values"),
    ({"type_name": "t", "fields": {"s": {"type": "enum", "values": ["a", "a"]}}}, "invalid_schema",
     "fields.s.values"),
    ({"type_name": "t", "fields": {"s": {"type": "enum", "values": ["a", 1]}}}, "invalid_schema", "fields.s.values"),
    ({"type_name": "t", "fields": {"s": {"type": "string", "values": ["a"]}}}, "invalid_schema", "fields.s.values"),
    ({"type_name": "t", "fields": {"c": "ref"}}, "invalid_schema", "fields.c.ref"),
    ({"type_name": "t", "fields": {"c": "ref:"}}, "invalid_schema", "fields.c.ref"),
    ({"type_name": "t", "fields": {"c": "ref:bad target"}}, "invalid_schema", "fields.c.ref"),
    ({"type_name": "t", "fields": {"c": {"type": "ref:a", "ref": "b"}}}, "invalid_schema", "fields.c.ref"),
    ({"type_name": "t", "fields": {"c": "number:x"}}, "invalid_schema", "fields.c.type"),
    ({"type_name": "t", "fields": {"l": "array"}}, "invalid_schema", "fields.l.items"),
    ({"type_name": "t", "fields": {"l": {"type": "array", "items": "string[]"}}}, "invalid_schema",
     "fields.l.items.type"),
    ({"type_name": "t", "fields": {"l": {"type": "array", "items": "strng"}}}, "invalid_schema",
     "fields.l.items.type"),
    ({"type_name": "t", "fields": {"a": {"type": "string", "required": "yes"}}}, "invalid_schema",
     "fields.a.required"),
    ({"type_name": "t", "fields": {"a": {"type": "string", "description": 5}}}, "invalid_schema",
     "fields.a.description"),
    ({"type_name": "t", "fields": {}, "display_name": "x" * 201}, "invalid_schema", "display_name"),
])
def test_bad_schemas_are_refused_naming_the_part(body, code, param):
    error = refused(parse_schema, body)
    assert (error.code, error.extra["param"]) == (code, param)


# --- validating data ---------------------------------------------------------------------------


def test_each_type_is_accepted_and_normalised():
    data = validate_data(SCHEMA, {
        "title": "Invoice 7", "notes": "long " * 1000, "amount": 12.5, "quantity": 3.0, "paid": False,
        "due": "2024-02-29", "sent_at": "2024-05-01T12:30:00+02:00", "status": "open", "customer": "rec_abc",
        "tags": ["urgent", "q2"], "scores": [1, 2.5], "related": ["rec_a", "rec_b"]})
    assert data == {
        "title": "Invoice 7", "notes": "long " * 1000, "amount": 12.5, "quantity": 3, "paid": False,
        "due": "2024-02-29", "sent_at": "2024-05-01T10:30:00Z", "status": "open", "customer": "rec_abc",
        "tags": ["urgent", "q2"], "scores": [1, 2.5], "related": ["rec_a", "rec_b"]}
    assert isinstance(data["quantity"], int)
    # Stored data validates to itself (a schema change re-checks stored records that way).
    assert validate_data(SCHEMA, data) == data


@pytest.mark.parametrize("given,stored", [
    ("2024-05-01T12:30:00Z", "2024-05-01T12:30:00Z"),
    ("2024-05-01T12:30:00.250+00:00", "2024-05-01T12:30:00.250000Z"),
    ("2024-05-01T00:30:00-05:30", "2024-05-01T06:00:00Z"),
    ("2024-05-01T12:30:00", "2024-05-01T12:30:00Z"),  # naive: UTC
    ("2024-05-01 12:30", "2024-05-01T12:30:00Z"),
    ("2024-05-01", "2024-05-01T00:00:00Z"),
    ("2024-01-01T00:30:00+01:00", "2023-12-31T23:30:00Z"),
])
def test_datetimes_are_stored_in_utc_with_z(given, stored):
    assert validate_data(SCHEMA, {"title": "t", "sent_at": given})["sent_at"] == stored


def test_numbers_integers_and_booleans_are_told_apart():
    assert validate_data(SCHEMA, {"title": "t", "amount": 7})["amount"] == 7
    assert validate_data(SCHEMA, {"title": "t", "amount": -0.5})["amount"] == -0.5
    assert validate_data(SCHEMA, {"title": "t", "quantity": 2 ** 53})["quantity"] == 2 ** 53
    assert validate_data(SCHEMA, {"title": "t", "paid": True})["paid"] is True


@pytest.mark.parametrize("name,value,expected", [
    ("title", 5, "a string"),
    ("title", ["a"], "a string"),
    ("notes", {"a": 1}, "a string"),
    ("amount", "12", "a number"),
    ("amount", True, "a number"),
    ("amount", float("nan"), "finite"),
    ("amount", 10 ** 400, "2**53"),
    ("amount", 2 ** 64, "2**53"),
    ("quantity", 1.5, "an integer"),
    ("quantity", True, "an integer"),
    ("quantity", "3", "an integer"),
    ("quantity", 2 ** 53 + 1, "2**53"),
    ("paid", 1, "true or false"),
    ("paid", "true", "true or false"),
    ("due", "2024-02-30", "calendar date"),
    ("due", "2024-05-01T10:00:00Z", "YYYY-MM-DD"),
    ("due", "01/05/2024", "YYYY-MM-DD"),
    ("due", 20240501, "YYYY-MM-DD"),
    ("sent_at", "yesterday", "ISO 8601"),
    ("sent_at", 1714560000, "ISO 8601"),
    ("sent_at", "0001-01-01T00:00:00+01:00", "ISO 8601"),  # before year 1 in UTC
    ("status", "closed", "'open', 'paid', 'void'"),
    ("status", "OPEN", "one of"),
    ("customer", "", "record_id of a customer record"),
    ("customer", 7, "record_id of a customer record"),
    ("customer", "rec\n1", "printable"),
    ("tags", "urgent", "an array of a string"),
    ("tags", ["ok", 5], "[1] must be a string"),
    ("tags", ["ok", None], "[1] must be a string"),
    ("scores", [1, "2"], "[1] must be a number"),
    ("related", ["rec_a", ""], "[1]"),
])
def test_wrong_values_are_refused_naming_field_and_expected_type(name, value, expected):
    error = refused(validate_data, SCHEMA, {"title": "t", name: value})
    assert (error.code, error.extra["param"]) == ("invalid_field_value", f"data.{name}")
    assert expected in error.message and f"data.{name}" in error.message


def test_string_length_limits_and_nul():
    assert validate_data(SCHEMA, {"title": "x" * 1000})["title"] == "x" * 1000
    too_long = refused(validate_data, SCHEMA, {"title": "x" * 1001})
    assert (too_long.code, too_long.extra["param"]) == ("invalid_field_value", "data.title")
    assert "1,000" in too_long.message and "text field" in too_long.message
    assert len(validate_data(SCHEMA, {"title": "t", "notes": "y" * 20_000})["notes"]) == 20_000
    assert refused(validate_data, SCHEMA, {"title": "t", "notes": "y" * 20_001}).extra["param"] == "data.notes"
    for name, value in (("title", "a\x00b"), ("notes", "a\x00b"), ("tags", ["a\x00"])):
        error = refused(validate_data, SCHEMA, {"title": "t", name: value})
        assert (error.code, error.extra["param"]) == ("invalid_field_value", f"data.{name}")
        assert "NUL" in error.message


def test_arrays_are_limited_to_1000_elements():
    assert len(validate_data(SCHEMA, {"title": "t", "tags": ["a"] * 1000})["tags"]) == 1000
    assert refused(validate_data, SCHEMA, {"title": "t", "tags": ["a"] * 1001}).extra["param"] == "data.tags"


def test_data_must_be_an_object_of_known_fields_with_the_required_ones():
    for data in (None, [], "x", 5):
        error = refused(validate_data, SCHEMA, data)
        assert (error.code, error.extra["param"]) == ("invalid_data", "data")
    unknown = refused(validate_data, SCHEMA, {"title": "t", "colour": "red"})
    assert (unknown.code, unknown.extra["param"]) == ("unknown_field", "data.colour")
    assert "amount" in unknown.message  # it lists the fields there are
    missing = refused(validate_data, SCHEMA, {"amount": 5})
    assert (missing.code, missing.extra["param"]) == ("missing_required_field", "data.title")
    null_required = refused(validate_data, SCHEMA, {"title": None})
    assert (null_required.code, null_required.extra["param"]) == ("missing_required_field", "data.title")


def test_null_is_absent_on_insert_and_a_removal_when_partial():
    assert validate_data(SCHEMA, {"title": "t", "amount": None}) == {"title": "t"}
    assert validate_data(SCHEMA, {"amount": None, "status": "paid"}, partial=True) == {"amount": None,
                                                                                       "status": "paid"}


def test_partial_skips_required_but_still_checks_values_and_names():
    assert validate_data(SCHEMA, {"amount": 3}, partial=True) == {"amount": 3}
    assert validate_data(SCHEMA, {}, partial=True) == {}
    assert refused(validate_data, SCHEMA, {"amount": "3"}, partial=True).code == "invalid_field_value"
    assert refused(validate_data, SCHEMA, {"colour": "red"}, partial=True).code == "unknown_field"
    assert validate_data(SCHEMA, {"sent_at": "2024-05-01T12:30:00+02:00"}, partial=True) == {
        "sent_at": "2024-05-01T10:30:00Z"}


# --- what the indexes and the extractor read ---------------------------------------------------


def test_ordered_values_as_the_index_holds_them():
    data = validate_data(SCHEMA, {"title": "B", "notes": "not indexed", "amount": 12.5, "quantity": 3, "paid": True,
                                  "due": "2024-05-01", "sent_at": "2024-05-01T12:00:00+02:00", "status": "open",
                                  "customer": "rec_c", "tags": ["x", "y", "x"], "scores": [],
                                  "related": ["rec_a"]})
    assert ordered_values(SCHEMA, data) == {
        "title": ["B"], "amount": [12.5], "quantity": [3], "paid": [1], "due": [epoch("2024-05-01T00:00:00+00:00")],
        "sent_at": [epoch("2024-05-01T10:00:00+00:00")], "status": ["open"], "customer": ["rec_c"],
        "tags": ["x", "y"], "related": ["rec_a"]}
    assert ordered_values(SCHEMA, {"paid": False, "title": "t"})["paid"] == [0]


def test_epoch_seconds_of_dates_and_datetimes():
    assert epoch_seconds("1970-01-02") == 86_400
    assert epoch_seconds("1970-01-01T00:00:01.500000Z") == 1.5
    assert epoch_seconds("2024-05-01T12:00:00+02:00") == epoch_seconds("2024-05-01T10:00:00Z")


def test_searchable_text_holds_the_string_text_and_enum_fields():
    data = {"title": "Invoice 7", "notes": "Paid late\nagain", "amount": 5, "status": "open", "tags": ["a", "b"],
            "customer": "rec_c"}
    assert searchable_text(SCHEMA, data) == "Title: Invoice 7\nnotes: Paid late\nagain\nstatus: open\ntags: a, b"


def test_json_schema_describes_the_data():
    described = json_schema(SCHEMA)
    assert described["type"] == "object" and described["additionalProperties"] is False
    assert described["required"] == ["title"]
    props = described["properties"]
    assert props["title"] == {"type": "string", "maxLength": 1000, "description": "Title"}
    assert props["quantity"] == {"type": "integer"}
    assert props["due"] == {"type": "string", "format": "date"}
    assert props["sent_at"] == {"type": "string", "format": "date-time"}
    assert props["status"] == {"type": "string", "enum": ["open", "paid", "void"]}
    assert props["tags"] == {"type": "array", "items": {"type": "string", "maxLength": 1000}}
    assert "customer" in props["customer"]["description"]


# --- schema changes ----------------------------------------------------------------------------


def changed(**fields: Any) -> RecordSchema:
    return parse_schema({"type_name": "invoice", "fields": {**FIELDS, **fields}})


def test_compatible_changes_have_no_risks():
    assert compatibility_risks(SCHEMA, SCHEMA) == []
    assert compatibility_risks(SCHEMA, changed(extra="string")) == []  # a new optional field
    assert compatibility_risks(SCHEMA, changed(quantity="number", title={"type": "text", "required": True},
                                               status="string", customer="string")) == []
    assert compatibility_risks(SCHEMA, changed(status={"type": "enum", "values": ["open", "paid", "void", "x"]})) == []
    assert compatibility_risks(SCHEMA, changed(title="string")) == []  # no longer required


@pytest.mark.parametrize("fields,risk", [
    ({"amount": "integer"}, "amount: type changed from number to integer"),
    ({"notes": "string"}, "notes: type changed from text to string"),
    ({"tags": "string"}, "tags: type changed from string[] to string"),
    ({"amount": "number[]"}, "amount: type changed from number to number[]"),
    ({"due": "datetime"}, "due: type changed from date to datetime"),
    ({"status": {"type": "enum", "values": ["open", "paid"]}}, "status: enum values removed: void"),
    ({"customer": "ref:client"}, "customer: ref target changed from customer to client"),
    ({"amount": {"type": "number", "required": True}}, "amount: now required"),
    ({"extra": {"type": "string", "required": True}}, "extra: new required field"),
])
def test_each_risky_change_is_named(fields, risk):
    assert compatibility_risks(SCHEMA, changed(**fields)) == [risk]


def test_a_removed_field_is_a_risk():
    fewer = parse_schema({"type_name": "invoice", "fields": {k: v for k, v in FIELDS.items() if k != "notes"}})
    assert compatibility_risks(SCHEMA, fewer) == ["notes: removed"]


def test_reindex_needed_after_a_type_change_of_an_indexed_field():
    assert reindex_needed(SCHEMA, changed(notes="string", amount="integer", title="text")) == ["notes", "amount"]
    assert reindex_needed(SCHEMA, changed(extra="number")) == []


# --- where -------------------------------------------------------------------------------------


def where_error(where: Any) -> BadRequest:
    return refused(parse_where, SCHEMA, where)


def test_no_where():
    assert parse_where(SCHEMA, None) is None
    assert parse_where(SCHEMA, {}) is None


def test_equality_and_null_shorthands():
    assert parse_where(SCHEMA, {"status": "open"}) == Comparison("status", "eq", "open")
    assert parse_where(SCHEMA, {"amount": None}) == Comparison("amount", "null", True)
    assert parse_where(SCHEMA, {"tags": "urgent"}) == Comparison("tags", "eq", "urgent")
    assert parse_where(SCHEMA, {"status": "open", "paid": False}) == AllOf(
        (Comparison("status", "eq", "open"), Comparison("paid", "eq", False)))


def test_every_operator_parses_with_normalised_operands():
    day = epoch("2024-05-01T00:00:00+00:00")
    assert parse_where(SCHEMA, {"amount": {"$eq": 5}}) == Comparison("amount", "eq", 5)
    assert parse_where(SCHEMA, {"amount": {"$ne": 5}}) == Comparison("amount", "ne", 5)
    assert parse_where(SCHEMA, {"amount": {"$eq": None}}) == Comparison("amount", "null", True)
    assert parse_where(SCHEMA, {"amount": {"$ne": None}}) == Comparison("amount", "null", False)
    assert parse_where(SCHEMA, {"amount": {"$gt": 1, "$lte": 9.5}}) == AllOf(
        (Comparison("amount", "gt", 1), Comparison("amount", "lte", 9.5)))
    assert parse_where(SCHEMA, {"due": {"$gte": "2024-05-01"}}) == Comparison("due", "gte", day)
    assert parse_where(SCHEMA, {"sent_at": {"$lt": "2024-05-01T02:00:00+02:00"}}) == Comparison("sent_at", "lt", day)
    assert parse_where(SCHEMA, {"title": {"$gte": "M"}}) == Comparison("title", "gte", "M")
    assert parse_where(SCHEMA, {"quantity": {"$in": [1, 2.0, 1]}}) == Comparison("quantity", "in", (1, 2))
    assert parse_where(SCHEMA, {"status": {"$nin": ["void"]}}) == Comparison("status", "nin", ("void",))
    assert parse_where(SCHEMA, {"notes": {"$contains": "Late"}}) == Comparison("notes", "contains", "Late")
    assert parse_where(SCHEMA, {"tags": {"$contains": "q2"}}) == Comparison("tags", "contains", "q2")
    assert parse_where(SCHEMA, {"paid": {"$null": False}}) == Comparison("paid", "null", False)
    assert parse_where(SCHEMA, {"record_id": {"$in": ["rec_1"]}}) == Comparison("record_id", "in", ("rec_1",))
    assert parse_where(SCHEMA, {"created_at": {"$gte": "2024-05-01"}}) == Comparison("created_at", "gte", day)
    assert parse_where(SCHEMA, {"owner_id": "alice"}) == Comparison("owner_id", "eq", "alice")


def test_and_or_not_nest_and_flatten():
    predicate = parse_where(SCHEMA, {"$or": [{"status": "open"}, {"$and": [{"paid": True}, {"amount": {"$gt": 5}}]}],
                                     "$not": {"tags": "spam"}})
    assert predicate == AllOf((
        AnyOf((Comparison("status", "eq", "open"), AllOf((Comparison("paid", "eq", True),
                                                          Comparison("amount", "gt", 5))))),
        NoneOf(Comparison("tags", "eq", "spam"))))
    assert parse_where(SCHEMA, {"$and": [{"$and": [{"paid": True}]}, {"amount": 1}]}) == AllOf(
        (Comparison("paid", "eq", True), Comparison("amount", "eq", 1)))


def test_nesting_and_size_limits():
    where: dict[str, Any] = {"paid": True}
    for _ in range(7):
        where = {"$not": where}
    assert parse_where(SCHEMA, where) is not None  # 8 levels
    too_deep = where_error({"$not": where})
    assert (too_deep.code, too_deep.extra["param"]) == ("invalid_where", "where")
    assert parse_where(SCHEMA, {"$or": [{"amount": i} for i in range(100)]}) is not None
    too_many = where_error({"$or": [{"amount": i} for i in range(101)]})
    assert (too_many.code, too_many.extra["param"]) == ("invalid_where", "where")
    too_long = where_error({"amount": {"$in": list(range(101))}})
    assert (too_long.code, too_long.extra["param"]) == ("invalid_where", "where.amount.$in")


def test_unknown_fields_are_named():
    for where, param in (({"colour": "red"}, "where.colour"), ({"$or": [{"colour": "red"}]}, "where.colour"),
                         ({"data": {"$eq": 1}}, "where.data")):
        error = where_error(where)
        assert (error.code, error.extra["param"]) == ("unknown_field", param)


@pytest.mark.parametrize("where,param", [
    ({"amount": "5"}, "where.amount.$eq"),
    ({"amount": {"$gt": "5"}}, "where.amount.$gt"),
    ({"amount": {"$gte": True}}, "where.amount.$gte"),
    ({"quantity": {"$lt": 1.5}}, "where.quantity.$lt"),
    ({"due": {"$gt": "2024-05-01T10:00:00Z"}}, "where.due.$gt"),
    ({"sent_at": {"$gt": "soon"}}, "where.sent_at.$gt"),
    ({"created_at": {"$gt": 5}}, "where.created_at.$gt"),
    ({"paid": "yes"}, "where.paid.$eq"),
    ({"paid": {"$gt": False}}, "where.paid.$gt"),
    ({"status": {"$gt": "open"}}, "where.status.$gt"),
    ({"status": "closed"}, "where.status.$eq"),
    ({"customer": {"$lt": "rec_1"}}, "where.customer.$lt"),
    ({"notes": {"$gte": "a"}}, "where.notes.$gte"),
    ({"amount": {"$contains": "5"}}, "where.amount.$contains"),
    ({"status": {"$contains": "op"}}, "where.status.$contains"),
    ({"title": {"$contains": 5}}, "where.title.$contains"),
    ({"tags": {"$contains": 5}}, "where.tags.$contains"),
    ({"amount": {"$in": []}}, "where.amount.$in"),
    ({"amount": {"$in": 5}}, "where.amount.$in"),
    ({"amount": {"$nin": [1, "2"]}}, "where.amount.$nin"),
    ({"amount": {"$in": [1, None]}}, "where.amount.$in"),
    ({"amount": {"$null": "yes"}}, "where.amount.$null"),
    ({"amount": [1, 2]}, "where.amount.$eq"),
    ({"tags": ["a", "b"]}, "where.tags.$eq"),
    ({"amount": {"$gt": None}}, "where.amount.$gt"),
    ({"amount": {"$regex": "5"}}, "where.amount.$regex"),
    ({"amount": {"gt": 5}}, "where.amount.gt"),
    ({"record_id": {"$gt": "rec_1"}}, "where.record_id.$gt"),
    ({"record_id": {"$contains": "rec"}}, "where.record_id.$contains"),
    ({"title": "x" * 1001}, "where.title.$eq"),
    ({"$nor": [{"paid": True}]}, "where.$nor"),
    ({"$or": []}, "where.$or"),
    ({"$and": {"paid": True}}, "where.$and"),
    ({"amount": {}}, "where.amount"),
    ({"$not": {}}, "where"),
    ({"$or": [5]}, "where"),
    ("paid", "where"),
    ([{"paid": True}], "where"),
])
def test_bad_where_clauses_are_refused_naming_field_and_operator(where, param):
    error = where_error(where)
    assert (error.code, error.extra["param"]) == ("invalid_where", param)


# --- matching ----------------------------------------------------------------------------------


def check(where: Any, data: dict[str, Any], **builtins: Any) -> bool:
    predicate = parse_where(SCHEMA, where)
    assert predicate is not None
    return matches(SCHEMA, predicate, record(validate_data(SCHEMA, {"title": "t", **data}), **builtins))


def test_scalar_comparisons():
    assert check({"amount": 5}, {"amount": 5.0})
    assert not check({"amount": 5}, {"amount": 6})
    assert check({"amount": {"$ne": 5}}, {"amount": 6})
    assert check({"amount": {"$gt": 5, "$lte": 6}}, {"amount": 6})
    assert not check({"amount": {"$gt": 5, "$lt": 6}}, {"amount": 6})
    assert check({"quantity": {"$in": [1, 3]}}, {"quantity": 3})
    assert not check({"quantity": {"$nin": [1, 3]}}, {"quantity": 3})
    assert check({"title": {"$gte": "b", "$lt": "c"}}, {"title": "banana"})
    assert check({"paid": False}, {"paid": False})
    assert not check({"paid": False}, {"paid": True})
    assert check({"status": {"$in": ["open", "paid"]}}, {"status": "paid"})


def test_dates_and_datetimes_compare_as_instants():
    assert check({"sent_at": "2024-05-01T12:30:00+02:00"}, {"sent_at": "2024-05-01T10:30:00Z"})
    assert check({"sent_at": {"$gte": "2024-05-01T11:00:00+01:00", "$lt": "2024-05-01T11:00:00Z"}},
                 {"sent_at": "2024-05-01T10:30:00Z"})
    assert check({"due": {"$gt": "2024-02-28"}}, {"due": "2024-02-29"})
    assert not check({"due": {"$gt": "2024-02-29"}}, {"due": "2024-02-29"})


def test_missing_and_null_values():
    assert check({"amount": None}, {})
    assert check({"amount": {"$null": True}}, {})
    assert not check({"amount": {"$null": False}}, {})
    assert check({"amount": {"$null": False}}, {"amount": 0})
    assert not check({"amount": 0}, {})
    assert not check({"amount": {"$lt": 100}}, {})
    assert check({"amount": {"$ne": 5}}, {})  # a missing value is not 5
    assert check({"amount": {"$nin": [5]}}, {})
    assert check({"tags": {"$null": True}}, {"tags": []})  # an empty array has no value
    assert not check({"tags": {"$null": False}}, {"tags": []})


def test_array_fields_match_by_element():
    assert check({"tags": "q2"}, {"tags": ["urgent", "q2"]})
    assert check({"tags": {"$contains": "q2"}}, {"tags": ["urgent", "q2"]})
    assert not check({"tags": {"$contains": "Q2"}}, {"tags": ["urgent", "q2"]})  # element equality
    assert not check({"tags": {"$ne": "q2"}}, {"tags": ["urgent", "q2"]})
    assert check({"tags": {"$ne": "q3"}}, {"tags": ["urgent", "q2"]})
    assert check({"tags": {"$in": ["x", "q2"]}}, {"tags": ["urgent", "q2"]})
    assert not check({"tags": {"$nin": ["x", "q2"]}}, {"tags": ["urgent", "q2"]})
    # Each comparison may hold for a different element.
    assert check({"scores": {"$gt": 5, "$lt": 10}}, {"scores": [1, 20]})
    assert not check({"scores": {"$gt": 50}}, {"scores": [1, 20]})


def test_contains_is_a_case_insensitive_substring_of_strings():
    assert check({"title": {"$contains": "VOICE"}}, {"title": "Invoice 7"})
    assert check({"notes": {"$contains": "straße"}}, {"notes": "An der STRASSE"})
    assert not check({"notes": {"$contains": "late"}}, {"notes": "on time"})
    assert not check({"notes": {"$contains": "late"}}, {})


def test_and_or_not():
    where = {"$or": [{"status": "void"}, {"amount": {"$gte": 100}}], "$not": {"tags": "spam"}}
    assert check(where, {"status": "void"})
    assert check(where, {"status": "open", "amount": 100})
    assert not check(where, {"status": "open", "amount": 99})
    assert not check(where, {"status": "void", "tags": ["spam"]})


def test_built_in_fields():
    assert check({"record_id": "rec_9"}, {}, record_id="rec_9")
    assert check({"record_id": {"$nin": ["rec_1"]}}, {}, record_id="rec_9")
    assert check({"owner_id": "bob"}, {}, owner_id="bob")
    assert check({"owner_id": None}, {}, owner_id=None)
    assert check({"created_at": {"$gte": "2024-05-01", "$lt": "2024-05-02"}}, {}, created_at="2024-05-01T08:00:00.000Z")
    assert not check({"updated_at": {"$gt": "2024-05-01T08:00:00Z"}}, {}, created_at="2024-05-01T08:00:00.000Z")


def test_a_stored_value_of_another_type_never_matches_a_range():
    predicate = parse_where(SCHEMA, {"amount": {"$gt": 1}})
    assert predicate is not None
    stale = record({"title": "t", "amount": "12"})  # stored before a type change
    assert not matches(SCHEMA, predicate, stale)
    ne = parse_where(SCHEMA, {"amount": {"$ne": 1}})
    assert ne is not None and matches(SCHEMA, ne, stale)


# --- order_by and sorting ----------------------------------------------------------------------


def test_parse_order():
    assert parse_order(SCHEMA, None) is None
    assert parse_order(SCHEMA, "") is None
    assert parse_order(SCHEMA, "amount") == Order("amount")
    assert parse_order(SCHEMA, "-due") == Order("due", descending=True)
    assert parse_order(SCHEMA, "-created_at") == Order("created_at", descending=True)
    assert parse_order(SCHEMA, "tags") == Order("tags")
    for bad in ("notes", "colour", "owner_id", "record_id", "-", 5, ["amount"]):
        error = refused(parse_order, SCHEMA, bad)
        assert (error.code, error.extra["param"]) == ("invalid_order_by", "order_by")


def sorted_ids(order_by: str, records: list[dict[str, Any]]) -> list[str]:
    order = parse_order(SCHEMA, order_by)
    assert order is not None
    return [found["record_id"] for found in sorted(records, key=sort_key(SCHEMA, order))]


def test_sorting_puts_missing_values_last_either_way():
    records = [record({"title": "t", "amount": 5}, "rec_a", "2024-01-01T00:00:00.000Z"),
               record({"title": "t"}, "rec_b", "2024-01-02T00:00:00.000Z"),
               record({"title": "t", "amount": -1.5}, "rec_c", "2024-01-03T00:00:00.000Z"),
               record({"title": "t", "amount": 5}, "rec_d", "2024-01-04T00:00:00.000Z"),
               record({"title": "t"}, "rec_e", "2024-01-05T00:00:00.000Z"),
               record({"title": "t", "amount": 30}, "rec_f", "2024-01-06T00:00:00.000Z")]
    assert sorted_ids("amount", records) == ["rec_c", "rec_a", "rec_d", "rec_f", "rec_b", "rec_e"]
    # Descending reverses the values and their ties, not where the missing ones go.
    assert sorted_ids("-amount", records) == ["rec_f", "rec_d", "rec_a", "rec_c", "rec_b", "rec_e"]
    assert sorted_ids("-created_at", records) == ["rec_f", "rec_e", "rec_d", "rec_c", "rec_b", "rec_a"]


def test_sorting_strings_dates_and_arrays():
    records = [record({"title": "b", "due": "2024-03-01", "scores": [5, 1]}, "rec_1"),
               record({"title": "B", "due": "2023-12-31", "scores": [3]}, "rec_2"),
               record({"title": "é", "scores": [4, 9]}, "rec_3")]
    assert sorted_ids("title", records) == ["rec_2", "rec_1", "rec_3"]  # code point (= UTF-8 byte) order
    assert sorted_ids("due", records) == ["rec_2", "rec_1", "rec_3"]
    assert sorted_ids("-due", records) == ["rec_1", "rec_2", "rec_3"]
    assert sorted_ids("scores", records) == ["rec_1", "rec_2", "rec_3"]  # by the smallest element
    assert sorted_ids("-scores", records) == ["rec_3", "rec_1", "rec_2"]  # by the largest


# --- planning ----------------------------------------------------------------------------------


def planned(where: Any, order_by: str | None = None) -> Plan:
    return plan("invoice", SCHEMA, parse_where(SCHEMA, where), parse_order(SCHEMA, order_by))


def point(field: str, value: Any, numeric: bool) -> OrderedRange:
    return OrderedRange(index_name("invoice", field), numeric, value, True, value, True)


def test_index_names():
    assert index_name("invoice", "amount") == "invoice\x1famount"
    assert index_name("invoice", "created_at") == index_name("invoice", "@created_at") == "invoice\x1f@created_at"
    assert index_name("invoice", "@updated_at") == "invoice\x1f@updated_at"
    assert index_name("invoice", "@owner_id") == "invoice\x1f@owner_id"


def test_no_where_reads_the_type_or_the_order_fields_whole_range():
    assert planned(None) == Plan(None)
    assert planned(None, "-amount") == Plan((OrderedRange("invoice\x1famount", True),), ordered=True)
    assert planned(None, "title") == Plan((OrderedRange("invoice\x1ftitle", False),), ordered=True)
    assert planned(None, "created_at") == Plan((OrderedRange("invoice\x1f@created_at", True),), ordered=True)


def test_equality_drives_rather_than_a_range():
    assert planned({"amount": {"$gt": 5, "$lt": 9}, "status": "open"}) == Plan((point("status", "open", False),))
    assert planned({"amount": {"$gt": 5}, "status": {"$in": ["open", "paid"]}}) == Plan(
        (point("status", "open", False), point("status", "paid", False)))
    # ids beat everything
    assert planned({"status": "open", "record_id": "rec_7"}) == Plan(None, ids=("rec_7",))
    assert planned({"record_id": {"$in": ["rec_7", "rec_8"]}}) == Plan(None, ids=("rec_7", "rec_8"))


def test_a_bounded_range_is_one_range_with_its_inclusive_flags():
    assert planned({"amount": {"$gt": 5, "$lte": 9}}) == Plan((OrderedRange("invoice\x1famount", True, 5, False, 9,
                                                                            True),))
    assert planned({"amount": {"$gte": 5, "$lt": 9, "$gt": 6}}) == Plan((OrderedRange("invoice\x1famount", True, 6,
                                                                                      False, 9, False),))
    assert planned({"$and": [{"title": {"$gte": "a"}}, {"title": {"$lte": "b"}}]}) == Plan(
        (OrderedRange("invoice\x1ftitle", False, "a", True, "b", True),))
    # A bounded range beats a half one on another field.
    assert planned({"quantity": {"$gt": 1}, "amount": {"$gt": 5, "$lt": 9}}) == Plan(
        (OrderedRange("invoice\x1famount", True, 5, False, 9, False),))
    assert planned({"quantity": {"$lte": 3}}) == Plan((OrderedRange("invoice\x1fquantity", True, None, True, 3,
                                                                    True),))


def test_array_ranges_are_not_merged():
    # [1, 20] is both > 5 and < 10: one range [5, 10] would miss it.
    found = planned({"scores": {"$gt": 5, "$lt": 10}})
    assert found.ranges is not None and len(found.ranges) == 1
    assert found.ranges[0] in (OrderedRange("invoice\x1fscores", True, 5, False),
                               OrderedRange("invoice\x1fscores", True, None, True, 10, False))
    assert planned({"tags": {"$contains": "q2"}}) == Plan((point("tags", "q2", False),))


def test_dates_are_epoch_seconds_and_booleans_0_or_1():
    assert planned({"due": "2024-05-01"}) == Plan((point("due", epoch("2024-05-01T00:00:00+00:00"), True),))
    assert planned({"sent_at": {"$gte": "2024-05-01T02:00:00+02:00"}}) == Plan(
        (OrderedRange("invoice\x1fsent_at", True, epoch("2024-05-01T00:00:00+00:00")),))
    assert planned({"paid": True}) == Plan((point("paid", 1, True),))
    assert planned({"paid": False}) == Plan((point("paid", 0, True),))
    assert planned({"created_at": {"$lt": "2024-05-01"}}) == Plan(
        (OrderedRange("invoice\x1f@created_at", True, None, True, epoch("2024-05-01T00:00:00+00:00"), False),))
    assert planned({"owner_id": "bob"}) == Plan((OrderedRange("invoice\x1f@owner_id", False, "bob", True, "bob",
                                                              True),))


def test_in_is_several_ranges():
    assert planned({"quantity": {"$in": [3, 1, 3]}}) == Plan((point("quantity", 3, True), point("quantity", 1, True)))


def test_or_is_the_union_of_its_parts_or_a_scan():
    assert planned({"$or": [{"status": "void"}, {"amount": {"$gte": 100}}]}) == Plan(
        (point("status", "void", False), OrderedRange("invoice\x1famount", True, 100)))
    assert planned({"$or": [{"record_id": "rec_1"}, {"record_id": {"$in": ["rec_2", "rec_1"]}}]}) == Plan(
        None, ids=("rec_1", "rec_2"))
    # A part no index narrows: every record of the type is a candidate.
    assert planned({"$or": [{"status": "void"}, {"notes": {"$contains": "late"}}]}) == Plan(None)
    assert planned({"$or": [{"status": "void"}, {"record_id": "rec_1"}]}) == Plan(None)
    # Inside an AND, the OR is one candidate driver among others.
    assert planned({"$or": [{"status": "void"}, {"notes": "x"}], "amount": {"$gt": 1}}) == Plan(
        (OrderedRange("invoice\x1famount", True, 1, False),))


def test_filters_that_never_drive():
    for where in ({"amount": {"$ne": 5}}, {"status": {"$nin": ["void"]}}, {"$not": {"status": "void"}},
                  {"title": {"$contains": "inv"}}, {"amount": {"$null": True}}, {"notes": "exact text"},
                  {"record_id": {"$ne": "rec_1"}}):
        assert planned(where) == Plan(None), where
    assert planned({"amount": {"$null": False}}) == Plan((OrderedRange("invoice\x1famount", True),))
    assert planned({"amount": {"$ne": 5}, "paid": True}) == Plan((point("paid", 1, True),))


def test_a_range_on_the_order_field_arrives_in_order():
    assert planned({"amount": {"$gt": 5}}, "-amount") == Plan((OrderedRange("invoice\x1famount", True, 5, False),),
                                                              ordered=True)
    assert planned({"amount": {"$null": False}}, "amount") == Plan((OrderedRange("invoice\x1famount", True),),
                                                                    ordered=True)
    # Another field drives: the executor sorts.
    assert planned({"status": "open"}, "amount") == Plan((point("status", "open", False),))
    assert planned({"notes": {"$contains": "x"}}, "amount") == Plan(None)
    # At equal rank the order field drives.
    assert planned({"quantity": {"$gt": 1}, "amount": {"$gt": 5}}, "amount") == Plan(
        (OrderedRange("invoice\x1famount", True, 5, False),), ordered=True)
    # Several ranges do not arrive in one order.
    assert planned({"amount": {"$in": [1, 2]}}, "amount").ordered is False
    # Part of an array field's range meets a record at an element that need not be its extreme one.
    assert planned({"scores": {"$gt": 5}}, "scores").ordered is False
    assert planned(None, "scores").ordered is True
