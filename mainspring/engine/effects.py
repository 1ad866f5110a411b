"""The effect pipeline: how one call of a node to the world is made, once.

``ctx.step`` is its public face, and every later capability (tools, models, memory,
publishing) calls :func:`perform` with an :class:`EffectCall` of its own kind.

In order, for the effect at index ``i`` of a task:

1. the journal first: a finished effect returns its recorded result (or raises its
   recorded error), a changed node meets a NondeterminismError, a fork answers from
   its source's journal (``effects="reuse"``);
2. the gate's ``before`` hooks: deny, ask a person, answer, or rewrite the arguments
   (each such decision journaled as ``effect_decided``);
3. the lease: a process that may have lost the run looks in the store first;
4. ``effect_started``, with the kind, the key and the redacted arguments (committed
   now for a long-running effect, so other processes see it in flight);
5. the call, with its idempotency key; a sync function in a worker thread;
6. the gate's ``after`` hooks (validate, screen, account), the result's round trip
   checked, and ``effect_finished`` committed before the node sees the result.
"""

from __future__ import annotations

import contextvars
import inspect
import typing
from collections.abc import Awaitable, Callable
from functools import lru_cache, partial
from typing import Any

import anyio
import msgspec

from ..errors import EffectDeniedError, NondeterminismError, SerializationError
from ..events import (
    EffectDecided,
    EffectFinished,
    EffectStarted,
    error_info,
)
from ._threads import call_in_thread
from .fold import EffectRecord, TaskRecord
from .gate import Allow, Approve, Decided, Deny, Effect, Outcome, Rewrite, capped, masked
from .recorded import _revive, recorded_error
from .seams import ActiveRun

current_key: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mainspring_idempotency_key", default=None
)

Interrupt = Callable[[Any], Awaitable[Any]]


class EffectCall(msgspec.Struct, frozen=True):
    """A call to make as an effect: ``fn(*args, **kwargs)``, of a kind, under a name.

    A Struct, not a frozen dataclass: one is made per effect, and a frozen dataclass's
    ``__init__`` costs ~0.75 us here against ~0.1 us.
    """

    kind: str
    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}  # msgspec copies a mutable default per instance
    long_running: bool = False  # journal effect_started before the call, not with its end
    # The arguments are JSON data made for this call alone (no caller keeps them): the
    # journal records them as they are, not a copy through JSON (gate.capped).
    plain: bool = False


async def perform(
    driver: ActiveRun, task: TaskRecord, index: int, call: EffectCall, interrupt: Interrupt
) -> Any:
    """Make ``call`` as the ``index``-th effect of ``task`` (see the module's docstring)."""
    name, fn = call.name, call.fn
    if driver.oracle is not None:
        return driver.oracle.effect(driver, task, index, name, fn)
    record = task.effects.get(index)
    if record is not None:
        if record.name != name:
            raise NondeterminismError(
                f"node {task.node!r} called effect {name!r} as its effect #{index}, but the journal "
                f"recorded {record.name!r} there: the node's code changed since the run started; "
                "restore it, or fork the run from before this step"
            )
        if record.done and (record.ok or record.attempt == task.attempt):
            if task.interrupts:
                # Replay the approvals it waited for, so the node's later interrupts (and
                # approvals) meet their own recorded answers, not these.
                for _ in _approvals_asked(task, record.key):
                    await interrupt(None)
            if record.ok:
                return _revive(fn, record.result) if driver.fold.revive else record.result
            assert record.error is not None
            raise recorded_error(name, record.error)
    key = _key_of(driver, task, index, record, name)  # not needed for a finished effect
    if driver.reuse is not None:  # a fork answering from its origin (effects="reuse")
        reused = driver.reuse.get((driver.fold.step, task.index, index))
        if reused is not None and reused["name"] == name:
            return await _reuse(driver, task, index, name, fn, reused)
    gate = driver.gate
    if not gate.empty:
        effect = Effect(
            call.kind, name, _named(call.args, call.kwargs), key, driver.run_id, task.node,
            driver.fold.step, task.index, index, task.attempt, driver.fold.metadata,
            call.long_running, driver.fold.thread, driver.app.name,
        )  # fmt: skip
        plain = effect.args if call.plain else None
        if task.interrupts:  # a person may have been asked about this call before
            return await _gated(driver, task, effect, fn, interrupt, plain)
        return await _through_hooks(driver, task, effect, fn, interrupt, 0, plain)
    # No hooks: no Effect to build, only the arguments to record.
    if not driver.lease_fresh():  # a process frozen past its lease looks in the store first
        await driver.ensure_lease()
    step, tindex, node = driver.fold.step, task.index, task.node
    args, kwargs = call.args, call.kwargs
    recorded = (
        capped(masked(_named(args, kwargs)), gate.args_cap, plain=call.plain)
        if args or kwargs
        else {}
    )
    started = EffectStarted(step, tindex, node, index, name, key, task.attempt, call.kind, recorded)
    driver.record(started)
    if call.long_running:
        await driver.commit()
    outcome = await _outcome(driver, task, index, name, fn, args, kwargs, key)
    return await _finish(driver, task, step, index, name, fn, outcome)


