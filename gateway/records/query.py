"""The records query language: ``where`` and ``order_by``, checked, matched and planned.

``POST /records/{type}/query`` (and ``/search``) take a ``where``::

    where      := { clause, ... }                 (several keys: all must hold)
    clause     := "<field>": <value>              equality (an array field: holds that element);
                                                  null means "is null"
                | "<field>": { "<op>": <operand>, ... }   (several operators: all must hold)
                | "$and": [where, ...] | "$or": [where, ...] | "$not": where
    op         := $eq $ne                         (operand: a value of the field's type; null: is / is not null)
                | $gt $gte $lt $lte               (string, number, integer, date and datetime fields)
                | $in $nin                        (a non-empty array of at most 100 values)
                | $contains                       (a string or text field: a case-insensitive substring;
                                                   an array field: holds that element)
                | $null                           (true: missing or null; false: has a value)

Fields are the schema's, and the built-ins every record has: ``record_id`` ($eq $ne $in $nin
only), ``owner_id`` (a string), ``created_at`` and ``updated_at`` (datetimes). An array field
matches a comparison when one of its elements does ($ne / $nin: when none does); an empty
array has no value. A missing field never equals, nor is in range of, anything: ``$ne`` and
``$nin`` match it. Operands are normalised as record data is (a datetime with an offset means
that instant; dates and datetimes compare as the epoch seconds their index holds), and the
nesting ($and / $or / $not) is at most 8 deep, with at most 100 comparisons in all.

400s: ``unknown_field`` (param ``where.<field>``), ``invalid_where`` (an operand of the wrong
type, an unknown operator, an operator the field's type does not take: param
``where.<field>.<op>``; a where that is not an object, or too large: param ``where``).

``order_by`` is ``"field"`` or ``"-field"`` (descending): a schema field with an ordered index
(anything but text fields) or ``created_at`` / ``updated_at``. Records without a value come
last either way; the default is creation order.

A query is *planned* onto the store's ordered indexes (gateway/store/base.py ``OrderedRange``):
``plan`` picks where candidates come from, and the executor (gateway/records/records.py)
checks each with ``matches``, so an index only ever narrows what is read.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import BadRequest
from gateway.records.schema import (FieldDef, InvalidValue, RecordSchema, epoch_seconds, index_value,
                                    normalise_element)
from gateway.store.base import OrderedRange

MAX_DEPTH = 8
MAX_COMPARISONS = 100
MAX_IN_VALUES = 100

# The operators a comparison may use, by their where spelling.
OPERATORS = {"$eq": "eq", "$ne": "ne", "$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte", "$in": "in",
             "$nin": "nin", "$contains": "contains", "$null": "null"}
RANGE_OPS = ("gt", "gte", "lt", "lte")
RANGE_TYPES = frozenset({"string", "number", "integer", "date", "datetime"})
# The built-in fields, as definitions of the types their values have in the stored record.
BUILTINS = {"record_id": FieldDef("record_id", "string"), "owner_id": FieldDef("owner_id", "string"),
            "created_at": FieldDef("created_at", "datetime"), "updated_at": FieldDef("updated_at", "datetime")}
_RECORD_ID_OPS = ("eq", "ne", "in", "nin")
_ORDERABLE_BUILTINS = ("created_at", "updated_at")
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt,
                                                   "lte": operator.le}


@dataclass(frozen=True)
class Comparison:
    field: str
    op: str  # eq ne gt gte lt lte in nin contains null
    # The normalised operand: dates and datetimes as epoch seconds; $in / $nin a tuple of them; $null a bool.
    value: Any


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Predicate, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Predicate, ...]


@dataclass(frozen=True)
class NoneOf:
    part: Predicate  # $not


Predicate = Comparison | AllOf | AnyOf | NoneOf


@dataclass(frozen=True)
class Order:
    field: str
    descending: bool = False


def field_definition(schema: RecordSchema, name: str) -> FieldDef | None:
    """The definition a where or order_by means by ``name``: a schema field or a built-in."""
    return schema.fields.get(name) or BUILTINS.get(name)


# --- parsing -----------------------------------------------------------------------------------


def _invalid(message: str, param: str) -> BadRequest:
    return BadRequest(message, code="invalid_where", param=param)


def parse_where(schema: RecordSchema, where: Any) -> Predicate | None:
    """The predicate ``where`` states (None for a missing or empty where); 400s as the module says."""
    if where is None or (isinstance(where, Mapping) and not where):
        return None
    return _WhereParser(schema).where(where, 1)


class _WhereParser:
    def __init__(self, schema: RecordSchema) -> None:
        self.schema = schema
        self.comparisons = 0

    def where(self, where: Any, depth: int) -> Predicate:
        if depth > MAX_DEPTH:
            raise _invalid(f"where nests $and / $or / $not at most {MAX_DEPTH} deep", "where")
        if not isinstance(where, Mapping) or not where:
            raise _invalid("where must be a non-empty object of field -> value or {operator: operand}, "
                           "with $and / $or / $not", "where")
        parts: list[Predicate] = []
        for key, value in where.items():
            if key in ("$and", "$or"):
                if not isinstance(value, list) or not value:
                    raise _invalid(f"{key} takes a non-empty array of where objects", f"where.{key}")
                nested = [self.where(item, depth + 1) for item in value]
                parts.append(_all_of(nested) if key == "$and" else _any_of(nested))
            elif key == "$not":
                parts.append(NoneOf(self.where(value, depth + 1)))
            elif key.startswith("$"):
                raise _invalid(f"unknown operator {key[:50]!r}: $and, $or and $not combine clauses; comparison "
                               "operators go inside a field's object", f"where.{key[:50]}")
            else:
                parts.append(self.clause(key, value))
        return _all_of(parts)

    def clause(self, name: str, value: Any) -> Predicate:
        definition = field_definition(self.schema, name)
        if definition is None:
            known = ", ".join([*list(self.schema.fields)[:30], *BUILTINS])
            raise BadRequest(f"where.{name[:100]}: the {self.schema.type_name} schema has no field {name[:100]!r} "
                             f"(fields: {known})", code="unknown_field", param=f"where.{name[:100]}")
        if not isinstance(value, Mapping):
            return self.comparison(definition, "$eq", value)
        if not value:
            raise _invalid(f"where.{name}: an empty object; give a value, or operators such as "
                           '{"$gte": 1}', f"where.{name}")
        return _all_of([self.comparison(definition, op, operand) for op, operand in value.items()])

    def comparison(self, definition: FieldDef, spelled: str, operand: Any) -> Comparison:
        name = definition.name
        param = f"where.{name}.{str(spelled)[:50]}"
        op = OPERATORS.get(spelled)
        if op is None:
            raise _invalid(f"{param}: unknown operator; use one of {', '.join(OPERATORS)}", param)
        self.comparisons += 1
        if self.comparisons > MAX_COMPARISONS:
            raise _invalid(f"where holds at most {MAX_COMPARISONS} comparisons", "where")
        if name == "record_id" and op not in _RECORD_ID_OPS:
            raise _invalid(f"{param}: record_id takes $eq, $ne, $in and $nin only", param)
        if op in ("eq", "ne") and operand is None:
            return Comparison(name, "null", op == "eq")
        if op == "null":
            if not isinstance(operand, bool):
                raise _invalid(f"{param} takes true (missing or null) or false (has a value)", param)
            return Comparison(name, "null", operand)
        if op in ("in", "nin"):
            if not isinstance(operand, list) or not operand or len(operand) > MAX_IN_VALUES:
                raise _invalid(f"{param} takes a non-empty array of at most {MAX_IN_VALUES} values", param)
            values = tuple(dict.fromkeys(_operand(definition, item, param) for item in operand))
            return Comparison(name, op, values)
        if op in RANGE_OPS and definition.type not in RANGE_TYPES:
            raise _invalid(f"{param}: ranges apply to string, number, integer, date and datetime fields; "
                           f"{name} is {definition.type_label}", param)
        if op == "contains" and not definition.array and definition.type not in ("string", "text"):
            raise _invalid(f"{param}: $contains applies to string and text fields (a substring) and to arrays "
                           f"(an element); {name} is {definition.type_label}", param)
        if isinstance(operand, list):
            hint = " (use $in for any of several values, $contains for an array element)" if op == "eq" else ""
            raise _invalid(f"{param} takes one value, not an array{hint}", param)
        return Comparison(name, op, _operand(definition, operand, param))


def _operand(definition: FieldDef, value: Any, param: str) -> Any:
    """An operand normalised as record data is; dates and datetimes as epoch seconds."""
    if value is None:
        raise _invalid(f"{param} takes values, not null (use $null)", param)
    try:
        normalised = normalise_element(definition, value)
    except InvalidValue as error:
        raise _invalid(f"{param}: the operand {error}", param) from None
    if definition.type in ("date", "datetime"):
        return epoch_seconds(normalised)
    return normalised


def _all_of(parts: list[Predicate]) -> Predicate:
    flat: list[Predicate] = []
    for part in parts:
        flat += part.parts if isinstance(part, AllOf) else (part,)
    return flat[0] if len(flat) == 1 else AllOf(tuple(flat))


def _any_of(parts: list[Predicate]) -> Predicate:
    flat: list[Predicate] = []
    for part in parts:
        flat += part.parts if isinstance(part, AnyOf) else (part,)
    return flat[0] if len(flat) == 1 else AnyOf(tuple(flat))


def parse_order(schema: RecordSchema, order_by: Any) -> Order | None:
    """``"field"`` or ``"-field"``; None when absent. 400 ``invalid_order_by`` (param ``order_by``)
    for anything but an ordered-indexed schema field, created_at or updated_at."""
    if order_by is None or order_by == "":
        return None
    if not isinstance(order_by, str):
        raise BadRequest('order_by is a field name, "-" first for descending order ("-amount")',
                         code="invalid_order_by", param="order_by")
    descending = order_by.startswith("-")
    name = order_by[1:] if descending else order_by
    definition = schema.fields.get(name)
    if definition is None and name not in _ORDERABLE_BUILTINS:
        orderable = [field for field, found in schema.fields.items() if found.index_kind() is not None]
        raise BadRequest(f"order_by: cannot order by {name[:100]!r}; order by one of "
                         f"{', '.join([*orderable[:30], *_ORDERABLE_BUILTINS])}",
                         code="invalid_order_by", param="order_by")
    if definition is not None and definition.index_kind() is None:
        raise BadRequest(f"order_by: {name} is a text field, which is searched, not ordered",
                         code="invalid_order_by", param="order_by")
    return Order(name, descending)


# --- matching ----------------------------------------------------------------------------------

_UNUSABLE = object()  # a stored value its field's type does not read (the schema changed since)


def _comparable(definition: FieldDef, value: Any) -> Any:
    """A stored element as comparisons read it (dates and datetimes as epoch seconds), or _UNUSABLE."""
    kind = definition.type
    if kind in ("number", "integer"):
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else _UNUSABLE
    if kind == "boolean":
        return value if isinstance(value, bool) else _UNUSABLE
    if not isinstance(value, str):
        return _UNUSABLE
    if kind in ("date", "datetime"):
        try:
            return epoch_seconds(value)
        except ValueError:
            return _UNUSABLE
    return value


def _elements(schema: RecordSchema, name: str, record: Mapping[str, Any]) -> list[Any]:
    """The field's stored values in a record: none when missing or null, an array's elements."""
    if name in schema.fields:
        data = record.get("data")
        value = data.get(name) if isinstance(data, Mapping) else None
    else:
        value = record.get(name)
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def matches(schema: RecordSchema, predicate: Predicate, record: Mapping[str, Any]) -> bool:
    """Whether a stored record document (its ``data``, and the built-ins at its top level:
    record_id, owner_id, created_at and updated_at as ISO strings) satisfies ``predicate``."""
    if isinstance(predicate, AllOf):
        return all(matches(schema, part, record) for part in predicate.parts)
    if isinstance(predicate, AnyOf):
        return any(matches(schema, part, record) for part in predicate.parts)
    if isinstance(predicate, NoneOf):
        return not matches(schema, predicate.part, record)
    return _compare(schema, predicate, record)


def _compare(schema: RecordSchema, comparison: Comparison, record: Mapping[str, Any]) -> bool:
    definition = field_definition(schema, comparison.field)
    if definition is None:
        return False
    elements = _elements(schema, comparison.field, record)
    op, operand = comparison.op, comparison.value
    if op == "null":
        return (not elements) == operand
    if op == "contains" and not definition.array:
        needle = operand.casefold()
        return any(isinstance(value, str) and needle in value.casefold() for value in elements)
    values = [value for value in (_comparable(definition, element) for element in elements)
              if value is not _UNUSABLE]
    if op in ("eq", "contains"):
        return operand in values
    if op == "ne":
        return operand not in values
    if op == "in":
        return any(value in operand for value in values)
    if op == "nin":
        return not any(value in operand for value in values)
    compare = _COMPARE[op]
    return any(_same_kind(value, operand) and compare(value, operand) for value in values)


def _same_kind(value: Any, operand: Any) -> bool:
    return isinstance(value, str) == isinstance(operand, str)


# --- ordering ----------------------------------------------------------------------------------


class _Descending:
    """Wraps a sort key so that ascending sorting puts it in descending order."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __lt__(self, other: _Descending) -> bool:
        return bool(other.key < self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Descending) and bool(self.key == other.key)

    __hash__ = None  # type: ignore[assignment]


