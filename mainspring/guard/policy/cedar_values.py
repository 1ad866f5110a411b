"""Cedar values as compiled policies hold them, and the operations on them.

A Cedar bool, long or string is the Python ``bool``, ``int`` (never a bool: every check
is on the exact type) or ``str``; a record is a ``dict``; a set is a ``CSet``; an entity
uid is a plain ``(type, id)`` tuple; a decimal is a ``Dec``. ``EvalError`` is Cedar's
evaluation error, ``Unsupported`` what the compiler leaves to cedarpy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, NoReturn

Env = tuple[Any, ...]  # (principal, action, resource, ancestors, context)

_MIN, _MAX = -(2**63), 2**63 - 1
_ESCAPES: Final = frozenset({"__entity", "__extn", "__expr"})
_DECIMAL: Final = re.compile(r"(-?)([0-9]+)\.([0-9]{1,4})")


class Unsupported(Exception):
    """A construct (or a context value) the compiler does not follow: ask cedarpy."""


class EvalError(Exception):
    """Cedar's evaluation of the policy errors."""


class CSet(tuple[Any, ...]):
    """A Cedar set (a tuple subclass: a plain tuple is an entity uid ``(type, id)``)."""

    __slots__ = ()


class Dec:
    """A Cedar ``decimal``: an i64 count of ten-thousandths."""

    __slots__ = ("v",)

    def __init__(self, v: int) -> None:
        self.v = v

    def __eq__(self, other: object) -> bool:
        return type(other) is Dec and other.v == self.v

    def __hash__(self) -> int:
        return hash(self.v)


def decimal(text: str) -> Dec:
    """``text`` as Cedar parses ``decimal(text)``; ``EvalError`` when it does not."""
    found = _DECIMAL.fullmatch(text)
    if found is None:
        raise EvalError(f"bad decimal {text!r}")
    sign, whole, frac = found.groups()
    value = int(whole) * 10_000 + int(frac.ljust(4, "0"))
    value = -value if sign else value
    if not _MIN <= value <= _MAX:
        raise EvalError(f"decimal {text!r} overflows")
    return Dec(value)


def cedar_eq(a: Any, b: Any) -> bool:
    """Cedar's ``==``: false across types; sets and records by value."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is dict:
        return a.keys() == b.keys() and all(cedar_eq(v, b[k]) for k, v in a.items())
    if kind is CSet:
        return all(_member(b, x) for x in a) and all(_member(a, y) for y in b)
    return bool(a == b)


def _member(items: Iterable[Any], x: Any) -> bool:
    kind = type(x)
    if kind is str or kind is int or kind is tuple or kind is bool:
        return any(type(y) is kind and y == x for y in items)
    return any(cedar_eq(y, x) for y in items)


def value_of(v: Any) -> Any:
    """A context value (Cedar JSON, as cedar.py builds it) as the compiled code reads it."""
    kind = type(v)
    if kind is str or kind is bool:
        return v
    if kind is int:
        if _MIN <= v <= _MAX:
            return v
        raise Unsupported("a number Cedar cannot hold")
    if kind is list:
        return CSet(value_of(x) for x in v)
    if kind is not dict:
        raise Unsupported(f"a {kind.__name__} in the context")
    if not _ESCAPES.isdisjoint(v):
        return _escaped(v)
    for x in v.values():  # most records hold only scalars: read as they are, no copy
        t = type(x)
        if not (t is str or t is bool or (t is int and _MIN <= x <= _MAX)):
            return {key: value_of(x) for key, x in v.items()}
    return v


def compiled_value(v: Any) -> Any:
    """``value_of(cedar_terms.cedar_value(v))`` in one pass: a Python value (an effect's
    argument) as the compiled code reads it; None where Cedar has no value (left out).
    ``Unsupported`` for what the JSON path reads exactly (types other than the builtins,
    a record with a Cedar JSON escape key)."""
    kind = type(v)
    if kind is str or kind is bool or v is None:
        return v
    if kind is int:
        return v if _MIN <= v <= _MAX else str(v)
    if kind is float:
        if v.is_integer() and abs(v) < 2**63:
            return int(v)
        if math.isfinite(v) and abs(v) < 9.2e14:
            return decimal(f"{v:.4f}")
        return str(v)
    if kind is dict:
        return compiled_record(v)
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        return CSet(x for x in map(compiled_value, v) if x is not None)
    raise Unsupported(f"a {kind.__name__} argument")


def compiled_record(v: Mapping[Any, Any]) -> dict[str, Any]:
    """``value_of(cedar_terms.cedar_record(v))`` in one pass (see ``compiled_value``)."""
    out = {}
    for key, x in v.items():
        got = compiled_value(x)
        if got is not None:
            out[str(key)] = got
    if not _ESCAPES.isdisjoint(out):
        raise Unsupported("a Cedar JSON escape")
    return out


def plain(v: Any) -> Any:
    """A context attribute the JSON path writes as it is: only what Cedar reads alike."""
    kind = type(v)
    if kind is str or kind is bool or (kind is int and _MIN <= v <= _MAX):
        return v
    raise Unsupported(f"a {kind.__name__} attribute")


def counts(v: Mapping[Any, Any]) -> dict[str, Any]:
    """The run's history counts as the compiled code reads them."""
    out = dict(v)
    if any(type(k) is not str for k in out):
        raise Unsupported("a history key that is not a string")
    return value_of(out)  # type: ignore[no-any-return]