async def _gated(
    driver: ActiveRun,
    task: TaskRecord,
    effect: Effect,
    fn: Callable[..., Any],
    interrupt: Interrupt,
    plain: Any,
) -> Any:
    """The pipeline's steps 2 to 6 with the gate's hooks for a task that waited for a
    person before (see the module's docstring): their recorded answers stand."""
    start, answered = 0, frozenset[int]()
    for asked in _approvals_asked(task, effect.key):
        hook, reason = str(asked.get("hook", "")), str(asked.get("reason", ""))
        decision = Approve(reason, asked.get("data"))
        answer = await _approval(driver, task, effect, hook, decision, interrupt)
        if isinstance(answer, Deny):
            return await _refused(driver, task, effect, hook, answer, fn)
        position = int(asked.get("position", len(driver.gate.hooks)))
        effect, start, answered = _after_answer(effect, answer, position, answered)
    return await _through_hooks(driver, task, effect, fn, interrupt, start, plain, answered)


def _after_answer(
    effect: Effect, edit: dict[str, Any] | None, position: int, answered: frozenset[int]
) -> tuple[Effect, int, frozenset[int]]:
    """Where the hooks go on after a person approved the call the hook at ``position``
    asked about: with the hooks after it when they approved it as it was; from the first
    hook again when they edited its arguments, so that every hook (a policy's deny rules
    included, the asking hook's own) judges the arguments that will be used, not those it
    saw. An approval the answered hooks ask again for the edited call is the person's."""
    if edit is None:
        return effect, position + 1, answered
    return effect.with_args(edit), 0, answered | {position}


async def _through_hooks(
    driver: ActiveRun,
    task: TaskRecord,
    effect: Effect,
    fn: Callable[..., Any],
    interrupt: Interrupt,
    start: int,
    plain: Any = None,
    answered: frozenset[int] = frozenset(),
    grounds: dict[str, Any] | None = None,
) -> Any:
    """The before-hooks from the ``start``-th on decide; after a person's approval the
    hooks after the one that asked still decide (a budget after a policy, say). An
    approval asked by an ``answered`` hook is granted: a person edited the call it asked
    about to these arguments. ``grounds``: the allows of the hooks before ``start``.
    ``plain``: the call's own arguments when they are JSON made for it (``EffectCall``)."""
    pending = driver.gate.decide_now(effect, start)
    decided = None if pending is None else await pending
    if grounds:
        decided = _with_grounds(decided, effect, grounds)
    if decided is None:
        return await _approved(driver, task, effect, fn, plain)
    if isinstance(decided.decision, Approve) and decided.position in answered:
        return await _through_hooks(
            driver, task, decided.effect, fn, interrupt, decided.position + 1, plain,
            answered, decided.allowed,
        )  # fmt: skip
    hook, decision, effect = decided.hook, decided.decision, decided.effect
    if decided.allowed and isinstance(decision, Approve | Deny):
        # the hooks before the deciding one allowed it on grounds of their own (a policy's
        # version and rule before the tools' approval): the decision's record keeps them
        kept = {**(decision.basis or {}), "allowed": decided.allowed}
        decision = msgspec.structs.replace(decision, basis=kept)
    if isinstance(decision, Allow):  # allowed, with grounds kept on effect_started
        return await _approved(driver, task, effect, fn, plain, decided.allowed)
    if isinstance(decision, Rewrite):
        _record_decision(driver, task, effect, "rewrite", hook, decision.reason, decision.basis)
        return await _approved(driver, task, effect, fn, plain, decided.allowed)
    if isinstance(decision, Approve):
        answer = await _approval(driver, task, effect, hook, decision, interrupt, decided.position)
        if isinstance(answer, Deny):
            return await _refused(driver, task, effect, hook, answer, fn)
        effect, start, answered = _after_answer(effect, answer, decided.position, answered)
        return await _through_hooks(driver, task, effect, fn, interrupt, start, plain, answered)
    if isinstance(decision, Deny):
        _record_decision(driver, task, effect, "deny", hook, decision.reason, decision.basis)
        return await _refused(driver, task, effect, hook, decision, fn)
    _record_decision(driver, task, effect, "answer", hook, decision.source)
    _record_started(driver, task, effect, None, decided.allowed)
    outcome = Outcome(decision.result)
    return await _finish(driver, task, effect.step, effect.index, effect.name, fn, outcome)