def sort_key(schema: RecordSchema, order: Order) -> Callable[[Mapping[str, Any]], Any]:
    """A key for ``sorted`` putting records in ``order``, records without a value last (in creation
    order) either way. Ties go by creation (created_at, then record_id), reversed when descending,
    as the store's ordered index returns them. An array field sorts by its smallest element
    (ascending) or its largest (descending): where the index first meets the record."""
    definition = field_definition(schema, order.field)

    def key(record: Mapping[str, Any]) -> Any:
        created, record_id = str(record.get("created_at") or ""), str(record.get("record_id") or "")
        values = [] if definition is None else [
            value for value in (_comparable(definition, element) for element in
                                _elements(schema, order.field, record)) if value is not _UNUSABLE]
        if not values:
            return (1, created, record_id)
        if order.descending:
            return (0, _Descending((max(values), created, record_id)))
        return (0, (min(values), created, record_id))

    return key


# --- planning ----------------------------------------------------------------------------------


def index_name(type_name: str, field: str) -> str:
    """The ordered index of a type's field: ``"<type>\\x1f<field>"``; the built-ins (spelled with or
    without "@") ``"<type>\\x1f@created_at"``, ``@updated_at``, ``@owner_id``. No schema field can
    start with "@" or be named like a built-in, so the two never meet."""
    bare = field[1:] if field.startswith("@") else field
    if bare in BUILTINS:
        return f"{type_name}\x1f@{bare}"
    return f"{type_name}\x1f{field}"


