"""Cedar policies compiled into Python functions, with Cedar's semantics.

cedarpy costs ~60-100 us a call, most of it marshalling the request, context and entities
across to Rust; the evaluation itself is a few comparisons. So each policy's typed tree
(``cedarpy.pst``, the tree the engine already slices by action) becomes the source of one
Python function over the request the engine builds (see cedar.py and cedar_values.py):
principal ``User`` (parent ``Tenant``), action ``Action::"<name>"`` (parent
``Action::"<kind>"``), resource ``Graph``, the context record; no entity has attributes
or tags. One function per policy, its checks inline, runs in about a microsecond: a tree
of closures cost several times that in calls.

Cedar's semantics kept exactly: ``&&``/``||``/if-then-else short-circuit and need
booleans; an evaluation error (a missing attribute, a type mismatch, a 64-bit overflow,
an attribute of an entity) makes the policy error (``EvalError``); ``==`` across types is
false; sets and records compare by value; ``in`` follows the entity hierarchy and needs
entities; ``like`` with ``*`` wildcards; ``decimal`` values with their four places.
What is not compiled (ip, datetime, duration, tags, slots, ...) raises ``Unsupported``
when compiling: that policy stays with cedarpy. tests/test_policy_cedar_compiled.py
checks satisfied, not satisfied and erroring against cedarpy's answers.

The generated source holds no text of the policy: every string, entity and pattern is a
named constant of the function's namespace; only Python operators, the local names
below and integers are written out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Final

from .cedar_values import (
    BINARY,
    UNARY,
    CSet,
    Env,
    Unsupported,
    cedar_eq,
    checked,
    entity_in,
    fail,
    has_attrs,
    is_type,
    like,
)

Check = Callable[[Env], bool]

_VARS: Final = {"principal": "_p", "action": "_a", "resource": "_r", "context": "_c"}
_RUNTIME: Final[dict[str, Any]] = {
    "_fail": fail, "_in": entity_in, "_eq": cedar_eq, "_has": has_attrs,
    "_is": is_type, "_like": like, "_CSet": CSet, "_ck": checked,
    **{f"_b_{op}": fn for op, fn in BINARY.items()},
    **{f"_u_{op}": fn for op, fn in UNARY.items()},
}  # fmt: skip
_BUILTINS: Final = {"type": type, "bool": bool, "int": int, "str": str, "dict": dict}
_INLINE_EQ: Final = (bool, int, str)  # literals `==` compares inline (by exact type)


class _Source:
    """The Python expression for Cedar expressions, its constants and temporaries."""

    def __init__(self) -> None:
        self.consts: dict[str, Any] = {}
        self.known: dict[str, str] = {}  # code -> the Python type it always yields
        self.temps = 0

    def const(self, value: Any) -> str:
        name = f"_k{len(self.consts)}"
        self.consts[name] = value
        return name

    def temp(self) -> str:
        self.temps += 1
        return f"_t{self.temps}"

    def typed(self, code: str, kind: str) -> str:
        """``code``'s value, or an evaluation error when it is not of type ``kind`` (no
        test where the expression is of that type whatever the request)."""
        if self.known.get(code) == kind:
            return code
        t = self.temp()
        return f"({t} if type({t} := {code}) is {kind} else _fail())"

    def expr(self, node: Any) -> str:
        kind = type(node).__name__
        build = _BUILD.get(kind)
        if build is None:
            raise Unsupported(f"Cedar expression {kind}")
        code = build(self, node)
        static = _STATIC.get(kind) or _STATIC.get(getattr(node, "op", ""))
        if static is not None:
            self.known[code] = static
        return code

    def literal(self, node: Any) -> str:
        value = node.value
        if type(value) is int and not isinstance(value, bool):
            return f"({int(value)})"
        if type(value) is bool:
            return "True" if value else "False"
        if type(value) is str:
            return self.const(value)
        return self.const(entity(value))


def entity(uid: Any) -> tuple[str, str]:
    """A ``pst.EntityUid`` as the compiled code holds it."""
    if type(uid).__name__ != "EntityUid":
        raise Unsupported("a template slot")
    return (str(uid.type), str(uid.id))


def _get_attr(src: _Source, node: Any) -> str:
    t, key = src.temp(), src.const(str(node.attr))
    base = src.expr(node.base)
    if base == "_c":  # the context is always a record
        return f"(_c[{key}] if {key} in _c else _fail())"
    return f"({t}[{key}] if type({t} := {base}) is dict and {key} in {t} else _fail())"


def _has_attr(src: _Source, node: Any) -> str:
    attrs = src.const(tuple(str(a) for a in node.attrs))
    base = src.expr(node.base)
    if len(node.attrs) > 1:
        return f"_has({base}, {attrs})"
    t, key = src.temp(), src.const(str(node.attrs[0]))
    return f"(({key} in {t}) if type({t} := {base}) is dict else _has({t}, {attrs}))"


def _like(src: _Source, node: Any) -> str:
    parts = [".*" if type(p).__name__ == "Wildcard" else re.escape(p.value) for p in node.pattern]
    match = re.compile("".join(parts), re.DOTALL).fullmatch
    return f"_like({src.expr(node.base)}, {src.const(match)})"


def _is(src: _Source, node: Any) -> str:
    t, name = src.temp(), src.const(str(node.entity_type))
    test = f"_is({t} := {src.expr(node.base)}, {name})"
    if node.in_expr is None:
        return test
    return f"({test} and _in({t}, {src.expr(node.in_expr)}, _anc))"


def _if(src: _Source, node: Any) -> str:
    cond = src.typed(src.expr(node.cond), "bool")
    return f"({src.expr(node.then_expr)} if {cond} else {src.expr(node.else_expr)})"


def _set(src: _Source, node: Any) -> str:
    return "_CSet((" + "".join(f"{src.expr(e)}, " for e in node.elements) + "))"


def _record(src: _Source, node: Any) -> str:
    fields = [f"{src.const(str(k))}: {src.expr(e)}" for k, e in node.fields.items()]
    return "{" + ", ".join(fields) + "}"


def _unary(src: _Source, node: Any) -> str:
    arg = src.expr(node.arg)
    if node.op == "not":
        return f"(not {src.typed(arg, 'bool')})"
    if node.op == "neg":
        return f"_ck(-{src.typed(arg, 'int')})"
    if node.op not in UNARY:
        raise Unsupported(f"Cedar operator {node.op}")
    return f"_u_{node.op}({arg})"


# What an expression yields whenever it does not error (by node, or by operator).
_STATIC: Final = {
    "BoolLit": "bool", "LongLit": "int", "HasAttr": "bool", "Like": "bool", "Is": "bool",
    "not": "bool", "neg": "int", "is_empty": "bool", "eq": "bool", "not_eq": "bool",
    "and": "bool", "or": "bool", "less": "bool", "less_eq": "bool", "greater": "bool",
    "greater_eq": "bool", "in": "bool", "contains": "bool", "contains_all": "bool",
    "contains_any": "bool", "decimal_less_than": "bool", "decimal_less_eq": "bool",
    "decimal_greater": "bool", "decimal_greater_eq": "bool", "add": "int", "sub": "int",
    "mul": "int",
}  # fmt: skip
_COMPARE: Final = {"less": "<", "less_eq": "<=", "greater": ">", "greater_eq": ">="}
_ARITHMETIC: Final = {"add": "+", "sub": "-", "mul": "*"}


def _binary(src: _Source, node: Any) -> str:
    op = node.op
    if op in ("eq", "not_eq"):
        test = _equal(src, node.left, node.right)
        return test if op == "eq" else f"(not {test})"
    left, right = src.expr(node.left), src.expr(node.right)
    if op in ("and", "or"):
        return f"({src.typed(left, 'bool')} {op} {src.typed(right, 'bool')})"
    if op in _COMPARE:
        return f"({src.typed(left, 'int')} {_COMPARE[op]} {src.typed(right, 'int')})"
    if op in _ARITHMETIC:
        return f"_ck({src.typed(left, 'int')} {_ARITHMETIC[op]} {src.typed(right, 'int')})"
    if op == "in":
        return f"_in({left}, {right}, _anc)"
    if op not in BINARY:
        raise Unsupported(f"Cedar operator {op}")
    return f"_b_{op}({left}, {right})"


def _equal(src: _Source, left: Any, right: Any) -> str:
    """Cedar's ``==``; against a bool, long or string literal, inline (same type and
    equal: ``1 == true`` is false in Cedar, true in Python)."""
    for lit, other in ((right, left), (left, right)):
        value = getattr(lit, "value", None)
        if type(lit).__name__ in ("BoolLit", "LongLit", "StringLit") and type(value) in _INLINE_EQ:
            t = src.temp()
            kind = type(value).__name__
            return f"(type({t} := {src.expr(other)}) is {kind} and {t} == {src.literal(lit)})"
    return f"_eq({src.expr(left)}, {src.expr(right)})"


_BUILD: Final[dict[str, Callable[[_Source, Any], str]]] = {
    "Var": lambda src, n: _VARS[n.name],
    "BoolLit": _Source.literal,
    "LongLit": _Source.literal,
    "StringLit": _Source.literal,
    "EntityLit": _Source.literal,
    "GetAttr": _get_attr,
    "HasAttr": _has_attr,
    "Like": _like,
    "Is": _is,
    "IfThenElse": _if,
    "Set": _set,
    "Record": _record,
    "UnaryOp": _unary,
    "BinaryOp": _binary,
}


def _scope(src: _Source, scope: Any, var: str) -> str | None:
    """The scope constraint on ``var`` (None: no constraint); scopes never error."""
    kind = type(scope).__name__
    if kind == "ScopeAny":
        return None
    if kind in ("ScopeEq", "ActionEq"):
        return f"({var} == {src.const(entity(scope.entity))})"
    if kind == "ActionIn":
        return f"_in({var}, {src.const(CSet(entity(e) for e in scope.entities))}, _anc)"
    if kind == "ScopeIn":
        return f"_in({var}, {src.const(entity(scope.entity))}, _anc)"
    if kind in ("ScopeIs", "ScopeIsIn"):
        test = f"({var}[0] == {src.const(str(scope.entity_type))})"
        if kind == "ScopeIsIn":
            test = f"({test} and _in({var}, {src.const(entity(scope.entity))}, _anc))"
        return test
    raise Unsupported(f"Cedar scope {kind}")


def _condition(src: _Source, template: Any, action: str | None) -> str:
    """The Python expression true when ``template`` is satisfied (for requests of
    ``action`` only, when given: a scope it always meets is not tested)."""
    scope = template.action
    kind = type(scope).__name__
    uid = ("Action", action)
    met = (kind == "ActionEq" and entity(scope.entity) == uid) or (
        kind == "ActionIn" and uid in [entity(e) for e in scope.entities]
    )
    scopes = (_scope(src, template.principal, "_p"),
              None if action is not None and met else _scope(src, scope, "_a"),
              _scope(src, template.resource, "_r"))  # fmt: skip
    tests = [s for s in scopes if s is not None]
    for clause in template.clauses:
        kind = type(clause).__name__
        if kind not in ("When", "Unless"):
            raise Unsupported(f"Cedar clause {kind}")
        body = src.typed(src.expr(clause.expr), "bool")
        tests.append(body if kind == "When" else f"(not {body})")
    return " and ".join(tests) or "True"


def compile_policies(
    templates: Sequence[Any], action: str | None = None
) -> Callable[[Env], list[int]]:
    """``templates`` (``cedarpy.pst.Template``) as one function: the indexes of those
    satisfied, in order; it raises ``EvalError`` where Cedar's evaluation of any of them
    errors. With ``action``, the function is only for requests of that action (the
    engine's slices). Compiling raises ``Unsupported`` for what the compiler does not
    follow."""
    src = _Source()
    lines = ["def _policies(env):", "    _p, _a, _r, _anc, _c = env", "    out = []"]
    for index, template in enumerate(templates):
        lines += [f"    if {_condition(src, template, action)}:", f"        out.append({index})"]
    source = "\n".join([*lines, "    return out\n"])
    namespace: dict[str, Any] = {"__builtins__": _BUILTINS, **_RUNTIME, **src.consts}
    try:
        exec(compile(source, "<cedar policies>", "exec"), namespace)
    except (SyntaxError, RecursionError, MemoryError, ValueError) as exc:
        raise Unsupported(f"the policies do not compile to Python: {exc}") from None
    policies: Callable[[Env], list[int]] = namespace["_policies"]
    return policies


def compile_policy(template: Any) -> Check:
    """``template`` as a function: True when it is satisfied, False when not (and as
    ``compile_policies`` for errors and what is not followed)."""
    policies = compile_policies([template])
    return lambda env: bool(policies(env))
