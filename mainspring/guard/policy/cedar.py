"""Policies in Cedar (through ``cedarpy``), evaluated per effect.

The request an effect makes (see docs/policy.md):

* principal ``User::"<user>"``, a member of ``Tenant::"<tenant>"`` (the run's metadata;
  ``""`` when absent);
* action ``Action::"<effect name>"`` (``"tool:refund"``, ``"model:gpt"``), a member of
  ``Action::"<kind>"`` (``action in Action::"tool"``);
* resource ``Graph::"<graph name>"`` (an agent's graph is ``"agent:<name>"``);
* context: ``kind``, ``name``, ``tool``, ``node``, ``graph``, ``run``, ``thread``,
  ``tenant``, ``user``, ``attempt``, ``dangerous``, ``args``, and on demand ``history``
  (counts of the run's earlier effects by name), ``effects`` (their total) and ``spend``
  (the budget ledger's figures for the run).

A satisfied ``forbid`` denies (its ``@reason`` is the reason), or asks a person when it is
annotated ``@approve("why")``; a satisfied ``permit`` allows, and rewrites the arguments
when annotated ``@redact("ssn,card.number")``; no satisfied policy is no opinion (the
policy's default decides). A policy whose evaluation errors never widens access: an
erroring ``forbid`` denies (fail closed), an erroring ``permit`` does not apply.

Speed: the policies are parsed once into cedarpy ``PolicySet`` handles, one per action
name holding only the policies whose scope can match it; the context holds only the
attributes those policies read; and a decision is kept per (action, principal, resource,
context), so an effect Cedar has already decided costs a dict lookup.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple

import cedarpy
import msgspec
from cedarpy import pst

from .cedar_compile import Check, compile_policies, compile_policy
from .cedar_terms import ALL, PolicyInfo, cedar_record, cedar_value, describe
from .cedar_values import (
    EvalError,
    Unsupported,
    compiled_record,
    compiled_value,
    counts,
    parties,
    plain,
    value_of,
)
from .request import Request
from .verdict import PolicyError, Verdict

ON_DEMAND: Final = frozenset({"history", "effects", "spend"})
_CACHED = 8192  # decisions kept per action
_ERROR_OF = re.compile(r"policy `([^`]+)`")


class _Slice:
    """The policies that can apply to one action name: those the compiler follows as
    closures, the others parsed into one cedarpy handle (``rest``); ``handle`` holds them
    all, for the requests only cedarpy reads exactly and to word errors as Cedar does."""

    __slots__ = (
        "arg_reads",
        "by_id",
        "cache",
        "check",
        "compiled",
        "direct",
        "handle",
        "picked",
        "reads",
        "rest",
        "verdicts",
    )  # fmt: skip

    def __init__(
        self, name: str, policies: Sequence[PolicyInfo], compiled: Mapping[str, Check]
    ) -> None:
        self.by_id = {p.id: p for p in policies}
        self.verdicts = {p.id: _verdict(p, name) for p in policies}  # frozen: shared
        self.reads = frozenset().union(*(p.reads for p in policies))
        self.arg_reads = frozenset().union(*(p.arg_reads for p in policies))
        self.cache: dict[tuple[Any, ...], tuple[Verdict, ...]] = {}
        chosen = [p for p in policies if p.id in compiled]
        try:
            templates = [p.template for p in chosen]
            self.check = compile_policies(templates, action=name) if chosen else None
        except Unsupported:
            self.check, chosen = None, []
        self.compiled = chosen
        self.picked = [self.verdicts[p.id] for p in chosen]
        self.rest = _handle([p for p in policies if p not in chosen])
        self.handle = self.rest if not chosen else _handle(policies)
        self.direct = self.check if self.rest is None else None  # every policy compiled


def _handle(policies: Sequence[PolicyInfo]) -> Any:
    """A cedarpy policy set of ``policies`` (None for none)."""
    if not policies:
        return None
    tree = pst.PolicySet(
        templates=pst.FrozenMap({}),
        static_policies=pst.FrozenMap({p.id: p.template for p in policies}),
        template_links=(),
    )
    return cedarpy.PolicySet.from_pst(tree)


def _compile(policy: PolicyInfo) -> Check | None:
    try:
        return compile_policy(policy.template)
    except Unsupported:
        return None


class CedarRules:
    """The Cedar policies of some files (``(name, text)`` pairs), ready to evaluate."""

    def __init__(self, files: Iterable[tuple[str, str]]) -> None:
        self.policies: list[PolicyInfo] = []
        for file, text in files:
            try:
                tree = cedarpy.PolicySet.from_str(text).to_pst()
            except ValueError as exc:
                raise PolicyError(f"{file}: the Cedar policies do not parse: {exc}") from None
            if tree.templates:
                raise PolicyError(
                    f"{file}: holds Cedar templates (?principal/?resource slots); "
                    "give concrete policies"
                )
            for number, template in enumerate(tree.static_policies.values(), start=1):
                self.policies.append(describe(file, number, template))
        compiled = {p.id: _compile(p) for p in self.policies}
        self.compiled = {k: v for k, v in compiled.items() if v is not None}
        self._slices: dict[str, _Slice] = {}
        self._entities: dict[tuple[str, ...], cedarpy.Entities] = {}
        self._parties_of: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self.reads = frozenset().union(*(p.reads for p in self.policies))

    def __len__(self) -> int:
        return len(self.policies)

    def needs(self, name: str) -> frozenset[str]:
        """The context attributes the policies that can apply to action ``name`` read."""
        return self._slice(name).reads

    def _slice(self, name: str) -> _Slice:
        found = self._slices.get(name)
        if found is None:
            kind = name.partition(":")[0]
            chosen = [
                p for p in self.policies
                if p.actions is None or name in p.actions or kind in p.actions
            ]  # fmt: skip
            if len(self._slices) >= 4096:
                self._slices.clear()
            found = self._slices[name] = _Slice(name, chosen, self.compiled)
        return found

    def evaluate(
        self,
        req: Request,
        history: Mapping[str, int] | None = None,
        spend: Mapping[str, float] | None = None,
    ) -> tuple[Verdict, ...]:
        """The verdicts of the satisfied policies (cached per action, principal, resource
        and the context the policies read)."""
        part = self._slices.get(req.name) or self._slice(req.name)
        if part.handle is None:
            return ()
        if part.direct is not None:
            found = self._direct(req, part, part.direct, history, spend)
            if found is not None:
                return found
        context = _context(req, part, history, spend)
        encoded = msgspec.json.encode(context)
        key = (req.name, req.user, req.tenant, req.graph, encoded)
        cached = part.cache.get(key)
        if cached is not None:
            return cached
        verdicts = self._compiled(req, part, context, encoded)
        if verdicts is None:
            verdicts = self._decide(req, part, part.handle, encoded.decode())
        if len(part.cache) >= _CACHED:
            part.cache.clear()
        part.cache[key] = verdicts
        return verdicts

    def _direct(
        self,
        req: Request,
        part: _Slice,
        check: Callable[[Any], list[int]],
        history: Mapping[str, int] | None,
        spend: Mapping[str, float] | None,
    ) -> tuple[Verdict, ...] | None:
        """Every policy of the slice compiled: evaluated on the effect's values directly
        (no JSON, no decision kept: evaluating costs about what a lookup would). None
        when a policy errors or a value is one only the JSON path reads exactly."""
        parties = self._parties_of.get((req.user, req.tenant, req.name, req.graph))
        try:
            context = _context(req, part, history, spend, _COMPILED)
            satisfied = check((*(parties or self._parties(req)), context))
        except (EvalError, Unsupported):
            return None
        if len(satisfied) <= 1:  # the common case, without a loop
            return (part.picked[satisfied[0]],) if satisfied else ()
        return _verdicts(part, [], [part.compiled[i] for i in satisfied])

    def _compiled(
        self, req: Request, part: _Slice, context: Mapping[str, Any], encoded: bytes
    ) -> tuple[Verdict, ...] | None:
        """The verdicts, the compiled policies evaluated in Python and the others by
        cedarpy; None when a compiled policy errors or the context holds what only
        Cedar's parser reads exactly (then cedarpy decides all, wording its errors)."""
        if part.check is None:
            return None
        parties = self._parties_of.get((req.user, req.tenant, req.name, req.graph))
        try:
            env = (*(parties or self._parties(req)), value_of(context))
            satisfied = part.check(env)
        except (EvalError, Unsupported):
            return None
        if part.rest is None and len(satisfied) <= 1:  # the common case, without a loop
            return (part.picked[satisfied[0]],) if satisfied else ()
        chosen = [part.compiled[i] for i in satisfied]
        errors: list[str] = []
        if part.rest is not None:
            errors, reasons = self._ask(req, part.rest, encoded.decode())
            chosen[:0] = [part.by_id[pid] for pid in reasons if pid in part.by_id]
        return _verdicts(part, errors, chosen)

    def _decide(self, req: Request, part: _Slice, handle: Any, context: str) -> tuple[Verdict, ...]:
        errors, reasons = self._ask(req, handle, context)
        chosen = [part.by_id[pid] for pid in reasons if pid in part.by_id]
        return _verdicts(part, errors, chosen)

    def _ask(self, req: Request, handle: Any, context: str) -> tuple[list[str], list[str]]:
        """cedarpy's errors and reasons (the ids of the policies that decided)."""
        user, tenant, graph = req.user or "", req.tenant or "", req.graph
        request = {
            "principal": {"type": "User", "id": user},
            "action": {"type": "Action", "id": req.name},
            "resource": {"type": "Graph", "id": graph},
            "context": context,
        }
        entities = self._entities_for(user, tenant, req.name, req.kind, graph)
        return _authorize(request, handle, entities)

    def _parties(self, req: Request) -> tuple[Any, ...]:
        """Principal, action, resource and their ancestors, as compiled policies read
        them (kept per request parties, like the cedarpy entities)."""
        key = (req.user, req.tenant, req.name, req.graph)
        found = self._parties_of.get(key)
        if found is None:
            if len(self._parties_of) >= 4096:
                self._parties_of.clear()
            user, tenant = req.user or "", req.tenant or ""
            found = self._parties_of[key] = parties(user, tenant, req.name, req.kind, req.graph)
        return found

    def _entities_for(
        self, user: str, tenant: str, name: str, kind: str, graph: str
    ) -> cedarpy.Entities:
        key = (user, tenant, name, kind, graph)
        found = self._entities.get(key)
        if found is None:
            rows = [
                _entity("User", user, [("Tenant", tenant)]),
                _entity("Tenant", tenant, []),
                _entity("Action", name, [("Action", kind)] if kind != name else []),
                _entity("Graph", graph, []),
            ]
            if kind != name:
                rows.append(_entity("Action", kind, []))
            if len(self._entities) >= 4096:
                self._entities.clear()
            found = self._entities[key] = cedarpy.Entities.from_json_str(
                msgspec.json.encode(rows).decode()
            )
        return found