@dataclass(frozen=True)
class Plan:
    # Where the candidates come from: the union of these ordered ranges, or (None) every live record of the type.
    ranges: tuple[OrderedRange, ...] | None
    # Record ids when the where pins them ($eq / $in on record_id): candidates are fetched by id instead.
    ids: tuple[str, ...] | None = None
    # True when `ranges` is one range on the order_by field, so candidates arrive already in the requested order.
    ordered: bool = False


# How selective a driver is, best first.
_IDS, _EQUAL, _IN, _BOUNDED, _HALF, _PRESENT = range(6)


@dataclass(frozen=True)
class _Driver:
    rank: int
    ranges: tuple[OrderedRange, ...] = ()
    ids: tuple[str, ...] | None = None


def plan(type_name: str, schema: RecordSchema, predicate: Predicate | None, order: Order | None) -> Plan:
    """Where a query's candidates come from.

    AND: the most selective indexable part drives (ids > equality > $in > bounded range > half
    range > not null; at equal rank one on the order_by field, then the first); OR: the union of
    each part's driver if every part has one, else no index. $ne, $nin, $not, a string's
    $contains and $null: true never drive (they are filters only), nor do text fields. No
    predicate and an order_by: the order field's whole range, in order (the executor then
    appends the records without a value)."""
    planner = _Planner(type_name, schema, order)
    if predicate is None:
        if order is None:
            return Plan(None)
        return Plan((planner.whole_range(order.field),), ordered=True)
    driver = planner.driver(predicate)
    if driver is None:
        return Plan(None)
    if driver.ids is not None:
        return Plan(None, ids=driver.ids)
    return Plan(driver.ranges, ordered=planner.in_order(driver))


