"""A call's timeout, armed only if the call suspends.

``await within(scope, seconds, awaitable)`` inside ``with scope:`` (a cancel scope made
without a deadline) awaits ``awaitable`` as a plain ``await`` would, and gives ``scope``
its deadline (``seconds`` after the call started) the first time the call suspends.

Why: most tool calls and scripted or cached model calls finish without ever suspending,
and arming an anyio deadline costs an event-loop timer (a ``TimerHandle`` made, pushed
on the loop's heap and cancelled again: ~10 Python-level calls) that such a call never
needs. A call that completes without suspending gives the event loop no chance to
deliver a cancellation anyway, so it ends exactly as it would have under the deadline.

The scope is entered *before* the call starts, so cancel scopes the call opens itself
nest inside it in the usual order (entering the scope only once the call suspended
would put it inside any scope the call left open: anyio refuses to exit scopes out of
order). A deadline already past when the call first suspends cancels it at once, as
the timer would have on the loop's next turn.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Generator
from types import CoroutineType
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


def within(scope: anyio.CancelScope, seconds: float, awaitable: Awaitable[T]) -> Awaitable[T]:
    """``awaitable``, with ``scope``'s deadline set ``seconds`` after now once it suspends."""
    return _ArmOnSuspend(scope, seconds, awaitable)


class _ArmOnSuspend:
    __slots__ = ("_awaitable", "_scope", "_seconds", "_started")

    def __init__(self, scope: anyio.CancelScope, seconds: float, awaitable: Awaitable[Any]) -> None:
        self._scope = scope
        self._seconds = seconds
        self._awaitable = awaitable
        self._started = time.monotonic()

    def __await__(self) -> Generator[Any, Any, Any]:
        awaitable = self._awaitable
        self._awaitable = None  # type: ignore[assignment]  # awaited once
        # A coroutine steps itself; any other awaitable through its iterator.
        inner: Any = awaitable if type(awaitable) is CoroutineType else awaitable.__await__()
        try:
            yielded = inner.send(None)
        except StopIteration as done:  # finished without suspending: no timer needed
            return done.value
        # Suspends: the deadline from the call's start, on the scope's own clock.
        spent = time.monotonic() - self._started
        self._scope.deadline = anyio.current_time() + self._seconds - spent
        while True:  # ``yield from inner``, from its first suspension on
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
