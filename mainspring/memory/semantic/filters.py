"""Metadata filters: one grammar, parsed once, evaluated in Python or translated to SQL.

``{"field": value}`` matches items whose metadata has ``field`` equal to ``value``;
``{"field": {"$in": [...]}}``, ``$ne``, ``$gt``, ``$gte``, ``$lt``, ``$lte`` compare.
Several fields (or several operators on one field) must all match. The rules every
backend keeps, so that a filter means the same on each:

* equality is JSON equality: ``True`` is not ``1`` (Python would say it is), ``1`` is ``1.0``;
* an absent field reads as null: ``{"field": None}`` matches it, ``{"field": {"$ne": 1}}`` too;
* ranges compare numbers with numbers and strings with strings (by code point); a
  value of another type does not match, it is not an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Op = Literal["eq", "in", "ne", "gt", "gte", "lt", "lte"]
RANGE_OPS: frozenset[Op] = frozenset(("gt", "gte", "lt", "lte"))
_OPS: dict[str, Op] = {
    "$eq": "eq",
    "$in": "in",
    "$ne": "ne",
    "$gt": "gt",
    "$gte": "gte",
    "$lt": "lt",
    "$lte": "lte",
}
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True, slots=True)
class Condition:
    """One test on one metadata field. ``value`` is a tuple for ``in``."""

    field: str
    op: Op
    value: Any


def parse_filters(filters: Mapping[str, Any] | None) -> tuple[Condition, ...]:
    """The conditions of ``filters``; a ValueError or TypeError that says what to fix."""
    if not filters:
        return ()
    if not isinstance(filters, Mapping):
        raise TypeError(
            f"filters must be a mapping of field to value, got {type(filters).__name__}"
        )
    conditions: list[Condition] = []
    for field, spec in filters.items():
        if not isinstance(field, str) or not field or field.startswith("$"):
            raise ValueError(
                f"filter field {field!r} is not a metadata key; use a non-empty string "
                "that does not start with '$' (operators go inside: {'field': {'$gt': 1}})"
            )
        if isinstance(spec, Mapping) and any(str(k).startswith("$") for k in spec):
            for name, value in spec.items():
                conditions.append(_operator(field, name, value))
        else:
            _check_json(field, spec)
            conditions.append(Condition(field, "eq", spec))
    return tuple(conditions)


def _operator(field: str, name: object, value: Any) -> Condition:
    op = _OPS.get(name) if isinstance(name, str) else None
    if op is None:
        raise ValueError(
            f"unknown filter operator {name!r} on {field!r}; use one of {', '.join(_OPS)}"
        )
    if op == "in":
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise TypeError(f"'$in' on {field!r} takes a list of values, got {value!r}")
        for each in value:
            _check_json(field, each)
        return Condition(field, op, tuple(value))
    if op in RANGE_OPS:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(f"'{name}' on {field!r} compares numbers or strings, got {value!r}")
        return Condition(field, op, value)
    _check_json(field, value)
    return Condition(field, op, value)


def _check_json(field: str, value: Any) -> None:
    if isinstance(value, _SCALARS):
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"filter value of {field!r} has a non-string key {k!r}")
            _check_json(field, v)
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _check_json(field, v)
        return
    raise TypeError(
        f"filter value of {field!r} is a {type(value).__name__}; use JSON values "
        "(str, int, float, bool, None, lists and dicts of them)"
    )


def matches(conditions: Sequence[Condition], metadata: Mapping[str, Any]) -> bool:
    """Whether ``metadata`` passes every condition (the Python side of the grammar)."""
    return all(_holds(c, metadata) for c in conditions)


def _holds(c: Condition, metadata: Mapping[str, Any]) -> bool:
    actual = metadata.get(c.field)  # absent reads as null, on every backend
    if c.op == "eq":
        return json_equal(actual, c.value)
    if c.op == "ne":
        return not json_equal(actual, c.value)
    if c.op == "in":
        return any(json_equal(actual, v) for v in c.value)
    if not _comparable(actual, c.value):
        return False
    if c.op == "gt":
        return bool(actual > c.value)
    if c.op == "gte":
        return bool(actual >= c.value)
    if c.op == "lt":
        return bool(actual < c.value)
    return bool(actual <= c.value)


def _comparable(actual: Any, value: Any) -> bool:
    if isinstance(value, str):
        return isinstance(actual, str)
    return isinstance(actual, (int, float)) and not isinstance(actual, bool)


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: booleans are not numbers, in nested values too."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (Mapping, list, tuple)) or isinstance(b, (Mapping, list, tuple)):
        return False
    return bool(a == b)