class _Answer(msgspec.Struct):
    reason: list[str] = []
    errors: list[str] = []


class _Response(msgspec.Struct):
    decision: str
    diagnostics: _Answer = msgspec.field(default_factory=_Answer)


_decode_response = msgspec.json.Decoder(_Response).decode
# cedarpy's extension function, under the public wrapper: the wrapper copies the request,
# builds result objects and parses the answer with the json module, which costs about as
# much as Cedar's own evaluation of a few policies (~25 us a call here). Its answer is the
# same JSON; if a cedarpy release moves it, the public function is used.
_raw_authorize = getattr(getattr(cedarpy, "_internal", None), "is_authorized", None)


def _authorize(
    request: dict[str, Any], handle: Any, entities: cedarpy.Entities
) -> tuple[list[str], list[str]]:
    """Cedar's answer: the errors, and the ids of the policies that decided."""
    if _raw_authorize is not None:
        inner = getattr(entities, "_inner", None)
        if inner is not None:
            answer = _decode_response(_raw_authorize(request, handle, inner))
            return answer.diagnostics.errors, answer.diagnostics.reason
    result = cedarpy.is_authorized(request, handle, entities)
    return list(result.diagnostics.errors), list(result.diagnostics.reasons)


def _verdicts(
    part: _Slice, errors: Sequence[str], satisfied: Sequence[PolicyInfo]
) -> tuple[Verdict, ...]:
    """The verdicts of erroring and satisfied policies: an erroring forbid denies (fail
    closed); as in Cedar's answer, a satisfied forbid leaves the satisfied permits out."""
    out: list[Verdict] = []
    for error in errors:
        found = _ERROR_OF.search(error)
        policy = part.by_id.get(found.group(1)) if found else None
        if policy is None or policy.effect == "forbid":  # never widens access
            rule = policy.rule if policy is not None else "cedar"
            out.append(
                Verdict("deny", f"policy rule {rule!r} failed ({error}); denied (fail closed)",
                        rule=rule)
            )  # fmt: skip
    if any(p.effect == "forbid" for p in satisfied):
        satisfied = [p for p in satisfied if p.effect == "forbid"]
    out.extend(part.verdicts[p.id] for p in satisfied)
    return tuple(out)


