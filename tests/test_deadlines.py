"""A call's timeout armed only when the call suspends (``engine/_deadlines.within``): it
behaves as the deadline set before the call, whatever the call does."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Generator
from typing import Any

import anyio
import pytest

from mainspring.engine._deadlines import within
from mainspring.engine._tasks import cancel_scope
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


async def timed(seconds: float, call: Awaitable[Any]) -> tuple[Any, bool, float]:
    """The call under ``within``: its result (or None), whether the scope timed out, and
    the deadline the scope was given."""
    result = None
    with cancel_scope() as scope:
        result = await within(scope, seconds, call)
    return result, scope.cancelled_caught, scope.deadline


async def test_a_call_that_does_not_suspend_returns_with_no_deadline_armed() -> None:
    result, timed_out, deadline = await timed(0.01, at_once())
    assert (result, timed_out) == ("done", False)
    assert deadline == float("inf")  # no timer was made


async def test_a_call_that_suspends_gets_its_deadline_and_finishes_in_time() -> None:
    started = anyio.current_time()
    result, timed_out, deadline = await timed(5, sleeps(0.01))
    assert (result, timed_out) == ("slept", False)
    assert started + 4.9 < deadline <= anyio.current_time() + 5


async def test_a_call_that_suspends_past_its_deadline_is_cancelled() -> None:
    started = time.monotonic()
    result, timed_out, _ = await timed(0.05, sleeps(10))
    assert (result, timed_out) == (None, True)
    assert time.monotonic() - started < 2


async def test_the_deadline_counts_from_the_start_not_the_first_suspension() -> None:
    # 0.2 s of blocking work before the first await uses up a 0.1 s timeout: cancelled at
    # that await, as a timer armed at the start would have done on the loop's next turn.
    result, timed_out, _ = await timed(0.1, blocks_then_sleeps(0.2, 1))
    assert (result, timed_out) == (None, True)


async def test_scopes_the_call_opens_itself_nest_inside_and_close_in_order() -> None:
    result, timed_out, _ = await timed(5, in_its_own_scope(0.01))
    assert (result, timed_out) == ("scoped", False)
    result, timed_out, _ = await timed(0.05, in_its_own_scope(10))
    assert (result, timed_out) == (None, True)


async def test_any_awaitable_and_errors_pass_through() -> None:
    result, _, _ = await timed(5, Yielding())
    assert result == "awaited"

    async def fails() -> None:
        await anyio.sleep(0)
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        await timed(5, fails())


async def test_an_outer_cancel_reaches_a_suspended_call() -> None:
    with anyio.move_on_after(0.05) as outer:
        await timed(10, sleeps(10))
    assert outer.cancelled_caught


async def test_tools_time_out_when_they_suspend_and_return_when_they_do_not() -> None:
    box = Toolbox([Tool(at_once, timeout=0.05), Tool(sleeps, timeout=0.05)])
    assert await box.call("at_once", {}) == "done"
    assert await box.call("sleeps", {"seconds": 0.001}) == "slept"
    with pytest.raises(ToolTimeoutError, match=r"timeout of 0\.05 s"):
        await box.call("sleeps", {"seconds": 10})
