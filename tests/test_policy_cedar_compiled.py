"""Compiled Cedar policies decide exactly as cedarpy does (a differential test).

Hypothesis writes policies from a grammar over what the compiler follows (plus ip,
datetime and tags, which it must leave to cedarpy) and requests whose contexts miss
attributes and hold the wrong types; every policy the compiler took must be satisfied,
not satisfied or erroring exactly when cedarpy says so. Then the engine as a whole
(compiled, cedarpy for the rest and for errors) gives the verdicts cedarpy alone gives.
"""

from __future__ import annotations

import json
from typing import Any

import cedarpy
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from mainspring.engine.gate import Effect
from mainspring.guard.policy.cedar import _ERROR_OF, CedarRules, _authorize, _handle
from mainspring.guard.policy.cedar_compile import compile_policies
from mainspring.guard.policy.cedar_terms import PolicyInfo, cedar_value
from mainspring.guard.policy.cedar_values import (
    CSet,
    EvalError,
    Unsupported,
    cedar_eq,
    compiled_value,
    decimal,
    request_env,
    value_of,
)
from mainspring.guard.policy.request import Request

ENTITIES = ['User::"u1"', 'User::"u2"', 'Tenant::"t1"', 'Tenant::""', 'Action::"tool:x"',
            'Action::"tool"', 'Graph::"g"', 'Other::"x"', 'NS::User::"u1"']  # fmt: skip
ATTRS = ["a", "b", "n", "s", "d", "r", "set", "e"]
STRINGS = ["", "a", "ab", "a*b", "tool:x", "a\\nb", "*", "ü"]
LONGS = [0, 1, -1, 7, 900, 2**62, 2**63 - 1, -(2**63)]
DECIMALS = ["1.5", "-0.5", "0.0001", "12.25", "-3.0", "922337203685477.5807"]


def _quote(s: str) -> str:
    return json.dumps(s)


def _leaves() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from([str(n) if n >= 0 else f"({n})" for n in LONGS]),
        st.sampled_from(["true", "false"]),
        st.sampled_from(STRINGS).map(_quote),
        st.sampled_from(ENTITIES),
        st.sampled_from(["principal", "action", "resource", "context"]),
        st.sampled_from(ATTRS).map(lambda a: f"context.{a}"),
        st.sampled_from(ATTRS).map(lambda a: f"context.r.{a}"),
        st.sampled_from([*DECIMALS, "x", "1.23456"]).map(lambda d: f'decimal("{d}")'),
    )


def _grow(e: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    two = st.tuples(e, e)
    binop = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "&&", "||", "+", "-", "*", "in"])
    method = st.sampled_from(["contains", "containsAll", "containsAny", "lessThan",
                              "lessThanOrEqual", "greaterThan", "greaterThanOrEqual"])  # fmt: skip
    pattern = st.lists(st.sampled_from(["a", "b", "*", "\\*", ":", "x"]), max_size=4).map("".join)
    return st.one_of(
        st.tuples(e, binop, e).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(["!", "-"]), e).map(lambda t: f"({t[0]}{t[1]})"),
        st.tuples(e, method, e).map(lambda t: f"({t[0]}).{t[1]}({t[2]})"),
        e.map(lambda x: f"({x}).isEmpty()"),
        st.tuples(e, st.sampled_from([*ATTRS, "a.b", "r.n"])).map(
            lambda t: f"(({t[0]}) has {t[1]})"
        ),
        st.tuples(e, st.sampled_from(ATTRS)).map(lambda t: f"({t[0]}).{t[1]}"),
        st.tuples(e, pattern).map(lambda t: f'(({t[0]}) like "{t[1]}")'),
        st.tuples(e, st.sampled_from(["User", "Tenant", "Action", "Graph"])).map(
            lambda t: f"(({t[0]}) is {t[1]})"
        ),
        st.tuples(e, e).map(lambda t: f"(({t[0]}) is User in {t[1]})"),
        st.tuples(e, e, e).map(lambda t: f"(if {t[0]} then {t[1]} else {t[2]})"),
        st.lists(e, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        two.map(lambda t: f"{{a: {t[0]}, b: {t[1]}}}"),
        e.map(lambda x: f"decimal({x})"),
        st.sampled_from(
            [
                'ip("10.0.0.1").isIpv4()',
                'context.s.hasTag("a")',
                'datetime("2024-01-01") < datetime("2024-02-01")',
            ]
        ),
    )


