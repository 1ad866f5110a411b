"""A cancel that arrives while a sync step waits for a worker thread (its call not begun).

Found by the API fuzz (tests/test_server_fuzz.py): ``POST /v1/threads/{t}/runs`` with
``multitask: interrupt`` hung for good when the run it cancelled was between scheduling a
sync effect and a worker thread starting it. A cancel waits for a *running* call to end (its
result is journaled), but anyio never runs a call whose wait was cancelled before a worker
took it, so the wait was for a call that would never happen. Here the call is held before
its thread deterministically: the thread limiter has one token, held by another run.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any, TypedDict

import anyio
import anyio.to_thread
import pytest

from mainspring import END, START, Context, Graph, Runtime
from mainspring.status import RunStatus

pytestmark = pytest.mark.anyio


class S(TypedDict, total=False):
    out: str


def _one_step(name: str, fn: Any) -> Any:
    async def node(s: S, ctx: Context) -> dict[str, Any]:
        return {"out": await ctx.step(name, fn)}

    g = Graph(S, name=name)
    g.node("work", node)
    g.edge(START, "work")
    g.edge("work", END)
    return g.compile()


@pytest.fixture
async def one_worker_thread(anyio_backend: str) -> AsyncIterator[anyio.CapacityLimiter]:
    # The default limiter is the event loop's: the fixture runs on the test's loop.
    limiter = anyio.to_thread.current_default_thread_limiter()
    before = limiter.total_tokens
    limiter.total_tokens = 1
    try:
        yield limiter
    finally:
        limiter.total_tokens = before


async def test_a_cancel_before_the_worker_thread_takes_the_call_does_not_wait_for_it(
    one_worker_thread: anyio.CapacityLimiter,
) -> None:
    entered, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def hold() -> str:
        entered.set()
        release.wait()
        return "held"

    def never() -> str:
        ran.append("never")
        return "ran"

    holder, waiter = _one_step("hold", hold), _one_step("never", never)
    async with Runtime.open("memory://") as rt:
        first = await rt.start(holder, {})
        try:
            # Waited for off the default limiter: its one token is the held step's.
            await anyio.to_thread.run_sync(entered.wait, limiter=anyio.CapacityLimiter(1))
            second = await rt.start(waiter, {})
            await anyio.wait_all_tasks_blocked()
            assert one_worker_thread.statistics().tasks_waiting == 1  # the second step's call
            with anyio.fail_after(10):  # a guard against the hang, not a timing
                await rt.cancel(second.run_id, actor="test")
            assert await second.status() is RunStatus.CANCELLED
        finally:
            release.set()
        assert await first.result() == {"out": "held"}
        assert ran == []  # the cancelled call never ran, and never will
        assert await rt.run(waiter, {}) == {"out": "ran"}  # the thread slot was given back