def _with_grounds(decided: Decided | None, effect: Effect, grounds: dict[str, Any]) -> Decided:
    """``decided`` with the allows of hooks asked before it (an approval granted on the
    way) in front of its own: an allow by every hook is an Allow with all their grounds."""
    if decided is None:
        return Decided(-1, "", Allow(), effect, dict(grounds))
    merged = {**grounds, **(decided.allowed or {})}
    return msgspec.structs.replace(decided, allowed=merged)


async def _outcome(
    driver: ActiveRun,
    task: TaskRecord,
    index: int,
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    key: str,
) -> Outcome:
    """Call ``fn`` with the effect's key; what came of it (a result or an error)."""
    token = current_key.set(key)
    try:
        if _accepts_key(fn):
            kwargs = {**kwargs, "idempotency_key": key}
        if _is_async(fn):
            result = await fn(*args, **kwargs)
        else:
            result = await _in_thread(driver, task, index, name, fn, args, kwargs, key)
    except Exception as exc:  # what a failed call spent is accounted too (e.g. model retries)
        spent = getattr(exc, "usage", None)
        if spent is not None and not isinstance(spent, dict):
            spent = msgspec.to_builtins(spent) if hasattr(spent, "__struct_fields__") else None
        return Outcome(error=exc, usage=spent)
    finally:
        current_key.reset(token)
    usage = result.get("usage") if isinstance(result, dict) else None
    return Outcome(result, usage=usage if isinstance(usage, dict) else None)


async def _finish(
    driver: ActiveRun,
    task: TaskRecord,
    step: int,
    index: int,
    name: str,
    fn: Callable[..., Any],
    outcome: Outcome,
) -> Any:
    """Journal what the call came to, commit, and hand it to the node."""
    tindex, node = task.index, task.node
    usage = dict(outcome.usage) if outcome.usage else None
    error = outcome.error
    if error is None and driver.checks_values:
        try:
            what = f"the result of effect {name!r} in node {node!r}"
            driver.check_json(outcome.result, what, partial(_revive, fn))
        except SerializationError as exc:
            error = exc  # it ran, but its result cannot be kept: recorded as failed, not redone
    if error is not None:
        failed = EffectFinished(
            step, tindex, node, index, name, error=error_info(error), usage=usage
        )
        driver.record(failed)
        await driver.commit()
        raise error
    done = EffectFinished(step, tindex, node, index, name, result=outcome.result, usage=usage)
    driver.record(done)
    if not driver.commit_now():  # in memory: committed with no coroutine to make and await
        await driver.commit()
    return outcome.result


