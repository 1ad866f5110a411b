"""A call's timeout armed only when the call suspends (``engine/_deadlines.within``): it
behaves as a deadline set before the call, whatever the call does, and never mistakes
another cancellation for itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Generator
from typing import Any

import anyio
import pytest

from mainspring.engine._deadlines import DeadlinePassed, within
from mainspring.tools import Tool, Toolbox
from mainspring.tools.errors import ToolTimeoutError

pytestmark = pytest.mark.anyio


async def at_once() -> str:
    return "done"


async def sleeps(seconds: float) -> str:
    await anyio.sleep(seconds)
    return "slept"


async def in_its_own_scope(seconds: float) -> str:
    """Like a provider that opens a cancel scope of its own and suspends inside it."""
    with anyio.CancelScope():
        await anyio.sleep(seconds)
    with anyio.move_on_after(5):
        await anyio.sleep(0)
    return "scoped"


async def blocks_then_sleeps(block: float, sleep: float) -> str:
    time.sleep(block)  # the loop is held: no timer could fire before the first suspension
    await anyio.sleep(sleep)
    return "late"


class Yielding:
    """An awaitable that is not a coroutine: suspends once, then answers."""

    def __await__(self) -> Generator[Any, Any, str]:
        yield from anyio.sleep(0).__await__()
        return "awaited"


async def timed(seconds: float, call: Awaitable[Any]) -> tuple[Any, bool]:
    """The call under ``within``: its result (or None), and whether it timed out."""
    try:
        return await within(seconds, call), False
    except DeadlinePassed:
        return None, True


async def test_a_call_that_does_not_suspend_returns_with_no_timer_armed() -> None:
    loop = asyncio.get_running_loop()
    timers = len(loop._scheduled)  # type: ignore[attr-defined]
    assert await timed(0.01, at_once()) == ("done", False)
    assert len(loop._scheduled) == timers  # type: ignore[attr-defined]


async def test_a_call_that_suspends_finishes_in_time() -> None:
    assert await timed(5, sleeps(0.01)) == ("slept", False)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_call_that_suspends_past_its_deadline_is_cancelled() -> None:
    started = time.monotonic()
    assert await timed(0.05, sleeps(10)) == (None, True)
    assert time.monotonic() - started < 2
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_the_deadline_counts_from_the_start_not_the_first_suspension() -> None:
    # 0.2 s of blocking work before the first await uses up a 0.1 s timeout: cancelled at
    # that await, as a timer armed at the start would have done on the loop's next turn.
    assert await timed(0.1, blocks_then_sleeps(0.2, 1)) == (None, True)


async def test_scopes_the_call_opens_itself_nest_inside_and_close_in_order() -> None:
    assert await timed(5, in_its_own_scope(0.01)) == ("scoped", False)
    assert await timed(0.05, in_its_own_scope(10)) == (None, True)
    with anyio.move_on_after(0.05) as outer:  # an anyio scope around it still cancels it
        await timed(10, in_its_own_scope(10))
    assert outer.cancelled_caught


async def test_any_awaitable_and_errors_pass_through() -> None:
    assert await timed(5, Yielding()) == ("awaited", False)

    async def fails() -> None:
        await anyio.sleep(0)
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        await timed(5, fails())


async def test_an_outer_cancel_reaches_a_suspended_call() -> None:
    with anyio.move_on_after(0.05) as outer:
        await timed(10, sleeps(10))
    assert outer.cancelled_caught


async def test_a_cancel_that_lands_with_the_timeout_is_not_taken_for_it() -> None:
    # Someone else cancels the task at the call's deadline, just before the timer: in the
    # loop turn where the timer fires, that cancel has landed too, and must win.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().call_later(0.05, task.cancel)
    with pytest.raises(asyncio.CancelledError):
        await timed(0.05, sleeps(10))
    assert task.uncancel() == 0  # theirs, still pending: ours was taken back


async def test_a_call_that_swallows_the_cancel_leaves_the_task_uncancelled() -> None:
    async def stubborn() -> str:
        try:
            await anyio.sleep(10)
        except BaseException:  # swallows the cancellation on purpose
            return "swallowed"
        return "slept"

    assert await timed(0.05, stubborn()) == ("swallowed", False)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await anyio.sleep(0.01)  # and the task is not cancelled later


async def test_tools_time_out_when_they_suspend_and_return_when_they_do_not() -> None:
    box = Toolbox([Tool(at_once, timeout=0.05), Tool(sleeps, timeout=0.05)])
    assert await box.call("at_once", {}) == "done"
    assert await box.call("sleeps", {"seconds": 0.001}) == "slept"
    with pytest.raises(ToolTimeoutError, match=r"timeout of 0\.05 s"):
        await box.call("sleeps", {"seconds": 10})