EXPRS = st.recursive(_leaves(), _grow, max_leaves=8)
PRINCIPALS = ["principal", 'principal == User::"u1"', 'principal in Tenant::"t1"',
              "principal is User", 'principal is User in Tenant::""', 'principal == Tenant::"t1"']  # fmt: skip
ACTIONS = ["action", 'action == Action::"tool:x"', 'action in [Action::"tool", Action::"x"]',
           'action in Action::"tool"', 'action == Action::"tool"', 'action in [Action::"x"]']  # fmt: skip
RESOURCES = ["resource", 'resource == Graph::"g"', "resource is Graph", 'resource in Graph::"h"']


@st.composite
def policies(draw: st.DrawFn) -> str:
    scope = (draw(st.sampled_from(PRINCIPALS)), draw(st.sampled_from(ACTIONS)),
             draw(st.sampled_from(RESOURCES)))  # fmt: skip
    clauses = draw(st.lists(st.tuples(st.sampled_from(["when", "unless"]), EXPRS), max_size=2))
    body = " ".join(f"{k} {{ {x} }}" for k, x in clauses)
    effect = draw(st.sampled_from(["permit", "forbid"]))
    return f"{effect} ({', '.join(scope)}) {body};"


def _json_values() -> st.SearchStrategy[Any]:
    leaf = st.one_of(
        st.sampled_from(LONGS), st.booleans(), st.sampled_from(STRINGS),
        st.sampled_from(DECIMALS).map(lambda d: {"__extn": {"fn": "decimal", "arg": d}}),
        st.just({"__entity": {"type": "User", "id": "u1"}}),
    )  # fmt: skip
    return st.recursive(
        leaf,
        lambda v: st.one_of(
            st.lists(v, max_size=3), st.dictionaries(st.sampled_from(ATTRS), v, max_size=3)
        ),
        max_leaves=6,
    )


CONTEXTS = st.dictionaries(st.sampled_from(ATTRS), _json_values(), max_size=6)
REQUESTS = st.tuples(
    st.sampled_from(["u1", "u2", ""]), st.sampled_from(["t1", "t2", ""]),
    st.sampled_from(["tool:x", "tool:y", "model:m", "x"]), st.sampled_from(["g", "h"]),
)  # fmt: skip


def _parsed(texts: list[str]) -> CedarRules | None:
    good = []
    for text in texts:
        try:
            cedarpy.PolicySet.from_str(text)
        except ValueError:
            continue
        good.append(text)
    return CedarRules([("f", "\n".join(good))]) if good else None


def _cedarpy(rules: CedarRules, req: tuple[str, ...], ctx: dict[str, Any]) -> dict[str, str]:
    """Each policy alone through cedarpy (its answer names only the policies that decided:
    a satisfied forbid hides the satisfied permits)."""
    return {k: v for p in rules.policies for k, v in _alone(rules, p, req, ctx).items()}