def _escaped(v: dict[str, Any]) -> Dec:
    """Cedar JSON's escape for a decimal, as cedar_terms writes it; other escapes (and
    other extension values) are for Cedar's own parser."""
    extn = v.get("__extn")
    if len(v) == 1 and type(extn) is dict and extn.get("fn") == "decimal" and len(extn) == 2:
        arg = extn.get("arg")
        if type(arg) is str and _DECIMAL.fullmatch(arg):
            try:
                return decimal(arg)
            except EvalError:
                pass
    raise Unsupported("a Cedar JSON escape")


def parties(user: str, tenant: str, name: str, kind: str, graph: str) -> tuple[Any, ...]:
    """Principal, action, resource and the ancestors of each entity, as cedar.py makes
    them for cedarpy: ``User`` in ``Tenant``, ``Action::"<name>"`` in ``Action::"<kind>"``."""
    principal, action = ("User", user), ("Action", name)
    ancestors = {principal: (("Tenant", tenant),)}
    if kind != name:
        ancestors[action] = (("Action", kind),)
    return (principal, action, ("Graph", graph), ancestors)


def request_env(
    user: str, tenant: str, name: str, kind: str, graph: str, context: dict[str, Any]
) -> Env:
    """The request as compiled policies read it (``Unsupported`` when the context holds
    what only Cedar's parser reads exactly)."""
    return (*parties(user, tenant, name, kind, graph), value_of(context))


def entity_in(a: Any, b: Any, ancestors: Mapping[Any, tuple[Any, ...]]) -> bool:
    """Cedar's ``a in b``: ``b`` an entity or a set of entities."""
    if type(a) is not tuple:
        raise EvalError("`in` needs an entity on the left")
    if type(b) is tuple:
        return a == b or b in ancestors.get(a, ())
    if type(b) is not CSet:
        raise EvalError("`in` needs an entity or a set on the right")
    if any(type(x) is not tuple for x in b):
        raise EvalError("`in` needs a set of entities")
    up = ancestors.get(a, ())
    return any(a == x or x in up for x in b)


def _long(v: Any) -> int:
    if type(v) is not int:
        raise EvalError("expected long")
    return v


def checked(v: int) -> int:
    if not _MIN <= v <= _MAX:
        raise EvalError("integer overflow")
    return v


def _set(v: Any) -> CSet:
    if type(v) is not CSet:
        raise EvalError("expected set")
    return v


def _dec(v: Any) -> Dec:
    if type(v) is not Dec:
        raise EvalError("expected decimal")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise EvalError("expected bool")
    return v


def _contains_all(a: Any, b: Any) -> bool:
    a, b = _set(a), _set(b)
    return all(_member(a, x) for x in b)


def _contains_any(a: Any, b: Any) -> bool:
    a, b = _set(a), _set(b)
    return any(_member(a, x) for x in b)


# Operators that evaluate every argument, then apply (an error of any propagates).
BINARY: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "eq": cedar_eq,
    "not_eq": lambda a, b: not cedar_eq(a, b),
    "less": lambda a, b: _long(a) < _long(b),
    "less_eq": lambda a, b: _long(a) <= _long(b),
    "greater": lambda a, b: _long(a) > _long(b),
    "greater_eq": lambda a, b: _long(a) >= _long(b),
    "add": lambda a, b: checked(_long(a) + _long(b)),
    "sub": lambda a, b: checked(_long(a) - _long(b)),
    "mul": lambda a, b: checked(_long(a) * _long(b)),
    "contains": lambda a, b: _member(_set(a), b),
    "contains_all": _contains_all,
    "contains_any": _contains_any,
    "decimal_less_than": lambda a, b: _dec(a).v < _dec(b).v,
    "decimal_less_eq": lambda a, b: _dec(a).v <= _dec(b).v,
    "decimal_greater": lambda a, b: _dec(a).v > _dec(b).v,
    "decimal_greater_eq": lambda a, b: _dec(a).v >= _dec(b).v,
}


def _decimal_of(v: Any) -> Dec:
    if type(v) is not str:
        raise EvalError("decimal() needs a string")
    return decimal(v)


UNARY: Final[dict[str, Callable[[Any], Any]]] = {
    "not": lambda v: not _bool(v),
    "neg": lambda v: checked(-_long(v)),
    "is_empty": lambda v: not _set(v),
    "decimal": _decimal_of,
}


def fail() -> NoReturn:
    """An evaluation error (a type mismatch, a missing attribute) where it is met."""
    raise EvalError("type error or missing attribute")


def has_attrs(v: Any, attrs: tuple[str, ...]) -> bool:
    """Cedar's ``v has a.b``: records by key; entities here have no attributes."""
    for attr in attrs:
        if type(v) is dict:
            if attr not in v:
                return False
            v = v[attr]
        elif type(v) is tuple:
            return False
        else:
            raise EvalError("`has` needs a record or an entity")
    return True


def is_type(v: Any, name: str) -> bool:
    if type(v) is not tuple:
        raise EvalError("`is` needs an entity")
    return bool(v[0] == name)


def like(v: Any, match: Callable[[str], Any]) -> bool:
    if type(v) is not str:
        raise EvalError("`like` needs a string")
    return match(v) is not None
