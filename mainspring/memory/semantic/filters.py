"""Metadata filters: parsed once, checked in Python (the reference), translated by each store.

A filter is a mapping of top-level metadata keys to a value (equality) or to operators:
``{"kind": "fact", "lang": {"$in": ["en", "fr"]}, "stars": {"$gte": 3, "$lt": 5},
"draft": {"$ne": True}}``; all conditions must hold. Values are str, int, float or bool
(numbers compare as numbers, a bool is not a number, a str is compared as text).
A condition on a key an item does not have fails, except ``$ne``, which holds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

Op = Literal["eq", "ne", "in", "gt", "gte", "lt", "lte"]
Scalar = str | int | float | bool

_OPS: dict[str, Op] = {
    "$eq": "eq",
    "$ne": "ne",
    "$in": "in",
    "$gt": "gt",
    "$gte": "gte",
    "$lt": "lt",
    "$lte": "lte",
}
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


class Condition(msgspec.Struct, frozen=True):
    """One condition on one metadata key. ``value`` is a tuple for ``in``."""

    key: str
    op: Op
    value: Scalar | tuple[Scalar, ...]


Filters = tuple[Condition, ...]


def parse_filters(filters: Mapping[str, Any] | None) -> Filters:
    """Check a user's filter mapping and turn it into conditions (ValueError/TypeError)."""
    if filters is None:
        return ()
    if not isinstance(filters, Mapping):
        raise TypeError(f"filters must be a mapping of metadata keys, got {type(filters).__name__}")
    out: list[Condition] = []
    for key, spec in filters.items():
        if not isinstance(key, str) or not KEY_PATTERN.match(key):
            raise ValueError(
                f"filter key {key!r}: use a top-level metadata key of letters, digits, _ or -"
            )
        if isinstance(spec, Mapping):
            if not spec:
                raise ValueError(f"filter on {key!r} is an empty mapping; give an operator")
            for name, value in spec.items():
                op = _OPS.get(name)
                if op is None:
                    raise ValueError(
                        f"filter on {key!r}: unknown operator {name!r}; use one of {sorted(_OPS)}"
                    )
                out.append(Condition(key, op, _operand(key, op, value)))
        else:
            out.append(Condition(key, "eq", _operand(key, "eq", spec)))
    return tuple(out)


def _operand(key: str, op: Op, value: Any) -> Scalar | tuple[Scalar, ...]:
    if op == "in":
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple | set | frozenset):
            raise TypeError(f"filter on {key!r}: $in takes a list of values")
        return tuple(_scalar(key, v) for v in value)
    scalar = _scalar(key, value)
    if op in ("gt", "gte", "lt", "lte") and isinstance(scalar, bool):
        raise TypeError(f"filter on {key!r}: ${op} compares numbers or strings, not a bool")
    return scalar


def _scalar(key: str, value: Any) -> Scalar:
    if isinstance(value, float) and value != value:
        raise ValueError(f"filter on {key!r}: NaN matches nothing; remove it")
    if not isinstance(value, str | int | float | bool):
        raise TypeError(
            f"filter on {key!r}: values must be str, int, float or bool, got {type(value).__name__}"
        )
    return value


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "text"
    return None


def _equal(stored: Any, wanted: Scalar) -> bool:
    kind = _kind(stored)
    return kind is not None and kind == _kind(wanted) and stored == wanted


def holds(condition: Condition, metadata: Mapping[str, Any]) -> bool:
    """Whether ``metadata`` satisfies ``condition`` (the reference every store matches)."""
    present = condition.key in metadata
    stored = metadata.get(condition.key)
    value = condition.value
    if condition.op == "ne":
        return not (present and _equal(stored, value))  # type: ignore[arg-type]
    if not present:
        return False
    if condition.op == "eq":
        return _equal(stored, value)  # type: ignore[arg-type]
    if condition.op == "in":
        return any(_equal(stored, v) for v in value)  # type: ignore[union-attr]
    kind = _kind(stored)
    if kind is None or kind == "bool" or kind != _kind(value):
        return False
    stored_: Any = stored
    value_: Any = value
    if condition.op == "gt":
        return bool(stored_ > value_)
    if condition.op == "gte":
        return bool(stored_ >= value_)
    if condition.op == "lt":
        return bool(stored_ < value_)
    return bool(stored_ <= value_)


def all_hold(conditions: Filters, metadata: Mapping[str, Any]) -> bool:
    return all(holds(c, metadata) for c in conditions)