class _Planner:
    def __init__(self, type_name: str, schema: RecordSchema, order: Order | None) -> None:
        self.type_name = type_name
        self.schema = schema
        self.order = order

    def span(self, field: str, low: Any = None, low_inclusive: bool = True, high: Any = None,
              high_inclusive: bool = True) -> OrderedRange:
        definition = field_definition(self.schema, field)
        assert definition is not None
        numeric = definition.index_kind() == "numeric"
        return OrderedRange(index_name(self.type_name, field), numeric, self.bound(definition, low), low_inclusive,
                            self.bound(definition, high), high_inclusive)

    @staticmethod
    def bound(definition: FieldDef, value: Any) -> Any:
        """An operand as the index holds it (operands of dates are epoch seconds already)."""
        if value is None or definition.type in ("date", "datetime"):
            return value
        return index_value(definition, value)

    def whole_range(self, field: str) -> OrderedRange:
        return self.span(field)

    def in_order(self, driver: _Driver) -> bool:
        """Whether the driver's candidates come in the order_by order: one range on that field (for
        an array field only its whole range, which meets each record first at its extreme element)."""
        if self.order is None or len(driver.ranges) != 1:
            return False
        only = driver.ranges[0]
        if only.index != index_name(self.type_name, self.order.field):
            return False
        definition = field_definition(self.schema, self.order.field)
        return definition is not None and (not definition.array or (only.low is None and only.high is None))

    def driver(self, predicate: Predicate) -> _Driver | None:
        if isinstance(predicate, Comparison):
            return self.comparison(predicate)
        if isinstance(predicate, AllOf):
            return self.all_of(predicate)
        if isinstance(predicate, AnyOf):
            return self.any_of(predicate)
        return None  # $not: what it excludes is no range

    def indexed(self, field: str) -> FieldDef | None:
        definition = field_definition(self.schema, field)
        if definition is None or field == "record_id" or definition.index_kind() is None:
            return None
        return definition

    def comparison(self, comparison: Comparison) -> _Driver | None:
        field, op, value = comparison.field, comparison.op, comparison.value
        if field == "record_id":
            if op == "eq":
                return _Driver(_IDS, ids=(value,))
            if op == "in":
                return _Driver(_IDS, ids=tuple(value))
            return None
        definition = self.indexed(field)
        if definition is None:
            return None
        if op == "eq" or (op == "contains" and definition.array):
            return _Driver(_EQUAL, (self.span(field, value, True, value, True),))
        if op == "in":
            return _Driver(_IN, tuple(dict.fromkeys(self.span(field, item, True, item, True) for item in value)))
        if op in ("gt", "gte"):
            return _Driver(_HALF, (self.span(field, low=value, low_inclusive=op == "gte"),))
        if op in ("lt", "lte"):
            return _Driver(_HALF, (self.span(field, high=value, high_inclusive=op == "lte"),))
        if op == "null" and value is False:
            return _Driver(_PRESENT, (self.whole_range(field),))
        return None

    def all_of(self, predicate: AllOf) -> _Driver | None:
        candidates: list[_Driver] = []
        bounds: dict[str, list[Comparison]] = {}
        for part in predicate.parts:
            definition = self.indexed(part.field) if isinstance(part, Comparison) else None
            if isinstance(part, Comparison) and part.op in RANGE_OPS and definition and not definition.array:
                # Ranges on one (single-valued) field meet in one range. Not for arrays: each
                # comparison may hold for a different element ([1, 20] is both > 5 and < 10).
                bounds.setdefault(part.field, []).append(part)
                continue
            driver = self.driver(part)
            if driver is not None:
                candidates.append(driver)
        candidates += [self.merged(field, comparisons) for field, comparisons in bounds.items()]
        if not candidates:
            return None
        return min(candidates, key=lambda driver: (driver.rank, not self.in_order(driver)))

    def merged(self, field: str, comparisons: list[Comparison]) -> _Driver:
        """The tightest range all of a field's range comparisons allow."""
        low: Any = None
        low_inclusive = True
        high: Any = None
        high_inclusive = True
        for comparison in comparisons:
            value, op = comparison.value, comparison.op
            if op in ("gt", "gte"):
                if low is None or value > low or (value == low and op == "gt"):
                    low, low_inclusive = value, op == "gte"
            elif high is None or value < high or (value == high and op == "lt"):
                high, high_inclusive = value, op == "lte"
        rank = _BOUNDED if low is not None and high is not None else _HALF
        return _Driver(rank, (self.span(field, low, low_inclusive, high, high_inclusive),))

    def any_of(self, predicate: AnyOf) -> _Driver | None:
        drivers = [self.driver(part) for part in predicate.parts]
        if any(driver is None for driver in drivers):
            return None  # some part can match records no index narrows to
        found = [driver for driver in drivers if driver is not None]
        if all(driver.ids is not None for driver in found):
            return _Driver(_IDS, ids=tuple(dict.fromkeys(record_id for driver in found
                                                         for record_id in driver.ids or ())))
        if any(driver.ids is not None for driver in found):
            return None  # a plan reads ids or ranges, not both
        ranges = tuple(dict.fromkeys(ranged for driver in found for ranged in driver.ranges))
        return _Driver(max(driver.rank for driver in found), ranges)
