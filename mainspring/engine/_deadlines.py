"""A call's timeout, armed only if the call suspends.

``await within(seconds, awaitable)`` awaits ``awaitable`` as a plain ``await`` would,
and raises :class:`DeadlinePassed` (a ``TimeoutError``) when it is still suspended
``seconds`` after it started: the task is cancelled then, as ``asyncio.timeout`` does,
and the cancellation becomes the timeout once the call has unwound.

Why not a cancel scope around the call: most tool calls and scripted or cached model
calls finish without ever suspending, and an anyio scope costs its entry and exit
(~2 us) plus an event-loop timer (a ``TimerHandle`` made, pushed on the loop's heap
and cancelled again) that such a call never needs. A call that completes without
suspending gives the event loop no chance to deliver a cancellation anyway, so it ends
exactly as it would have under the deadline. Measured with callgrind, 2026-12-07:
arming the anyio deadline lazily saved ~37k instructions a timed call (W12: 1,377k ->
1,266k an agent run of three), and no scope at all ~21k more a tool call (W11 with
limits: 181.7k -> 160.4k a call; ~3.5 us on a quiet 2-core machine).

Why a native cancel, not an anyio scope entered at the first suspension: the call may
have opened scopes of its own by then, and anyio refuses to exit scopes out of order.
A native cancel crosses the call's own scopes (anyio lets a cancellation it did not
make pass) and is taken back here (``Task.uncancel``), so it never reaches the scopes
around the call; a cancellation of those that lands meanwhile is passed on, not taken
for the timeout. The deadline counts from the call's start: one already past when the
call first suspends cancels it on the loop's next turn, as a timer armed at the start
would have.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Generator
from types import CoroutineType
from typing import Any, TypeVar

T = TypeVar("T")


class DeadlinePassed(TimeoutError):
    """The call was still running when its time was up (it was cancelled)."""


def within(seconds: float, awaitable: Awaitable[T]) -> Awaitable[T]:
    """``awaitable``, cancelled and raising :class:`DeadlinePassed` if it is still
    suspended ``seconds`` after now."""
    return _ArmOnSuspend(seconds, awaitable)


class _ArmOnSuspend:
    __slots__ = ("_awaitable", "_expired", "_seconds", "_started", "_task")

    def __init__(self, seconds: float, awaitable: Awaitable[Any]) -> None:
        self._seconds = seconds
        self._awaitable = awaitable
        self._started = time.monotonic()
        self._expired = False
        self._task: asyncio.Task[Any] | None = None

    def __await__(self) -> Generator[Any, Any, Any]:
        awaitable = self._awaitable
        self._awaitable = None  # type: ignore[assignment]  # awaited once
        # A coroutine steps itself; any other awaitable through its iterator.
        inner: Any = awaitable if type(awaitable) is CoroutineType else awaitable.__await__()
        try:
            yielded = inner.send(None)
        except StopIteration as done:  # finished without suspending: no timer needed
            return done.value
        task = self._task = asyncio.current_task()
        assert task is not None, "within() awaits in a task"
        cancelling = task.cancelling()
        left = self._seconds - (time.monotonic() - self._started)
        timer = asyncio.get_running_loop().call_later(max(left, 0.0), self._expire)
        try:
            return (yield from _drive(inner, yielded))
        except asyncio.CancelledError as exc:
            if self._expired:
                self._expired = False
                # Ours alone (no other cancel of the task since the call began): the timeout.
                if task.uncancel() <= cancelling:
                    raise DeadlinePassed(f"no answer within {self._seconds:g} s") from exc
            raise
        finally:
            timer.cancel()
            if self._expired:  # the call swallowed our cancel: take it back all the same
                self._expired = False
                task.uncancel()

    def _expire(self) -> None:
        assert self._task is not None
        self._expired = True
        self._task.cancel()


def _drive(inner: Any, yielded: Any) -> Generator[Any, Any, Any]:
    """``yield from inner``, from its first suspension (``yielded``) on."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            inner.close()
            raise
        except BaseException as exc:  # a cancellation (or another error) thrown in
            try:
                yielded = inner.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                yielded = inner.send(sent)
            except StopIteration as done:
                return done.value