async def _refused(
    driver: ActiveRun,
    task: TaskRecord,
    effect: Effect,
    hook: str,
    denial: Deny,
    fn: Callable[..., Any],
) -> Any:
    """A call a hook or a person refused (journaled as such already): nothing is called."""
    _record_started(driver, task, effect)
    reason = driver.gate.recorded_text(effect, denial.reason)  # as the journal has it
    outcome = Outcome(error=EffectDeniedError(effect.name, reason, hook))
    return await _finish(driver, task, effect.step, effect.index, effect.name, fn, outcome)


async def _approval(
    driver: ActiveRun,
    task: TaskRecord,
    effect: Effect,
    hook: str,
    decision: Approve,
    interrupt: Interrupt,
    position: int | None = None,
) -> Deny | dict[str, Any] | None:
    """Park the run until a person answers: None to go on as asked, the arguments they
    edited, or the Deny their answer means. A re-run meets their recorded answer.

    ``position`` is the asking hook's place among the before-hooks (None when replaying a
    recorded approval): kept in the interrupt, so a re-run asks only the hooks after it.
    """
    if position is not None:
        # The first time: say why in the journal (not again when the node runs again).
        _record_decision(driver, task, effect, "approve", hook, decision.reason, decision.basis)
    ask = {
        "kind": effect.kind,
        "name": effect.name,
        "args": driver.gate.recorded_args(effect),
        "key": effect.key,
        "hook": hook,
        "reason": driver.gate.recorded_text(effect, decision.reason),  # journaled: redacted
    }
    if position is not None:
        ask["position"] = position
    payload = {"approve": ask, "data": decision.payload}
    value = await interrupt(payload)
    if value is True or (isinstance(value, dict) and value.get("approve") is True):
        _record_decision(driver, task, effect, "approved", hook, "")
        return None
    if isinstance(value, dict) and isinstance(value.get("args"), dict):
        _record_decision(driver, task, effect, "edited", hook, "")
        return dict(value["args"])
    reason = value.get("reason", "") if isinstance(value, dict) else ""
    _record_decision(driver, task, effect, "rejected", hook, str(reason))
    return Deny(str(reason) or "a person did not approve it")


def _was_asked(task: TaskRecord, key: str) -> bool:
    """Whether the effect of ``key`` waited for a person's approval (an interrupt of its own)."""
    return any(_asks_about(i.payload, key) for i in task.interrupts.values())


def _approvals_asked(task: TaskRecord, key: str) -> list[dict[str, Any]]:
    """The approvals recorded for the effect of ``key``, in the order they were asked
    (their ``approve`` part, with the asking hook's position), with their ``data``."""
    asked = []
    for index in sorted(task.interrupts):
        payload = task.interrupts[index].payload
        if _asks_about(payload, key):
            asked.append({**payload["approve"], "data": payload.get("data")})
    return asked


def _asks_about(payload: Any, key: str) -> bool:
    """Whether an interrupt's payload is the approval asked for the effect of ``key``."""
    if not isinstance(payload, dict) or not isinstance(ask := payload.get("approve"), dict):
        return False
    return bool(ask.get("key") == key)


async def _approved(
    driver: ActiveRun,
    task: TaskRecord,
    effect: Effect,
    fn: Callable[..., Any],
    plain: Any = None,
    basis: dict[str, Any] | None = None,
) -> Any:
    args, kwargs = _positional(effect.args)
    try:
        if not driver.lease_fresh():
            await driver.ensure_lease()
        _record_started(driver, task, effect, plain, basis)
        if effect.long_running:
            await driver.commit()
        outcome = await _outcome(
            driver, task, effect.index, effect.name, fn, args, kwargs, effect.key
        )
    except BaseException as exc:  # cancelled mid-call, the lease lost: no outcome to account
        with anyio.CancelScope(shield=True):
            await driver.gate.aborted(effect, exc)  # what the hooks reserved is released
        raise
    if driver.gate.has_afters:  # (a coroutine less per effect when there are none)
        outcome, changed = await driver.gate.after(effect, outcome)
        for hook in changed:
            _record_decision(driver, task, effect, "after", hook, outcome.note)
    return await _finish(driver, task, effect.step, effect.index, effect.name, fn, outcome)


