"""Cedar policies read once, when loaded: what each policy is about and what it reads.

From cedarpy's typed policy tree (``PolicySet.to_pst()``) each policy gives its effect
(permit or forbid), the actions its scope names (none: every action), its annotations
(``@id``, ``@reason``, ``@approve``, ``@redact``) and the context attributes its
conditions read. The policy engine uses these to evaluate, for an effect, only the
policies whose scope can match its action, and to build a context holding only what
those policies read (Cedar parses the context of every request: what it is not given it
does not parse). Also: Python values as Cedar JSON values (Cedar has no floats nor null).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Final

import msgspec

ALL: Final = "*"  # "every attribute": a policy reads the record whole, or in a form not followed


class PolicyInfo(msgspec.Struct, frozen=True):
    """One Cedar policy, as the engine needs to know it."""

    id: str  # unique in its layer ("<file>:<n>")
    rule: str  # how decisions name it: its @id, else its id
    effect: str  # "permit" or "forbid"
    actions: frozenset[str] | None  # action ids its scope names (None: unconstrained)
    annotations: Mapping[str, str]
    reads: frozenset[str]  # top-level context attributes read (ALL: the whole context)
    arg_reads: frozenset[str]  # keys of context.args read (ALL: the whole of args)
    template: Any  # the cedarpy.pst node, to build policy sets of a few policies


def describe(file: str, number: int, template: Any) -> PolicyInfo:
    """What ``template`` (the ``number``-th policy of ``file``) is about and reads."""
    actions: frozenset[str] | None = None
    scope = template.action
    kind = type(scope).__name__
    if kind == "ActionEq":
        actions = frozenset({scope.entity.id})
    elif kind == "ActionIn":
        actions = frozenset(e.id for e in scope.entities)
    reads: set[str] = set()
    arg_reads: set[str] = set()
    for clause in template.clauses:
        _walk(clause.expr, reads, arg_reads)
    annotations = dict(template.annotations)
    pid = f"{file}:{number}"
    return PolicyInfo(
        pid, annotations.get("id") or pid, template.effect, actions, annotations,
        frozenset(reads), frozenset(arg_reads), dataclasses.replace(template, id=pid),
    )  # fmt: skip


def _is_context(node: Any) -> bool:
    return type(node).__name__ == "Var" and node.name == "context"


def _is_args(node: Any) -> bool:
    return type(node).__name__ == "GetAttr" and node.attr == "args" and _is_context(node.base)


def _walk(node: Any, reads: set[str], arg_reads: set[str]) -> None:
    """Collect the context attributes (and keys of ``context.args``) ``node`` reads."""
    kind = type(node).__name__
    if kind in ("GetAttr", "HasAttr"):
        base = node.base
        key = node.attr if kind == "GetAttr" else node.attrs[0]
        if _is_args(base):
            reads.add("args")
            arg_reads.add(key)
            return
        if _is_context(base):
            reads.add(key)
            if key == "args":  # context.args used whole (e.g. compared, or `in`)
                arg_reads.add(ALL)
            return
    elif _is_context(node):  # the context used whole
        reads.add(ALL)
        arg_reads.add(ALL)
        return
    if dataclasses.is_dataclass(node):
        for field in dataclasses.fields(node):
            _walk(getattr(node, field.name), reads, arg_reads)
    elif isinstance(node, tuple | list):
        for item in node:
            _walk(item, reads, arg_reads)
    elif isinstance(node, Mapping):
        for item in node.values():
            _walk(item, reads, arg_reads)


_LONG: Final = 2**63


def cedar_value(value: Any) -> Any:
    """``value`` as a Cedar JSON value, or ``None`` when Cedar has no such value (a null
    attribute is left out). A float becomes a ``decimal`` (4 places); what Cedar cannot hold
    as a number becomes its text."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -_LONG <= value < _LONG else str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < _LONG:
            return int(value)
        if math.isfinite(value) and abs(value) < 9.2e14:
            return {"__extn": {"fn": "decimal", "arg": f"{value:.4f}"}}
        return str(value)
    if isinstance(value, Mapping):
        return cedar_record(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [v for v in (cedar_value(x) for x in value) if v is not None]
    return str(value)


def cedar_record(value: Mapping[Any, Any]) -> dict[str, Any]:
    out = {}
    for k, v in value.items():
        converted = cedar_value(v)
        if converted is not None:
            out[str(k)] = converted
    return out
