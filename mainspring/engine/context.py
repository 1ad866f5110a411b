"""The Context a node receives: journaled effects, interrupts and custom events."""

from __future__ import annotations

import contextvars
import importlib
import inspect
import threading
import typing
from collections.abc import Callable
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread

from ..errors import EffectError, NondeterminismError, SerializationError
from ..events import EventKind
from ._threads import call_in_thread
from .fold import EffectRecord, TaskRecord

if TYPE_CHECKING:
    from .driver import RunDriver

_current_key: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mainspring_idempotency_key", default=None
)


class Parked(BaseException):
    """Raised by ``ctx.interrupt`` to stop the node until a resume value arrives.

    A BaseException so that a node's ``except Exception`` does not swallow it.
    """


class Context:
    """What a node can do besides computing its update. One per task attempt."""

    __slots__ = ("_driver", "_effects", "_interrupts", "_task", "node")

    def __init__(self, driver: RunDriver, task: TaskRecord) -> None:
        self._driver = driver
        self._task = task
        self._effects = 0
        self._interrupts = 0
        self.node = task.node

    @property
    def run_id(self) -> str:
        return self._driver.run_id

    @property
    def root_run_id(self) -> str:
        """The top-level run: this run, or the run whose subgraph this one is."""
        parent = self._driver.fold.parent
        return str(parent["root"]) if parent and "root" in parent else self._driver.run_id

    @property
    def root_nonce(self) -> str | None:
        """The nonce the top-level run started with (trace ids mix it in); None in older runs."""
        parent = self._driver.fold.parent
        return parent.get("root_nonce") if parent else self._driver.fold.nonce

    @property
    def thread(self) -> str | None:
        return self._driver.fold.thread

    @property
    def step_index(self) -> int:
        return self._driver.fold.step

    @property
    def task_id(self) -> str:
        """Deterministic id of this task: ``run:step.task``."""
        return f"{self._driver.run_id}:{self._driver.fold.step}.{self._task.index}"

    @property
    def attempt(self) -> int:
        return self._task.attempt

    @property
    def idempotency_key(self) -> str | None:
        """The key of the effect running now (inside ``ctx.step``); the same on every re-run."""
        return _current_key.get()

    @property
    def metadata(self) -> dict[str, Any]:
        return self._driver.fold.metadata

    async def step(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` as a journaled effect named ``name``.

        Its result is recorded; when the node runs again (resume after a crash or
        an interrupt, a retry, a replay) the recorded result is returned and ``fn``
        is not called. A call that started but never finished, or failed and is
        retried with its node, runs again with the same idempotency key (unless the
        node's ``Retry(fresh_keys=True)`` asks for a key per attempt), passed as
        ``idempotency_key=`` if ``fn`` accepts it and readable as
        ``ctx.idempotency_key``. Sync functions run in a worker thread, so blocking
        I/O does not stall other runs; one that outlives its node's timeout is
        abandoned and its late result recorded as ``discarded``.
        """
        driver = self._driver
        task = self._task
        index = self._effects
        self._effects += 1
        if driver.oracle is not None:
            return driver.oracle.effect(driver, task, index, name, fn)
        record = task.effects.get(index)
        key = self._key_of(index, record, name)
        if record is not None:
            if record.name != name:
                raise NondeterminismError(
                    f"node {task.node!r} called effect {name!r} as its effect #{index}, but the journal "
                    f"recorded {record.name!r} there: the node's code changed since the run started; "
                    "restore it, or fork the run from before this step"
                )
            if record.done and record.ok:
                return _revive(fn, record.result) if driver.fold.revive else record.result
            if record.done and record.attempt == task.attempt:
                assert record.error is not None
                raise recorded_error(name, record.error)
        reused = driver.reused_effect(task, index, name)
        if reused is not None:
            return await self._reuse(index, name, fn, reused)
        # Whoever acts must still hold the run: a process frozen past its lease looks first.
        await driver.ensure_lease()
        where = {
            "step": driver.fold.step,
            "task": task.index,
            "node": task.node,
            "effect": index,
            "name": name,
        }
        driver.record(EventKind.EFFECT_STARTED, {**where, "key": key, "attempt": task.attempt})
        try:
            result = await self._call(fn, args, kwargs, key, where)
        except Exception as exc:
            driver.record(EventKind.EFFECT_FINISHED, {**where, "error": _error_of(exc)})
            await driver.commit()
            raise
        try:
            what = f"the result of effect {name!r} in node {task.node!r}"
            driver.check_json(result, what, partial(_revive, fn))
        except SerializationError as exc:
            # It ran, but its result cannot be recorded faithfully: recorded as failed, so
            # that no resume calls it again.
            driver.record(EventKind.EFFECT_FINISHED, {**where, "error": _error_of(exc)})
            await driver.commit()
            raise
        driver.record(EventKind.EFFECT_FINISHED, {**where, "result": result})
        await driver.commit()
        return result

    def _key_of(self, index: int, record: EffectRecord | None, name: str) -> str:
        """The effect's idempotency key: deterministic, the same on every re-run and retry.

        A call that started but never finished keeps the key it started with (the far
        side may have done the work); a node retried with ``Retry(fresh_keys=True)``
        gives each attempt keys of its own.
        """
        driver, task = self._driver, self._task
        if record is not None and not record.done and record.name == name:
            return record.key
        key = f"{driver.run_id}:{driver.fold.step}.{task.index}.{index}"
        retry = driver.app.nodes[task.node].retry
        if task.attempt > 1 and retry is not None and retry.fresh_keys:
            key = f"{key}#a{task.attempt}"
        return key

    async def _call(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: str,
        where: dict[str, Any],
    ) -> Any:
        token = _current_key.set(key)
        try:
            if _accepts_key(fn):
                kwargs["idempotency_key"] = key
            if inspect.iscoroutinefunction(fn):
                return await fn(*args, **kwargs)
            driver = self._driver
            late = partial(driver.record_late, {**where, "key": key, "attempt": self._task.attempt})
            # The key is set again in the thread: context variables do not cross by themselves.
            call = partial(_with_key, key, fn, args, kwargs)
            result = await call_in_thread(call, late, driver._stopping)
            if inspect.isawaitable(result):
                result = await result
            return result
        finally:
            _current_key.reset(token)

    async def _reuse(
        self, index: int, name: str, fn: Callable[..., Any], reused: dict[str, Any]
    ) -> Any:
        """A fork's effect answered from the run it was forked from (``effects="reuse"``)."""
        driver, task = self._driver, self._task
        where = {
            "step": driver.fold.step,
            "task": task.index,
            "node": task.node,
            "effect": index,
            "name": name,
        }
        driver.record(
            EventKind.EFFECT_STARTED, {**where, "key": reused["key"], "attempt": task.attempt}
        )
        driver.record(
            EventKind.EFFECT_FINISHED,
            {**where, "result": reused["result"], "reused": reused["origin"]},
        )
        await driver.commit()
        return _revive(fn, reused["result"]) if driver.fold.revive else reused["result"]

    async def interrupt(self, payload: Any = None) -> Any:
        """Pause the run durably until ``runtime.resume(run_id, value)``; returns ``value``.

        The process may exit meanwhile. When the run resumes, the node runs again
        from its start: effects it made return their recorded results and earlier
        interrupts return their values, so nothing is repeated.
        """
        driver = self._driver
        task = self._task
        index = self._interrupts
        self._interrupts += 1
        record = task.interrupts.get(index)
        if record is not None:
            if record.resumed:
                return record.value
            raise Parked()
        if driver.oracle is not None:
            found, value = driver.oracle.resume_value(driver.fold.step, task.index, index)
            if found:
                return value
        driver.check_json(payload, f"the interrupt payload of node {task.node!r}")
        step = driver.fold.step
        driver.record(
            EventKind.INTERRUPTED,
            {
                "step": step,
                "task": task.index,
                "node": task.node,
                "interrupt": index,
                "id": f"{step}.{task.index}.{index}",
                "payload": payload,
            },
        )
        raise Parked()

    def emit(self, data: Any) -> None:
        """Record a custom event in the journal; live streams see it at once.

        Callable from a blocking node's worker thread too: the event is recorded on the
        event loop.
        """
        if threading.get_ident() != self._driver.loop_thread:
            anyio.from_thread.run_sync(self.emit, data)
            return
        driver = self._driver
        driver.check_json(data, f"the event emitted by node {self._task.node!r}")
        driver.record(
            EventKind.EMITTED,
            {
                "step": driver.fold.step,
                "task": self._task.index,
                "node": self._task.node,
                "data": data,
            },
        )


def _with_key(key: str, fn: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    _current_key.set(key)  # in the worker thread's own context
    return fn(*args, **kwargs)


def _error_of(exc: BaseException) -> dict[str, Any]:
    return {"type": type(exc).__name__, "module": type(exc).__module__, "message": str(exc)}


@lru_cache(maxsize=1024)
def _accepts_key(fn: Callable[..., Any]) -> bool:
    try:
        return "idempotency_key" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


@lru_cache(maxsize=1024)
def _return_reviver(fn: Callable[..., Any]) -> Callable[[Any], Any] | None:
    from ..state import _reviver_for

    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return None
    ret = hints.get("return")
    if ret is None or ret is type(None):
        return None
    if typing.get_origin(ret) in (typing.Awaitable, typing.Coroutine):
        ret = typing.get_args(ret)[-1]
    return _reviver_for(ret)


def recorded_error(name: str, error: dict[str, Any]) -> BaseException:
    """The exception an effect raised, rebuilt from the journal for a resume or replay.

    The original type when it can be imported and built from its message, so a
    node's ``except ValueError:`` behaves as it did the first time; otherwise an
    EffectError naming it.
    """
    module, type_name, message = error.get("module"), error["type"], error.get("message", "")
    if module:
        try:
            cls = getattr(importlib.import_module(module), type_name)
            if isinstance(cls, type) and issubclass(cls, Exception):
                return cls(message)
        except Exception:  # not importable, or not buildable from one message
            pass
    return EffectError(name, type_name, message)


def _revive(fn: Callable[..., Any], value: Any) -> Any:
    """Turn a result read back from JSON into the type ``fn`` is annotated to return."""
    if value is None:
        return None
    try:
        reviver = _return_reviver(fn)
    except TypeError:  # unhashable callables
        return value
    return reviver(value) if reviver is not None else value