def _entity(kind: str, eid: str, parents: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "uid": {"type": kind, "id": eid},
        "attrs": {},
        "parents": [{"type": t, "id": i} for t, i in parents],
    }


def _verdict(policy: PolicyInfo, name: str) -> Verdict:
    notes = policy.annotations
    explicit = policy.actions is not None and name in policy.actions
    if policy.effect == "forbid":
        if "approve" in notes:
            why = notes["approve"] or notes.get("reason") or f"policy {policy.rule} asks a person"
            return Verdict("approve", why, rule=policy.rule, explicit=explicit)
        why = notes.get("reason") or f"forbidden by policy {policy.rule}"
        return Verdict("deny", why, rule=policy.rule, explicit=explicit)
    paths = tuple(p.strip() for p in notes.get("redact", "").split(",") if p.strip())
    if paths:
        return Verdict("rewrite", notes.get("reason", ""), None, paths, policy.rule, explicit)
    return Verdict("allow", notes.get("reason", ""), None, (), policy.rule, explicit)


class _Terms(NamedTuple):
    """How the context's values are written: Cedar JSON, or as compiled code reads them."""

    record: Callable[[Mapping[Any, Any]], dict[str, Any]]
    value: Callable[[Any], Any]
    counts: Callable[[Mapping[str, int]], Any]
    plain: Callable[[Any], Any]


