"""The effect gate: the one place every call a node makes to the world passes through.

An :class:`Effect` (a kind, a name, arguments, an idempotency key, and where it is
made) meets the runtime's hooks, in the order they were registered:

* before the call, each hook may ``allow`` it (return None), ``Deny`` it with a
  reason, ask for human approval (``Approve``, a durable interrupt), ``Answer``
  it without calling (from a cache or a record), or ``Rewrite`` its arguments;
  the first hook that denies, asks or answers decides; a hook that allows may say
  on what grounds (``Allow(basis)``: recorded on the effect's ``effect_started``
  event, with no journal write of its own);
* after the call, each hook may replace the :class:`Outcome` (validate it, screen
  it, account its usage);
* ``redact`` hooks choose the arguments the journal records, and ``redact_text`` hooks
  the free text recorded about an effect (a decision's reason and basis, a denial's
  message: ``Gate.recorded_text``).

Hooks are small protocols (a hook implements one or more of ``before``,
``after``, ``redact``), sync or async, registered with ``Runtime(gates=[...])``;
the later capabilities (models, tools, policy, memory) plug in here. Every
decision other than ``allow`` is a journal event (``effect_decided``), so replay,
telemetry and audit see it; a run resumed after a decision meets its record,
not the hook again.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Protocol, TypeAlias, runtime_checkable

import msgspec

from ..events import decode, encode

# Effect kinds the runtime knows; capabilities add theirs ("tool", "model", ...).
EFFECT_KINDS: Final = ("effect", "tool", "model", "memory", "publish")


class Effect(msgspec.Struct, frozen=True):
    """One call a node makes to the world, as the gate's hooks see it (a msgspec Struct:
    frozen, and cheap to make on every gated call)."""

    kind: str  # "effect" (ctx.step), "tool", "model", "memory", "publish"
    name: str
    args: Mapping[str, Any]  # by name; positional arguments under "args"
    key: str  # the idempotency key, the same on every re-run and retry
    run_id: str
    node: str
    step: int
    task: int
    index: int  # the effect's place in its task
    attempt: int
    metadata: Mapping[str, Any] = msgspec.field(default_factory=dict)  # the run's
    long_running: bool = False
    thread: str | None = None  # the run's thread (budgets and memory scope by it)
    graph: str = ""  # the name of the run's graph (an agent's is "agent:<name>")

    def with_args(self, args: Mapping[str, Any]) -> Effect:
        """The same effect with other arguments (a rewrite, a person's edit)."""
        return msgspec.structs.replace(self, args=dict(args))


class Allow(msgspec.Struct, frozen=True):
    """Let the call go as it is (as None does), saying on what grounds: ``basis`` (e.g. the
    policy version and rule) is recorded on the effect's ``effect_started`` event, under the
    hook's name; the hooks after this one still decide."""

    basis: Mapping[str, Any] | None = None


class Deny(msgspec.Struct, frozen=True):
    """Refuse the call: the node gets ``EffectDeniedError(reason)``; nothing is called.
    ``basis`` (what made the decision: a policy version, a rule) is journaled with it."""

    reason: str
    basis: Mapping[str, Any] | None = None


class Approve(msgspec.Struct, frozen=True):
    """Ask a person first: the run parks on an interrupt carrying ``payload`` (and the
    effect); ``resume(run, True)`` lets the call go, ``False`` denies it, and
    ``{"args": {...}}`` lets it go with edited arguments."""

    reason: str = ""
    payload: Any = None
    basis: Mapping[str, Any] | None = None


APPROVAL_ANSWERS: Final = (
    "resume(run, True) to let the call go, resume(run, False) or "
    '{"approve": False, "reason": "..."} to refuse it, or {"args": {...}} to let it go with '
    "edited arguments"
)


def approval_answer_error(value: Any) -> str | None:
    """What is wrong with ``value`` as a person's answer to an :class:`Approve` (None when
    it is one): an answer that is none of the documented shapes would otherwise be read
    as a refusal, and an edit that is not a dict of arguments dropped."""
    if value is None or isinstance(value, bool):
        return None
    if not isinstance(value, dict):
        return f"an approval's answer cannot be {value!r:.60}; send {APPROVAL_ANSWERS}"
    if "approve" in value and not isinstance(value["approve"], bool):
        return f'"approve" must be True or False, not {value["approve"]!r:.60}; send {APPROVAL_ANSWERS}'
    if "args" in value and not isinstance(value["args"], dict):
        return (
            f'"args" must be a dict of the call\'s arguments by name, not '
            f"{type(value['args']).__name__}; send {APPROVAL_ANSWERS}"
        )
    return None


class Answer(msgspec.Struct, frozen=True):
    """Answer without calling (a cache, a record): ``result`` is the effect's result."""

    result: Any
    source: str = ""


class Rewrite(msgspec.Struct, frozen=True):
    """Go on with other arguments (e.g. one redacted, one defaulted)."""

    args: Mapping[str, Any]
    reason: str = ""
    basis: Mapping[str, Any] | None = None


Decision: TypeAlias = Deny | Approve | Answer | Rewrite | Allow


class Decided(msgspec.Struct, frozen=True):
    """A before-hook's decision: which hook (by position and name), what, and the effect it
    saw (the rewrites of the hooks before it applied)."""

    position: int
    hook: str
    decision: Decision
    effect: Effect
    allowed: dict[str, Any] | None = None  # the bases of the hooks that said Allow, by hook


class Outcome(msgspec.Struct):
    """What a call came to: its result or its error, and the usage it reports."""

    result: Any = None
    error: BaseException | None = None
    usage: Mapping[str, Any] | None = None
    note: str = ""  # set by a hook that changed the outcome: journaled with its decision


@runtime_checkable
class BeforeEffect(Protocol):
    def before(self, effect: Effect) -> Decision | Awaitable[Decision | None] | None: ...


@runtime_checkable
class AfterEffect(Protocol):
    def after(
        self, effect: Effect, outcome: Outcome
    ) -> Outcome | Awaitable[Outcome | None] | None: ...


@runtime_checkable
class RedactEffect(Protocol):
    def redact(self, effect: Effect, args: Mapping[str, Any]) -> Mapping[str, Any]: ...


@runtime_checkable
class RedactText(Protocol):
    """A redact hook's view of free text the gate records about an effect: a decision's
    reason and basis, a denial's message (which a hook may have built from the arguments).
    Optional: ``Gate.recorded_text`` applies the hooks that offer it."""

    def redact_text(self, effect: Effect, text: str) -> str: ...


GateHook: TypeAlias = BeforeEffect | AfterEffect | RedactEffect | RedactText

# Argument names whose values never enter the journal (the default redaction).
SECRET_NAMES: Final = frozenset(
    {"password", "passwd", "secret", "token", "api_key", "apikey", "authorization"}
)
REDACTED: Final = "[redacted]"
ARGS_CAP: Final = 8192  # bytes of arguments a journal records, about


class Gate:
    """The hooks of one runtime, sorted by what they do; built once, run per effect."""

    __slots__ = (
        "_afters", "_befores", "_redactors", "_texts", "args_cap", "empty", "has_afters", "hooks",
    )  # fmt: skip

    def __init__(self, hooks: Sequence[object] = (), *, args_cap: int = ARGS_CAP) -> None:
        self.hooks = tuple(hooks)
        self.args_cap = args_cap
        self._befores: list[tuple[str, Callable[..., Any], bool]] = []
        self._afters: list[tuple[str, Callable[..., Any], bool]] = []
        self._redactors: list[Callable[..., Any]] = []
        self._texts: list[Callable[[Effect, str], str]] = []
        for hook in self.hooks:
            found = False
            if callable(before := getattr(hook, "before", None)):
                self._befores.append((_name(hook), before, inspect.iscoroutinefunction(before)))
                found = True
            if callable(after := getattr(hook, "after", None)):
                self._afters.append((_name(hook), after, inspect.iscoroutinefunction(after)))
                found = True
            if callable(redact := getattr(hook, "redact", None)):
                self._redactors.append(redact)
                found = True
            if callable(text := getattr(hook, "redact_text", None)):
                self._texts.append(text)
                found = True
            if not found:
                raise TypeError(
                    f"gate hook {hook!r} has none of before(effect), after(effect, outcome), "
                    "redact(effect, args) or redact_text(effect, text); give it one"
                )
        # Plain attributes, not properties: every effect reads them (a property is a Python
        # call on each read in 3.11).
        self.empty = not self.hooks
        self.has_afters = bool(self._afters)

    async def before(self, effect: Effect) -> tuple[str, Decision] | None:
        """The first decision other than allow, with the hook that made it; a Rewrite
        goes on to the next hooks with the new arguments (the last one is returned)."""
        decided = await self.decide(effect)
        if decided is None or isinstance(decided.decision, Allow):
            return None
        return decided.hook, decided.decision

    def decide(self, effect: Effect, start: int = 0) -> Awaitable[Decided | None]:
        """As :meth:`before`, from the ``start``-th before-hook on, saying where the decision
        was made (so that the hooks after an approval can still decide) and the effect as
        the deciding hook saw it (with the rewrites of the hooks before it)."""
        return self._decide(effect, start, None)  # its coroutine: no layer around it

    def decide_now(self, effect: Effect, start: int = 0) -> Awaitable[Decided | None] | None:
        """``decide`` with no coroutine while the hooks allow at once (sync hooks returning
        None, as most do for most effects): None when all did; else the rest of the work,
        from the first hook that said more (or must be awaited), to await. An effect asks
        before every call: a coroutine less each (~2k instructions a W11 tool call by
        callgrind, 2026-12-07)."""
        befores = self._befores
        for position in range(start, len(befores)):
            _, hook, is_async = befores[position]
            if is_async:
                return self._decide(effect, position, None)
            decision = hook(effect)
            if decision is not None:
                return self._decide(effect, position, decision)
        return None

    async def _decide(self, effect: Effect, start: int, first: object) -> Decided | None:
        """``decide``'s loop from the ``start``-th hook; ``first``: that hook's answer, when
        it was asked already (``decide_now``)."""
        rewrite: Decided | None = None
        allowed: dict[str, Any] | None = None
        for position in range(start, len(self._befores)):
            name, hook, is_async = self._befores[position]
            if first is not None:
                decision, first = first, None
            else:
                decision = await hook(effect) if is_async else hook(effect)
            if decision is None:
                continue
            if inspect.isawaitable(decision):  # a sync hook that returned a coroutine
                decision = await decision
                if decision is None:
                    continue
            if isinstance(decision, Allow):
                if decision.basis is not None:
                    allowed = {} if allowed is None else allowed
                    allowed[name] = decision.basis
                continue
            if isinstance(decision, Rewrite):
                effect = effect.with_args(decision.args)
                rewrite = Decided(position, name, decision, effect)
                continue
            if not isinstance(decision, Deny | Approve | Answer):
                raise TypeError(
                    f"gate hook {name} returned {decision!r}; return None (allow), Allow, "
                    "Deny, Approve, Answer or Rewrite"
                )
            return Decided(position, name, decision, effect, allowed)
        if rewrite is not None and allowed is not None:
            return msgspec.structs.replace(rewrite, allowed=allowed)
        if rewrite is None and allowed is not None:
            return Decided(len(self._befores), "", Allow(), effect, allowed)
        return rewrite

    async def aborted(self, effect: Effect, error: BaseException) -> None:
        """Tell the after-hooks a call ended without an outcome (cancelled mid-call), so
        what they reserved before it is released; what they return is not used."""
        for _, hook, is_async in self._afters:
            try:
                result = hook(effect, Outcome(error=error))
                if is_async or inspect.isawaitable(result):
                    await result
            except Exception:  # the call is gone either way: a hook's failure changes nothing
                continue

    async def after(self, effect: Effect, outcome: Outcome) -> tuple[Outcome, list[str]]:
        """The outcome once every after-hook has seen it, and the hooks that changed it."""
        if not self._afters:
            return outcome, []
        changed: list[str] = []
        for name, hook, is_async in self._afters:
            new = await hook(effect, outcome) if is_async else hook(effect, outcome)
            if inspect.isawaitable(new):
                new = await new
            if new is not None and new is not outcome:
                if not isinstance(new, Outcome):
                    raise TypeError(
                        f"gate hook {name} returned {new!r} from after(); return an Outcome or None"
                    )
                outcome = new
                changed.append(name)
        return outcome, changed

    def recorded_args(self, effect: Effect, *, plain: bool = False) -> Any:
        """The arguments as the journal records them: redacted, JSON, capped in size.
        ``plain``: ``effect.args`` are JSON data made for this call (``capped``)."""
        args = masked(effect.args)
        for redact in self._redactors:
            args = redact(effect, args)
        return capped(args, self.args_cap, plain=plain and args is effect.args)

    def recorded_text(self, effect: Effect, text: str) -> str:
        """Free text about ``effect`` as the journal records it and the node is told it (a
        decision's reason, a denial's message): through each hook's ``redact_text``. The
        arguments' redaction, for text a hook may have built from them (defence in depth:
        hooks should not quote arguments in the first place)."""
        for redact in self._texts:
            text = redact(effect, text)
        return text

    def recorded_basis(
        self, effect: Effect, basis: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        """A decision's ``basis`` as the journal records it: its texts through
        :meth:`recorded_text` (a copy; None stays None)."""
        if basis is None:
            return None
        if not self._texts:
            return dict(basis)
        out: dict[str, Any] = self._in_texts(effect, dict(basis))
        return out

    def _in_texts(self, effect: Effect, value: Any) -> Any:
        if isinstance(value, str):
            return self.recorded_text(effect, value)
        if isinstance(value, Mapping):
            return {k: self._in_texts(effect, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._in_texts(effect, v) for v in value]
        return value


def masked(args: Mapping[str, Any]) -> Mapping[str, Any]:
    """``args`` with the values of secret-looking names (``SECRET_NAMES``) replaced."""
    known = _SECRET_NAME
    for name in args:
        secret = known.get(name)
        if secret is None:  # argument names are few: each is lowered once (~0.15 us per call)
            secret = name.lower() in SECRET_NAMES
            if len(known) < 4096:
                known[name] = secret
        if secret:
            return {k: REDACTED if k.lower() in SECRET_NAMES else v for k, v in args.items()}
    return args


_SECRET_NAME: dict[str, bool] = {}  # argument name -> whether masked (masked's memo)


def capped(args: Mapping[str, Any], cap: int, *, plain: bool = False) -> Any:
    """``args`` as JSON, or a short account of them when they are bigger than ``cap``.

    One encode in C and, when it fits, one decode: ~0.3 us for a small dict, where a
    walk in Python checking that the arguments are plain JSON cost ~0.75 us. What is
    not JSON-compatible is recorded as its ``repr`` (the record must never fail a write).

    ``plain``: the caller made ``args`` as JSON data for this call alone (a model call's
    messages and tools, ``msgspec.to_builtins``), so when they fit they are recorded as
    they are: the encode measures them, and the decode would only copy them. A model
    call's arguments are the largest most runs record: ~16k instructions a call less by
    callgrind (W12, 2026-12-07), ~2.5 us on a quiet 2-core machine.
    """
    if not args:
        return {}
    try:
        encoded = encode(args if type(args) is dict else dict(args), what="effect arguments")
    except Exception:  # not JSON (or a model_dump that fails): recorded by repr
        value: Any = repr(dict(args))
        encoded = value.encode()
    else:
        if len(encoded) <= cap:
            return args if plain and type(args) is dict else decode(encoded)
        value = None
    if len(encoded) <= cap:
        return value
    preview = encoded[: min(1024, cap // 4)].decode(errors="replace")
    return {"truncated": True, "bytes": len(encoded), "preview": preview}


def _name(hook: object) -> str:
    name = getattr(hook, "name", None)
    return name if isinstance(name, str) else type(hook).__name__
