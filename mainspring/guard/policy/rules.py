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
denied, the reason naming the rule and what went wrong (an exception by its type only:
its message may quote the arguments; it goes to the log). Each rule runs once per effect.
"""

from __future__ import annotations

import inspect
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import msgspec

from ..secrets.scrub import SecretFilter
from .request import Request
from .verdict import PolicyError, Verdict

RuleFn = Callable[[Request], Verdict | Awaitable[Verdict | None] | None]
DEFAULT_TIMEOUT = 0.1  # seconds a rule may take; past it the effect is denied
log = logging.getLogger("mainspring.guard.policy")
log.addFilter(SecretFilter())  # on the logger: every handler gets scrubbed records


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

    def evaluate_now(self, req: Request) -> list[Verdict] | Awaitable[list[Verdict]]:
        """As :meth:`evaluate` without a coroutine while every rule answers at once; else the
        rest of the work to await (each rule still runs once: a sync rule that returned an
        awaitable has that awaitable awaited, and the rules after it run then)."""
        rules = self.for_effect(req.kind, req.name)
        if (req.kind, req.name) in self._awaits:
            return self.evaluate(req)  # known before any rule runs
        out: list[Verdict] = []
        for rule in rules:
            req._reads_history = rule.history
            verdict = run_sync(rule, req)
            if verdict is None:  # most rules, most effects: one check
                continue
            if isinstance(verdict, Pending):  # a sync function returned an awaitable: from
                self._awaits.add((req.kind, req.name))  # now on this effect's are awaited
                return self._rest(req, rules, rules.index(rule), out, verdict)
            out.append(verdict)
        return out

    async def evaluate(self, req: Request) -> list[Verdict]:
        """The verdicts of the rules that apply to ``req`` (a failing rule's is a deny)."""
        return await self._rest(req, self.for_effect(req.kind, req.name), 0, [], None)

    async def _rest(
        self,
        req: Request,
        rules: tuple[Rule, ...],
        start: int,
        out: list[Verdict],
        pending: Pending | None,
    ) -> list[Verdict]:
        """The verdicts from the ``start``-th rule on (``pending``: that rule's awaitable,
        when it was called already), added to ``out``."""
        for position in range(start, len(rules)):
            rule = rules[position]
            req._reads_history = rule.history
            if pending is not None:
                verdict, pending = await finish(rule, req, pending), None
            elif rule.is_async:
                verdict = await run_rule(rule, req)
            else:  # a sync rule is called without a coroutine of its own (~1 us saved)
                got = run_sync(rule, req)
                verdict = await finish(rule, req, got) if isinstance(got, Pending) else got
            if verdict is not None:
                out.append(verdict)
        return out


class Pending(msgspec.Struct):
    """What a sync rule returned that must be awaited (called once: the same awaitable is
    awaited, within what is left of the rule's timeout)."""

    awaitable: Awaitable[Any]
    began: float


def run_sync(rule: Rule, req: Request) -> Verdict | Pending | None:
    """A sync rule's verdict (as :func:`run_rule`), or a :class:`Pending` to await with
    :func:`finish` when it returned an awaitable."""
    clock = time.perf_counter
    began = clock()
    try:
        result = rule.fn(req)
    except Exception as exc:
        return _raised(rule, req, exc)
    took = clock() - began
    if result is not None and type(result) is not Verdict and inspect.isawaitable(result):
        return Pending(result, began)
    if took > rule.timeout:
        return failed(rule.id, f"it took {took * 1000:.0f} ms, over its {rule.timeout * 1000:g} ms")
    return None if result is None else _checked(rule, req, result)


async def finish(rule: Rule, req: Request, pending: Pending) -> Verdict | None:
    """The verdict of a sync rule that returned an awaitable (see :func:`run_sync`)."""
    left = rule.timeout - (time.perf_counter() - pending.began)
    try:
        with anyio.fail_after(max(left, 0.0)):
            result = await pending.awaitable
    except TimeoutError:
        return failed(rule.id, f"it did not answer within {rule.timeout * 1000:g} ms")
    except Exception as exc:
        return _raised(rule, req, exc)
    return _checked(rule, req, result)


async def run_rule(rule: Rule, req: Request) -> Verdict | None:
    """One rule's verdict, with its id; a rule that fails is a deny naming it (fail closed)."""
    if not rule.is_async:
        verdict = run_sync(rule, req)
        return await finish(rule, req, verdict) if isinstance(verdict, Pending) else verdict
    try:
        with anyio.fail_after(rule.timeout):
            result: Any = await rule.fn(req)  # type: ignore[misc]
    except TimeoutError:
        return failed(rule.id, f"it did not answer within {rule.timeout * 1000:g} ms")
    except Exception as exc:
        return _raised(rule, req, exc)
    return _checked(rule, req, result)


def _raised(rule: Rule, req: Request, exc: Exception) -> Verdict:
    """The deny of a rule that raised. Its reason names the rule and the exception's type
    only: the message may quote the effect's arguments (``int(req.args["note"])`` on a
    secret or an address), and the reason goes to the journal and the model. A
    :class:`PolicyError` (this package's own, e.g. an undeclared ``req.history``) says why."""
    failure(rule.id, req.name, exc)
    if isinstance(exc, PolicyError):  # the policy layer's own (a rule misusing it): no values
        return failed(rule.id, str(exc))
    return failed(rule.id, f"it raised {type(exc).__name__}")


def failure(rule: str, effect: str, exc: BaseException) -> None:
    """Log a rule's (or the policy's) failure: its exception's type and where it was raised
    (the frames and their source lines), never its message: a message may quote the
    arguments, and a secret in them is not known yet to the log's scrubbing
    (:class:`~mainspring.guard.secrets.SecretFilter`, also on this logger) when a denied
    call's tool never ran."""
    where = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
    log.warning("policy rule %r failed on effect %s with %s; denied (fail closed)\n%s",
                rule, effect, type(exc).__name__, where)  # fmt: skip


def _checked(rule: Rule, req: Request, result: Any) -> Verdict | None:
    if result is None:
        return None
    if not isinstance(result, Verdict):  # its type only: the value may be an argument's
        return failed(
            rule.id,
            f"it returned a {type(result).__name__}; return None, allow(), deny(), approve() "
            "or rewrite()",
        )
    explicit = rule.names is not None and req.name in rule.names
    return msgspec.structs.replace(result, rule=rule.id, explicit=explicit)


def failed(rule: str, what: str) -> Verdict:
    """The deny a failing rule comes to: the policy fails closed."""
    return Verdict("deny", f"policy rule {rule!r} failed ({what}); denied (fail closed)", rule=rule)