def _alone(
    rules: CedarRules, policy: PolicyInfo, req: tuple[str, ...], ctx: dict[str, Any]
) -> dict[str, str]:
    user, tenant, name, graph = req
    kind = name.partition(":")[0]
    request = {"principal": {"type": "User", "id": user},
               "action": {"type": "Action", "id": name},
               "resource": {"type": "Graph", "id": graph}, "context": json.dumps(ctx)}  # fmt: skip
    entities = rules._entities_for(user, tenant, name, kind, graph)
    errors, reasons = _authorize(request, _handle([policy]), entities)
    out = {pid: "satisfied" for pid in reasons}
    for error in errors:
        found = _ERROR_OF.search(error)
        assert found, error
        out[found.group(1)] = "error"
    return out


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.filter_too_much])  # fmt: skip
@given(st.lists(policies(), min_size=1, max_size=4), REQUESTS, CONTEXTS)
def test_compiled_policies_decide_and_error_as_cedarpy(
    texts: list[str], req: tuple[str, ...], ctx: dict[str, Any]
) -> None:
    rules = _parsed(texts)
    assume(rules is not None)
    assert rules is not None
    user, tenant, name, graph = req
    try:
        env = request_env(user, tenant, name, name.partition(":")[0], graph, ctx)
    except Unsupported:
        assert any("__entity" in json.dumps(v) for v in ctx.values())
        return
    want = _cedarpy(rules, req, ctx)
    answers: dict[str, str] = {}
    for policy in rules.policies:
        check = rules.compiled.get(policy.id)
        if check is None:
            event("left to cedarpy")
            continue
        try:
            got = "satisfied" if check(env) else "unsatisfied"
        except EvalError:
            got = "error"
        event(got)
        assert got == want.get(policy.id, "unsatisfied"), policy.template
        answers[policy.id] = got
    # all of them as one function (as a slice runs): the satisfied in order, or an error
    together = [p for p in rules.policies if p.id in answers]
    if not together:
        return
    fused = compile_policies([p.template for p in together])
    if "error" in answers.values():
        with pytest.raises(EvalError):
            fused(env)
    else:
        satisfied = [i for i, p in enumerate(together) if answers[p.id] == "satisfied"]
        assert fused(env) == satisfied


def _effect(req: tuple[str, ...], args: dict[str, Any]) -> Request:
    user, tenant, name, graph = req
    meta = {"tenant": tenant, "user": user}
    kind = name.partition(":")[0]
    return Request(Effect(kind, name, args, "k", "r", "n", 1, 0, 0, 1, meta, graph=graph))


ARGS = st.dictionaries(
    st.sampled_from(["amount", "target", "to", "n"]),
    st.one_of(
        st.integers(-(2**64), 2**64),
        st.floats(allow_nan=True),
        st.none(),
        st.sampled_from(STRINGS),
        st.lists(st.integers(0, 3), max_size=3),
    ),
    max_size=4,
)
ENGINE_EXPRS = st.sampled_from([
    "context.args.amount > 900", "context.args has amount && context.args.amount > 5",
    'context.args.target like "prod-*"', 'context.args.amount == decimal("1.5")',
    'context.args.amount.greaterThan(decimal("0.5"))', "context.args.n.contains(2)",
    'context.tenant == "t1" || context.user == "u2"', "context.args.to is User",
    'ip("10.0.0.1").isIpv4() && context.args has n', "context has history",
    'context.history has "tool:x" && context.effects > 1', "context.spend.cost.greaterThan(decimal(\"0.5\"))",
    "context.args.n == [1, 2]", "context.args == {}", "context.attempt == 1 && !context.dangerous",
])  # fmt: skip
HISTORIES = st.none() | st.dictionaries(st.sampled_from(["tool:x", "tool:y"]), st.integers(0, 3))
SPENDS = st.none() | st.dictionaries(st.sampled_from(["cost", "tokens"]),
                                     st.floats(-1e16, 1e16) | st.integers(0, 10))  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["permit", "forbid"]), st.sampled_from(ACTIONS),
                          ENGINE_EXPRS), min_size=1, max_size=5),
       REQUESTS, ARGS, HISTORIES, SPENDS)  # fmt: skip
def test_the_engine_gives_cedarpys_verdicts(
    texts: list[tuple[str, str, str]],
    req: tuple[str, ...],
    args: dict[str, Any],
    history: dict[str, int] | None,
    spend: dict[str, float] | None,
) -> None:
    text = "\n".join(f"{e} (principal, {a}, resource) when {{ {x} }};" for e, a, x in texts)
    compiled, plain = CedarRules([("f", text)]), CedarRules([("f", text)])
    plain.compiled = {}  # every policy through cedarpy
    request = _effect(req, args)
    got, want = compiled.evaluate(request, history, spend), plain.evaluate(request, history, spend)
    assert sorted(map(repr, got)) == sorted(map(repr, want))


