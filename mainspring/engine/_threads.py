"""Blocking user code in worker threads, under the run's timeouts and cancellation.

A thread cannot be stopped. When a node's timeout expires while its code (a
blocking node, or a sync effect) runs in a thread, the thread is abandoned:
the task fails at the timeout, as if the call had been interrupted, and
whatever the thread returns or raises later is handed to ``on_late`` on the
event loop, to be recorded and discarded. anyio frees the thread's limiter slot
when the task stops waiting, so abandoned threads never starve other calls.

A cancel of the run, or the runtime closing, waits for the thread instead
(``wait_on_cancel``): the call finishes, its result is journaled, and the run
stops at its next await, so a finished effect is never done twice. A call that no
thread has begun yet (waiting for a limiter slot, or queued to a worker) is not
waited for: anyio never runs a call whose wait was cancelled, and it is marked so
that it does nothing if a worker takes it all the same; it simply did not happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread

# (result, error, seconds the call ran): called on the event loop.
LateResult = Callable[[Any, BaseException | None, float], None]


class _Call:
    __slots__ = ("abandoned", "begun", "done", "dropped", "error", "finished", "lock", "result")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.begun = False  # a worker thread has begun the call
        self.dropped = False  # cancelled before it began: a worker must not begin it
        self.done = False
        self.abandoned = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = anyio.Event()  # set on the loop once the thread is done


async def call_in_thread(
    fn: Callable[[], Any], on_late: LateResult, wait_on_cancel: Callable[[], bool]
) -> Any:
    """``fn()`` in a worker thread; a cancellation abandons the thread at once unless
    ``wait_on_cancel()`` says to wait for it."""
    loop = asyncio.get_running_loop()
    call = _Call()
    started = time.monotonic()

    def work() -> Any:
        with call.lock:
            if call.dropped:
                return None
            call.begun = True
        try:
            result, error = fn(), None
        except BaseException as exc:  # handed over as is: to the caller, or to on_late
            result, error = None, exc
        with call.lock:
            call.done, call.result, call.error = True, result, error
            abandoned = call.abandoned
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            loop.call_soon_threadsafe(call.finished.set)
            if abandoned:
                loop.call_soon_threadsafe(on_late, result, error, time.monotonic() - started)
        if error is not None:
            raise error
        return result

    try:
        return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        with call.lock:
            call.dropped = not call.begun
        if call.dropped:  # no thread began it (and none will): nothing ran, nothing to wait for
            raise
        if wait_on_cancel():
            # The call goes on to its end and counts; the cancellation is delivered at the
            # caller's next await (anyio's cancel scopes stay cancelled).
            with anyio.CancelScope(shield=True):
                await call.finished.wait()
            if call.error is not None:
                raise call.error from None
            return call.result
        with call.lock:
            finished = call.done
            call.abandoned = not finished
        if finished:  # it finished as we were cancelled: its result is late all the same
            on_late(call.result, call.error, time.monotonic() - started)
        raise
