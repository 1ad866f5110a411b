"""Policy rules in Python: a small registry and decorator.

    rules = Rules()

    @rules.rule("no-refunds-over-100", tools=["refund"])
    def big_refunds(req):
        if req.args.get("amount", 0) > 100:
            return approve("refunds over 100 need a person")

A rule is a function of a :class:`~.request.Request` (sync or async) returning ``None``
or a :class:`~.verdict.Verdict`. ``kinds`` / ``names`` / ``tools`` say which effects it
applies to (all when none are given): the policy looks rules up by effect name once and
keeps the list, so 50 rules over 10 tools cost each effect only its own few. A rule that
raises, returns something else or runs past its ``timeout`` fails closed: the effect is
denied, the reason naming the rule and what went wrong.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import msgspec

from .request import Request
from .verdict import PolicyError, Verdict

RuleFn = Callable[[Request], Verdict | Awaitable[Verdict | None] | None]
DEFAULT_TIMEOUT = 0.1  # seconds a rule may take; past it the effect is denied


class Rule(msgspec.Struct, frozen=True):
    id: str
    fn: RuleFn
    kinds: frozenset[str] | None = None
    names: frozenset[str] | None = None
    history: bool = False
    timeout: float = DEFAULT_TIMEOUT
    is_async: bool = False

    def applies(self, kind: str, name: str) -> bool:
        return (self.kinds is None or kind in self.kinds) and (
            self.names is None or name in self.names
        )


class Rules:
    """A set of Python rules (a module of policy files defines one, named anything)."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._rules: list[Rule] = []
        self._by_effect: dict[tuple[str, str], tuple[Rule, ...]] = {}
        self._awaits: set[tuple[str, str]] = set()  # effects some async rule applies to

    def rule(
        self,
        id: str | None = None,
        *,
        kinds: Iterable[str] | None = None,
        names: Iterable[str] | None = None,
        tools: Iterable[str] | None = None,
        history: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Callable[[RuleFn], RuleFn]:
        """Register the decorated function as a rule (``id`` defaults to its name)."""

        def register(fn: RuleFn) -> RuleFn:
            self.add(
                fn, id=id, kinds=kinds, names=names, tools=tools, history=history, timeout=timeout
            )
            return fn

        return register

    def add(
        self,
        fn: RuleFn,
        *,
        id: str | None = None,
        kinds: Iterable[str] | None = None,
        names: Iterable[str] | None = None,
        tools: Iterable[str] | None = None,
        history: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Rule:
        rule_id = id or str(getattr(fn, "__name__", "")) or f"rule{len(self._rules)}"
        if any(r.id == rule_id for r in self._rules):
            raise PolicyError(f"two rules are named {rule_id!r}; give one of them another id")
        if not callable(fn):
            raise PolicyError(f"rule {rule_id!r} is {fn!r}; give a function of the request")
        if timeout <= 0:
            raise PolicyError(f"rule {rule_id!r}: timeout={timeout} must be > 0 seconds")
        named = set(names or ()) | {f"tool:{t}" for t in tools or ()}
        kind_set = frozenset(kinds) if kinds is not None else None
        if tools is not None and kind_set is None:
            kind_set = frozenset({"tool"})
        made = Rule(
            rule_id, fn, kind_set, frozenset(named) if named else None, history, timeout,
            inspect.iscoroutinefunction(fn),
        )  # fmt: skip
        self._rules.append(made)
        self._by_effect.clear()
        self._awaits.clear()
        return made

    def __iter__(self) -> Any:
        return iter(self._rules)

    def __len__(self) -> int:
        return len(self._rules)

    @property
    def uses_history(self) -> bool:
        return any(r.history for r in self._rules)

    def for_effect(self, kind: str, name: str) -> tuple[Rule, ...]:
        """The rules that apply to effects of ``kind`` and ``name``, in registration order."""
        found = self._by_effect.get((kind, name))
        if found is None:
            found = tuple(r for r in self._rules if r.applies(kind, name))
            if len(self._by_effect) >= 4096:  # effect names are few; a flood is not kept
                self._by_effect.clear()
                self._awaits.clear()
            self._by_effect[(kind, name)] = found
            if any(r.is_async for r in found):
                self._awaits.add((kind, name))
        return found

    def evaluate_now(self, req: Request) -> list[Verdict] | None:
        """As :meth:`evaluate` without a coroutine, or None if a rule that applies is async."""
        rules = self.for_effect(req.kind, req.name)
        if (req.kind, req.name) in self._awaits:
            return None  # known before any rule runs, so that none runs twice
        out: list[Verdict] = []
        for rule in rules:
            req._reads_history = rule.history
            verdict = run_sync(rule, req)
            if verdict is _AWAIT:  # a sync function that returned an awaitable: from now on
                self._awaits.add((req.kind, req.name))  # this effect's rules are awaited
                return None
            if verdict is not None:
                out.append(verdict)
        return out

    async def evaluate(self, req: Request) -> list[Verdict]:
        """The verdicts of the rules that apply to ``req`` (a failing rule's is a deny)."""
        out: list[Verdict] = []
        for rule in self.for_effect(req.kind, req.name):
            req._reads_history = rule.history
            # A sync rule is called without a coroutine of its own (most rules: ~1 us saved).
            verdict = await run_rule(rule, req) if rule.is_async else run_sync(rule, req)
            if verdict is _AWAIT:
                verdict = await run_rule(rule, req)
            if verdict is not None:
                out.append(verdict)
        return out


_AWAIT: Any = object()  # a sync rule returned an awaitable: call it again as async


def run_sync(rule: Rule, req: Request) -> Verdict | None:
    """A sync rule's verdict (as :func:`run_rule`), or ``_AWAIT`` if it returned an awaitable."""
    clock = time.perf_counter
    began = clock()
    try:
        result = rule.fn(req)
    except Exception as exc:
        return failed(rule.id, f"{type(exc).__name__}: {exc}")
    took = clock() - began
    if result is not None and type(result) is not Verdict and inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if close is not None:
            close()  # not awaited here: run_rule calls the rule again and awaits that
        return _AWAIT  # type: ignore[no-any-return]
    if took > rule.timeout:
        return failed(rule.id, f"it took {took * 1000:.0f} ms, over its {rule.timeout * 1000:g} ms")
    return None if result is None else _checked(rule, req, result)


async def run_rule(rule: Rule, req: Request) -> Verdict | None:
    """One rule's verdict, with its id; a rule that fails is a deny naming it (fail closed)."""
    try:
        if rule.is_async:
            with anyio.fail_after(rule.timeout):
                result: Any = await rule.fn(req)  # type: ignore[misc]
        else:
            began = time.perf_counter()
            result = rule.fn(req)
            if inspect.isawaitable(result):
                with anyio.fail_after(rule.timeout):
                    result = await result
            elif time.perf_counter() - began > rule.timeout:
                took = (time.perf_counter() - began) * 1000
                return failed(
                    rule.id, f"it took {took:.0f} ms, over its {rule.timeout * 1000:g} ms"
                )
    except TimeoutError:
        return failed(rule.id, f"it did not answer within {rule.timeout * 1000:g} ms")
    except Exception as exc:
        return failed(rule.id, f"{type(exc).__name__}: {exc}")
    return _checked(rule, req, result)


def _checked(rule: Rule, req: Request, result: Any) -> Verdict | None:
    if result is None:
        return None
    if not isinstance(result, Verdict):
        return failed(
            rule.id,
            f"it returned {result!r:.80}; return None, allow(), deny(), approve() or rewrite()",
        )
    explicit = rule.names is not None and req.name in rule.names
    return msgspec.structs.replace(result, rule=rule.id, explicit=explicit)


def failed(rule: str, what: str) -> Verdict:
    """The deny a failing rule comes to: the policy fails closed."""
    return Verdict("deny", f"policy rule {rule!r} failed ({what}); denied (fail closed)", rule=rule)