_JSON: Final = _Terms(cedar_record, cedar_value, dict, lambda v: v)
_COMPILED: Final = _Terms(compiled_record, compiled_value, counts, plain)


def _context(
    req: Request,
    part: _Slice,
    history: Mapping[str, int] | None,
    spend: Mapping[str, float] | None,
    terms: _Terms = _JSON,
) -> dict[str, Any]:
    """The context attributes the slice's policies read (all of them for one that reads
    the context whole); attributes Cedar cannot hold (a null) are left out."""
    reads = part.reads
    whole = ALL in reads
    out: dict[str, Any] = {}
    for attr in _ATTRS if whole else reads:
        if attr == "args":
            args = req.args
            if ALL in part.arg_reads:
                out["args"] = terms.record(args)
            else:
                convert = terms.value
                out["args"] = {
                    k: v for k in part.arg_reads
                    if k in args and (v := convert(args[k])) is not None
                }  # fmt: skip
        elif attr == "history":
            if history is not None:
                out["history"] = terms.counts(history)
        elif attr == "effects":
            if history is not None:
                out["effects"] = terms.plain(sum(history.values()))
        elif attr == "spend":
            if spend is not None:
                out["spend"] = terms.record(spend)
        else:
            getter = _PLAIN.get(attr)
            if getter is not None and (value := getter(req)) is not None:
                out[attr] = terms.plain(value)
    return out


_PLAIN: Final = {
    "kind": lambda r: r.kind,
    "name": lambda r: r.name,
    "tool": lambda r: r.tool,
    "node": lambda r: r.node,
    "graph": lambda r: r.graph,
    "run": lambda r: r.run_id,
    "thread": lambda r: r.thread,
    "tenant": lambda r: r.tenant,
    "user": lambda r: r.user,
    "attempt": lambda r: r.effect.attempt,
    "dangerous": lambda r: r.dangerous,
}
_ATTRS: Final = (*_PLAIN, "args", "history", "effects", "spend")