PYTHON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.floats() | st.text(max_size=3),
    lambda v: (
        st.lists(v, max_size=3)
        | st.tuples(v)
        | st.dictionaries(
            st.text(max_size=2) | st.sampled_from(["__extn", "__entity"]), v, max_size=3
        )
    ),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(PYTHON_VALUES)
def test_arguments_are_read_directly_as_through_cedar_json(value: Any) -> None:
    try:
        direct = compiled_value(value)
    except Unsupported:
        return  # the engine takes the JSON path then
    through = cedar_value(value)
    assert (direct is None) == (through is None)
    if through is not None:
        assert cedar_eq(direct, value_of(through))


def test_values_compare_as_cedar_values() -> None:
    assert not cedar_eq(1, True) and not cedar_eq(CSet([1]), CSet([True]))
    assert cedar_eq(CSet([1, 2, 2]), CSet([2, 1])) and not cedar_eq({"a": 1}, {"a": 1, "b": 2})
    assert cedar_eq(decimal("1.5"), decimal("1.5000")) and decimal("-0.5").v == -5000
    with pytest.raises(EvalError):
        decimal("1.23456")


def test_most_policies_compile_and_the_rest_stay_with_cedarpy() -> None:
    rules = CedarRules([("f", 'permit (principal, action, resource) when { context.n > 1 };\n'
                              'forbid (principal, action, resource) when { ip("10.0.0.1").isIpv4() };')])  # fmt: skip
    assert list(rules.compiled) == ["f:1"]
    part = rules._slice("tool:x")
    assert part.rest is not None and part.handle is not None and len(part.compiled) == 1


TRICKY = [
    'decimal("-0.5").lessThan(decimal("0.0"))', 'decimal("-0.5") == decimal("-0.50")',
    'User::"nobody" has a', 'principal has a', "principal.a == 1", 'User::"u1" in Tenant::"t1"',
    'User::"u1" in [1]', "1 in [principal]", 'principal in [Tenant::"t1", 1]',
    "(9223372036854775807 + 1) == 0", "(-9223372036854775807 - 2) == 0", "(0 - context.n) == 1",
    "false && (1 > true)", "true || (1 > true)", "(true && 1) == 1", "[1, true] == [true, 1]",
    "[1, [2]].contains([2])", "{a: 1} == {a: 1, b: 2}", 'context.s like "a*b"',
    'context.s like "a\\*b"', "context has r.a && context.r.a == 1", "context.r has n.a",
    "[].isEmpty()", "[1].containsAll([])", "[].containsAny([1])", "context.set.contains(1)",
    'action in Action::"tool"', 'action in Action::"tool:x"', 'action in Action::"model"',
    'principal is User in principal', "if context.n then 1 else 2", "context.d.lessThan(context.d)",
    'decimal(context.s) == decimal("1.0")', "context.n == context.d", "-(-9223372036854775807 - 1) == 1",
]  # fmt: skip
CONTEXT = {"n": 5, "s": "a*b", "r": {"a": 1, "n": 2}, "set": [1, "x", [2]],
           "d": {"__extn": {"fn": "decimal", "arg": "2.5000"}}}  # fmt: skip


@pytest.mark.parametrize("cond", TRICKY)
@pytest.mark.parametrize("name", ["tool:x", "x"])
def test_tricky_conditions_decide_as_cedarpy(cond: str, name: str) -> None:
    rules = CedarRules([("f", f"forbid (principal, action, resource) when {{ {cond} }};")])
    check = rules.compiled["f:1"]
    req = ("u1", "t1", name, "g")
    try:
        got = (
            "satisfied"
            if check(request_env("u1", "t1", name, name.partition(":")[0], "g", CONTEXT))
            else "no"
        )
    except EvalError:
        got = "error"
    assert got == _cedarpy(rules, req, CONTEXT).get("f:1", "no")