def _record_started(
    driver: ActiveRun,
    task: TaskRecord,
    effect: Effect,
    plain: Any = None,
    basis: dict[str, Any] | None = None,
) -> None:
    """``plain``: the call's own arguments when JSON made for it; recorded as they are
    unless a hook or a person replaced them since. ``basis``: the grounds of the hooks
    that allowed the call."""
    recorded = driver.gate.recorded_args(effect, plain=plain is not None and effect.args is plain)
    driver.record(
        EffectStarted(
            effect.step, task.index, task.node, effect.index, effect.name, effect.key,
            task.attempt, effect.kind, recorded, basis,
        )
    )  # fmt: skip


def _record_decision(
    driver: ActiveRun,
    task: TaskRecord,
    effect: Effect,
    decision: str,
    hook: str,
    reason: str,
    basis: typing.Mapping[str, Any] | None = None,
) -> None:
    gate = driver.gate  # a reason may quote the arguments: redacted as they are
    driver.record(
        EffectDecided(
            effect.step, task.index, task.node, effect.index, effect.name, decision, hook,
            gate.recorded_text(effect, reason) if reason else reason,
            gate.recorded_basis(effect, basis),
        )
    )  # fmt: skip


def _key_of(
    driver: ActiveRun, task: TaskRecord, index: int, record: EffectRecord | None, name: str
) -> str:
    """The effect's idempotency key: deterministic, the same on every re-run and retry.

    A call that started but never finished keeps the key it started with (the far
    side may have done the work); a node retried with ``Retry(fresh_keys=True)``
    gives each attempt keys of its own.
    """
    if record is not None and not record.done and record.name == name:
        return record.key
    key = f"{driver.run_id}:{driver.fold.step}.{task.index}.{index}"
    retry = driver.app.nodes[task.node].retry
    if task.attempt > 1 and retry is not None and retry.fresh_keys:
        key = f"{key}#a{task.attempt}"
    return key


async def _in_thread(
    driver: ActiveRun,
    task: TaskRecord,
    index: int,
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    key: str,
) -> Any:
    """A sync effect function, in a worker thread (``_outcome`` sets the key around it)."""
    where = {"step": driver.fold.step, "task": task.index, "node": task.node}
    late = partial(
        driver.record_late,
        {**where, "attempt": task.attempt, "effect": index, "name": name, "key": key},
    )
    # The key is set again in the thread: context variables do not cross by themselves.
    result = await call_in_thread(partial(_with_key, key, fn, args, kwargs), late, driver.stopping)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _reuse(
    driver: ActiveRun,
    task: TaskRecord,
    index: int,
    name: str,
    fn: Callable[..., Any],
    reused: dict[str, Any],
) -> Any:
    """A fork's effect answered from the run it was forked from (``effects="reuse"``)."""
    step, tindex, node = driver.fold.step, task.index, task.node
    driver.record(EffectStarted(step, tindex, node, index, name, reused["key"], task.attempt))
    driver.record(
        EffectFinished(
            step, tindex, node, index, name, result=reused["result"], reused=reused["origin"]
        )
    )
    await driver.commit()
    return _revive(fn, reused["result"]) if driver.fold.revive else reused["result"]


def _named(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by name, as hooks see them: positional ones under "args"."""
    return {"args": list(args), **kwargs} if args else dict(kwargs)


def _positional(named: typing.Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if "args" not in named and type(named) is dict:  # by name only (most): no copy to make
        return (), named
    kwargs = dict(named)
    args = kwargs.pop("args", ())
    return tuple(args), kwargs


def _with_key(key: str, fn: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    current_key.set(key)  # in the worker thread's own context
    return fn(*args, **kwargs)


def _is_async(fn: Callable[..., Any]) -> bool:
    try:
        return _is_coroutine_function(fn)
    except TypeError:  # unhashable callables
        return inspect.iscoroutinefunction(fn)


_is_coroutine_function = lru_cache(maxsize=1024)(inspect.iscoroutinefunction)


@lru_cache(maxsize=1024)
def _accepts_key(fn: Callable[..., Any]) -> bool:
    try:
        return "idempotency_key" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
