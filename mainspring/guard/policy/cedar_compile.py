"""Cedar policies compiled into Python closures, with Cedar's semantics.

cedarpy costs ~60-100 us a call, most of it marshalling the request, context and entities
across to Rust; the evaluation itself is a few comparisons. So each policy's typed tree
(``cedarpy.pst``, the tree the engine already slices by action) becomes a closure over
the request the engine builds (see cedar.py): principal ``User`` (parent ``Tenant``),
action ``Action::"<name>"`` (parent ``Action::"<kind>"``), resource ``Graph``, the
context record; no entity has attributes or tags.

Cedar's semantics kept exactly: ``&&``/``||``/if-then-else short-circuit and need
booleans; an evaluation error (a missing attribute, a type mismatch, a 64-bit overflow,
an attribute of an entity) makes the policy error (``EvalError``); ``==`` across types is
false; sets and records compare by value; ``in`` follows the entity hierarchy and needs
entities; ``like`` with ``*`` wildcards; ``decimal`` values with their four places.
What is not compiled (ip, datetime, duration, tags, slots, ...) raises ``Unsupported``
when compiling: that policy stays with cedarpy. A context value the compiler does not
read the way Cedar's JSON parser would (an escape like ``__entity``, a float) raises
``Unsupported`` for the request: the engine asks cedarpy then. tests/
test_policy_cedar_compiled.py checks decisions and errors against cedarpy's.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

Env = tuple[Any, ...]  # (principal, action, resource, context, ancestors)
Fn = Callable[[Env], Any]
Check = Callable[[Env], bool]

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
    if kind is dict:
        if _ESCAPES.isdisjoint(v):
            return {k: value_of(x) for k, x in v.items()}
        extn = v.get("__extn")
        if len(v) == 1 and type(extn) is dict and extn.get("fn") == "decimal" and len(extn) == 2:
            arg = extn.get("arg")
            if type(arg) is str and _DECIMAL.fullmatch(arg):
                try:
                    return decimal(arg)
                except EvalError:
                    pass
        raise Unsupported("a Cedar JSON escape")
    raise Unsupported(f"a {kind.__name__} in the context")


def request_env(
    user: str, tenant: str, name: str, kind: str, graph: str, context: Mapping[str, Any]
) -> Env:
    """The request cedar.py sends, as compiled policies read it (``Unsupported`` when the
    context holds what only Cedar's parser reads exactly)."""
    principal, action = ("User", user), ("Action", name)
    ancestors = {principal: (("Tenant", tenant),)}
    if kind != name:
        ancestors[action] = (("Action", kind),)
    return (principal, action, ("Graph", graph), value_of(dict(context)), ancestors)


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
    return v  # type: ignore[no-any-return]


def _checked(v: int) -> int:
    if not _MIN <= v <= _MAX:
        raise EvalError("integer overflow")
    return v


def _set(v: Any) -> CSet:
    if type(v) is not CSet:
        raise EvalError("expected set")
    return v  # type: ignore[no-any-return]


def _dec(v: Any) -> Dec:
    if type(v) is not Dec:
        raise EvalError("expected decimal")
    return v  # type: ignore[no-any-return]


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise EvalError("expected bool")
    return v  # type: ignore[no-any-return]


def _contains_all(a: Any, b: Any) -> bool:
    a, b = _set(a), _set(b)
    return all(_member(a, x) for x in b)


def _contains_any(a: Any, b: Any) -> bool:
    a, b = _set(a), _set(b)
    return any(_member(a, x) for x in b)


# Binary operators that evaluate both sides, then apply (errors of either side propagate).
_STRICT: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "eq": cedar_eq,
    "not_eq": lambda a, b: not cedar_eq(a, b),
    "less": lambda a, b: _long(a) < _long(b),
    "less_eq": lambda a, b: _long(a) <= _long(b),
    "greater": lambda a, b: _long(a) > _long(b),
    "greater_eq": lambda a, b: _long(a) >= _long(b),
    "add": lambda a, b: _checked(_long(a) + _long(b)),
    "sub": lambda a, b: _checked(_long(a) - _long(b)),
    "mul": lambda a, b: _checked(_long(a) * _long(b)),
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


_UNARY: Final[dict[str, Callable[[Any], Any]]] = {
    "not": lambda v: not _bool(v),
    "neg": lambda v: _checked(-_long(v)),
    "is_empty": lambda v: not _set(v),
    "decimal": _decimal_of,
}


def entity(uid: Any) -> tuple[str, str]:
    """A ``pst.EntityUid`` as the compiled code holds it."""
    if type(uid).__name__ != "EntityUid":
        raise Unsupported("a template slot")
    return (str(uid.type), uid.id)


def expr(node: Any) -> Fn:
    """``node`` (a ``cedarpy.pst`` expression) as a closure over the request."""
    kind = type(node).__name__
    build = _BUILD.get(kind)
    if build is None:
        raise Unsupported(f"Cedar expression {kind}")
    return build(node)


def _const(value: Any) -> Fn:
    return lambda env: value


def _var(node: Any) -> Fn:
    index = ("principal", "action", "resource", "context").index(node.name)
    return operator.itemgetter(index)


def _get_attr(node: Any) -> Fn:
    base, attr = expr(node.base), node.attr

    def get(env: Env) -> Any:
        v = base(env)
        if type(v) is dict and attr in v:
            return v[attr]
        raise EvalError(f"no attribute {attr!r}")  # entities here have no attributes

    return get


def _has_attr(node: Any) -> Fn:
    base, attrs = expr(node.base), tuple(node.attrs)

    def has(env: Env) -> bool:
        v = base(env)
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

    return has


def _like(node: Any) -> Fn:
    base = expr(node.base)
    parts = [".*" if type(p).__name__ == "Wildcard" else re.escape(p.value) for p in node.pattern]
    match = re.compile("".join(parts), re.DOTALL).fullmatch

    def like(env: Env) -> bool:
        v = base(env)
        if type(v) is not str:
            raise EvalError("`like` needs a string")
        return match(v) is not None

    return like


def _is(node: Any) -> Fn:
    base, name = expr(node.base), str(node.entity_type)
    inner = expr(node.in_expr) if node.in_expr is not None else None

    def is_(env: Env) -> bool:
        v = base(env)
        if type(v) is not tuple:
            raise EvalError("`is` needs an entity")
        if v[0] != name:
            return False
        return inner is None or entity_in(base(env), inner(env), env[4])

    return is_


def _if(node: Any) -> Fn:
    cond, then, other = expr(node.cond), expr(node.then_expr), expr(node.else_expr)
    return lambda env: then(env) if _bool(cond(env)) else other(env)


def _set_lit(node: Any) -> Fn:
    items = [expr(e) for e in node.elements]
    return lambda env: CSet(f(env) for f in items)


def _record(node: Any) -> Fn:
    fields = [(k, expr(e)) for k, e in node.fields.items()]
    return lambda env: {k: f(env) for k, f in fields}


def _unary(node: Any) -> Fn:
    op = _UNARY.get(node.op)
    if op is None:
        raise Unsupported(f"Cedar operator {node.op}")
    arg = expr(node.arg)
    return lambda env: op(arg(env))


def _binary(node: Any) -> Fn:
    left, right = expr(node.left), expr(node.right)
    if node.op == "and":
        return lambda env: _bool(left(env)) and _bool(right(env))
    if node.op == "or":
        return lambda env: _bool(left(env)) or _bool(right(env))
    if node.op == "in":
        return lambda env: entity_in(left(env), right(env), env[4])
    op = _STRICT.get(node.op)
    if op is None:
        raise Unsupported(f"Cedar operator {node.op}")
    return lambda env: op(left(env), right(env))


_BUILD: Final[dict[str, Callable[[Any], Fn]]] = {
    "Var": _var,
    "BoolLit": lambda n: _const(n.value),
    "LongLit": lambda n: _const(n.value),
    "StringLit": lambda n: _const(n.value),
    "EntityLit": lambda n: _const(entity(n.value)),
    "GetAttr": _get_attr,
    "HasAttr": _has_attr,
    "Like": _like,
    "Is": _is,
    "IfThenElse": _if,
    "Set": _set_lit,
    "Record": _record,
    "UnaryOp": _unary,
    "BinaryOp": _binary,
}


def _scope(scope: Any, index: int) -> Check | None:
    """The scope constraint on ``env[index]`` (None: no constraint)."""
    kind = type(scope).__name__
    get = operator.itemgetter(index)
    if kind == "ScopeAny":
        return None
    if kind in ("ScopeEq", "ActionEq"):
        uid = entity(scope.entity)
        return lambda env: bool(get(env) == uid)
    if kind in ("ScopeIn", "ActionIn"):
        uids = CSet(entity(e) for e in scope.entities) if kind == "ActionIn" else None
        target: Any = uids if uids is not None else entity(scope.entity)
        return lambda env: entity_in(get(env), target, env[4])
    if kind == "ScopeIs":
        name = str(scope.entity_type)
        return lambda env: bool(get(env)[0] == name)
    if kind == "ScopeIsIn":
        name, uid = str(scope.entity_type), entity(scope.entity)
        return lambda env: get(env)[0] == name and entity_in(get(env), uid, env[4])
    raise Unsupported(f"Cedar scope {kind}")


def compile_policy(template: Any) -> Check:
    """``template`` (a ``cedarpy.pst.Template``) as a closure: True when it is satisfied,
    False when not; raises ``EvalError`` where Cedar's evaluation errors and, when
    compiling, ``Unsupported`` for what it does not follow."""
    checks = [
        c for c in (_scope(template.principal, 0), _scope(template.action, 1),
                    _scope(template.resource, 2)) if c is not None
    ]  # fmt: skip
    for clause in template.clauses:
        body, kind = expr(clause.expr), type(clause).__name__
        if kind == "When":
            checks.append(lambda env, body=body: _bool(body(env)))
        elif kind == "Unless":
            checks.append(lambda env, body=body: not _bool(body(env)))
        else:
            raise Unsupported(f"Cedar clause {kind}")

    def satisfied(env: Env) -> bool:
        return all(check(env) for check in checks)

    return satisfied
