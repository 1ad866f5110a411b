"""Cancelling runs: prompt, never in the middle of an append, and nothing left behind.

The loop of a run driven in a task of its own commits without an anyio shield,
so a cancel or a shutdown that arrives while an append is in flight must wait
for it (the run's cancel scope is cancelled once the append has landed). These
tests hold appends in the store (a step boundary, an effect, a subgraph's step)
and cancel, or close the runtime, meanwhile: the journal must stay one unforked
history, and the tasks involved must not be left cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypedDict

import anyio
import pytest

from mainspring import (
    END,
    START,
    Context,
    EventKind,
    Graph,
    Retry,
    RunCancelledError,
    RunStatus,
    Runtime,
)
from mainspring.errors import StoreError, TransientStoreError
from mainspring.store import Store, store_from_url


class S(TypedDict, total=False):
    n: int


def _chain(name: str, *nodes: tuple[str, Any]) -> Any:
    """A graph running ``nodes`` (name, function or subgraph) one after the other."""
    g = Graph(S, name=name)
    previous = START
    for node, fn in nodes:
        g.node(node, fn)
        g.edge(previous, node)
        previous = node
    g.edge(previous, END)
    return g.compile()


def _waiting_node() -> tuple[anyio.Event, Callable[[S], Awaitable[dict[str, Any]]]]:
    """A node that says it has started, then waits (where a cancel surfaces)."""
    started = anyio.Event()

    async def waits(s: S) -> dict[str, Any]:
        started.set()
        await anyio.sleep(30)
        return {"n": 1}

    return started, waits


def _three_steps() -> Any:
    return _chain("three", *((n, lambda s: {"n": s.get("n", 0) + 1}) for n in "abc"))


def _hold(store: Store, holds: Callable[[str, Any], bool]) -> tuple[anyio.Event, anyio.Event]:
    """Make the store hold the first append for which ``holds(run_id, event)`` is true."""
    reached, release = anyio.Event(), anyio.Event()
    original = store.append

    async def held_append(run_id: str, expected: int, events: Any, **kw: Any) -> None:
        if not reached.is_set() and any(holds(run_id, e) for e in events):
            reached.set()
            await release.wait()
        await original(run_id, expected, events, **kw)

    store.append = held_append  # type: ignore[method-assign,assignment]
    return reached, release


def _hold_second_boundary(store: Store) -> tuple[anyio.Event, anyio.Event]:
    """Make the store hold the append that finishes step 0 and plans step 1."""
    return _hold(store, lambda _, e: e.kind is EventKind.STEP_STARTED and e.data["step"] == 1)


async def _release_soon(release: anyio.Event) -> None:
    await anyio.sleep(0.05)
    release.set()


def _check_journal(events: list[Any]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


@pytest.mark.anyio
async def test_cancel_during_a_step_commit_waits_for_it(tmp_path: Path) -> None:
    store = store_from_url(f"sqlite:///{tmp_path / 'c.db'}")
    reached, release = _hold_second_boundary(store)
    async with Runtime(store) as rt:
        handle = await rt.start(_three_steps(), {})
        await reached.wait()
        async with anyio.create_task_group() as tg:
            tg.start_soon(rt.cancel, handle.run_id)
            await anyio.sleep(0.05)  # the cancel is waiting for the held append
            assert (await rt.get_run(handle.run_id)).status is RunStatus.RUNNING
            release.set()
        events = await rt.events(handle.run_id)
        _check_journal(events)
        kinds = [e.kind for e in events]
        # The held append landed (step 1 planned), then the cancel: nothing ran after it.
        assert kinds[-2:] == [EventKind.STEP_STARTED, EventKind.CANCELLED]
        assert events[-2].data["step"] == 1
        assert (await rt.get_run(handle.run_id)).status is RunStatus.CANCELLED


@pytest.mark.anyio
async def test_shutdown_during_a_step_commit_leaves_the_run_resumable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = store_from_url(url)
    reached, release = _hold_second_boundary(store)
    app = _three_steps()

    async def release_soon() -> None:
        await anyio.sleep(0.05)
        release.set()

    async with anyio.create_task_group() as tg:
        async with Runtime(store, drain_timeout=0) as rt:
            handle = await rt.start(app, {})
            await reached.wait()
            tg.start_soon(release_soon)
        # Closing abandoned the run, but only once the held append had ended.
        assert release.is_set()
    async with Runtime.open(url, graphs=[app]) as again:  # recovery resumes it
        assert await again.handle(handle.run_id).result() == {"n": 3}
        events = await again.events(handle.run_id)
        _check_journal(events)
        assert [e.kind for e in events].count(EventKind.FINISHED) == 1


@pytest.mark.anyio
async def test_cancel_during_an_effect_commit_lands_the_effect_then_cancels(
    tmp_path: Path,
) -> None:
    calls: list[str] = []

    async def pays(s: S, ctx: Context) -> dict[str, Any]:
        await ctx.step("pay", lambda: calls.append("pay"))
        calls.append("after the effect")  # runs: the cancel surfaces at the next await
        await anyio.sleep(30)
        return {"n": 1}

    app = _chain("pays", ("pay", pays))
    store = store_from_url(f"sqlite:///{tmp_path / 'e.db'}")
    reached, release = _hold(store, lambda _, e: e.kind is EventKind.EFFECT_FINISHED)
    async with Runtime(store) as rt:
        handle = await rt.start(app, {})
        await reached.wait()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_release_soon, release)
            await rt.cancel(handle.run_id)  # returns once the run has ended
        events = await rt.events(handle.run_id)
        _check_journal(events)
        kinds = [e.kind for e in events]
        assert EventKind.EFFECT_FINISHED in kinds and kinds[-1] is EventKind.CANCELLED
        assert calls == ["pay", "after the effect"]


@pytest.mark.anyio
async def test_cancel_while_a_subgraph_commits_in_the_parent_task(tmp_path: Path) -> None:
    async def waits(s: S) -> dict[str, Any]:
        await anyio.sleep(30)  # where the parent's cancel surfaces in the child
        return {"n": 2}

    inner = _chain("inner", ("one", lambda s: {"n": 1}), ("two", waits))
    outer = _chain("outer", ("sub", inner))
    store = store_from_url(f"sqlite:///{tmp_path / 'n.db'}")
    # The child's step boundary, committed in the parent run's own task.
    reached, release = _hold(
        store, lambda run_id, e: "/" in run_id and e.kind is EventKind.STEP_STARTED
    )
    async with Runtime(store) as rt:
        handle = await rt.start(outer, {})
        await reached.wait()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_release_soon, release)
            await rt.cancel(handle.run_id)
        runs = await rt.list_runs()
        assert {r.status for r in runs} == {RunStatus.CANCELLED}, runs
        for run in runs:
            _check_journal(await rt.events(run.run_id))


@pytest.mark.anyio
async def test_cancelling_a_run_driven_by_run_leaves_the_callers_task_clean() -> None:
    started, waits = _waiting_node()

    app = _chain("waits", ("wait", waits))
    async with Runtime.open("memory://") as rt:

        async def caller() -> None:
            with pytest.raises(RunCancelledError):
                await rt.run(app, {}, run_id="driven-here")
            task = asyncio.current_task()
            assert task is not None and task.cancelling() == 0
            await anyio.sleep(0)  # no cancellation left pending for this task

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await started.wait()
            await rt.cancel("driven-here")


@pytest.mark.anyio
async def test_a_node_that_swallows_the_cancel_still_ends_cancelled() -> None:
    started = anyio.Event()

    async def stubborn(s: S) -> dict[str, Any]:
        started.set()
        with contextlib.suppress(BaseException):  # what a careless node does
            await anyio.sleep(30)
        return {"n": 1}

    app = _chain("stubborn", ("a", stubborn), ("b", lambda s: {"n": 2}))
    async with Runtime.open("memory://") as rt:
        handle = await rt.start(app, {})
        await started.wait()
        await rt.cancel(handle.run_id)
        kinds = [e.kind for e in await rt.events(handle.run_id)]
        assert kinds[-1] is EventKind.CANCELLED
        assert "b" not in [e.data.get("node") for e in await rt.events(handle.run_id)]


@pytest.mark.anyio
async def test_a_cancel_held_for_an_append_that_fails_goes_nowhere_else(tmp_path: Path) -> None:
    store = store_from_url(f"sqlite:///{tmp_path / 'f.db'}")
    reached, release = anyio.Event(), anyio.Event()
    original = store.append
    failing = True

    async def flaky_append(run_id: str, expected: int, events: Any, **kw: Any) -> None:
        nonlocal failing
        if failing and any(e.kind is EventKind.STEP_STARTED for e in events):
            failing = False
            reached.set()
            await release.wait()
            raise StoreError("the disk went away")
        await original(run_id, expected, events, **kw)

    store.append = flaky_append  # type: ignore[method-assign,assignment]
    app = _three_steps()
    async with Runtime(store) as rt:

        async def caller() -> None:
            with pytest.raises(StoreError, match="the disk went away"):
                await rt.run(app, {}, run_id="first")
            # The same task runs on: the cancel held for the failed append is gone.
            assert await rt.run(app, {}, run_id="second") == {"n": 3}

        async def cancel_first() -> None:
            # The store failed before the cancel could be recorded: the canceller is told.
            with pytest.raises(StoreError, match="the disk went away"):
                await rt.cancel("first")

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await reached.wait()
            tg.start_soon(cancel_first)
            await anyio.sleep(0.05)  # the cancel is held behind the append
            release.set()


# --- scenarios a review of the cancellation change reproduced ------------------------


@pytest.mark.anyio
async def test_run_called_from_cleanup_code_is_cancelled_cleanly() -> None:
    started, waits = _waiting_node()

    app = _chain("cleanup", ("wait", waits))
    async with Runtime.open("memory://") as rt:

        async def caller() -> None:
            with anyio.move_on_after(0.01):
                try:
                    await anyio.sleep(10)
                finally:  # the task is being cancelled here: cancelling() == 1
                    with anyio.CancelScope(shield=True), pytest.raises(RunCancelledError):
                        await rt.run(app, {}, run_id="in-cleanup")

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await started.wait()
            await rt.cancel("in-cleanup")
        assert (await rt.get_run("in-cleanup")).status is RunStatus.CANCELLED


@pytest.mark.anyio
async def test_a_callers_scope_never_interrupts_a_commit_of_run(tmp_path: Path) -> None:
    async def asks(s: S, ctx: Context) -> dict[str, Any]:
        return {"n": await ctx.interrupt("ok?")}

    store = store_from_url(f"sqlite:///{tmp_path / 'r.db'}")
    reached, release = _hold(store, lambda _, e: e.kind is EventKind.INTERRUPTED)
    async with Runtime(store) as rt:
        caller_scope = anyio.CancelScope()

        async def caller() -> None:
            with caller_scope:
                await rt.run(_chain("asks", ("ask", asks)), {}, run_id="r")

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await reached.wait()
            tg.start_soon(rt.resume, "r", 7)  # queued behind the held append
            await anyio.sleep(0.01)
            caller_scope.cancel()  # the caller gives up while the append is in flight
            await anyio.sleep(0.01)
            release.set()
        events = await rt.events("r")
        _check_journal(events)
        assert events[-1].kind is EventKind.FINISHED
        # A resume's queued commit must not move an ended run back to running.
        assert (await rt.get_run("r")).status is RunStatus.FINISHED


@pytest.mark.anyio
@pytest.mark.parametrize("durability", ["sync", "batch"])
async def test_a_run_created_by_its_first_commit_keeps_what_parallel_tasks_record(
    tmp_path: Path, durability: str
) -> None:
    async def pays(s: S, ctx: Context) -> dict[str, Any]:
        await ctx.step("pay", lambda: 1)  # the first commit: it creates the run
        return {}

    async def talks(s: S, ctx: Context) -> dict[str, Any]:
        await anyio.sleep(0.001)  # records while the create is in flight
        ctx.emit("hello")
        return {"n": 2}

    g = Graph(S, name="parallel_first_step")
    g.node("pays", pays)
    g.node("talks", talks)
    g.edge(START, "pays")
    g.edge(START, "talks")
    g.edge("pays", END)
    g.edge("talks", END)
    store = store_from_url(f"sqlite:///{tmp_path / 'p.db'}")
    slow_create = store.create_run

    async def create_slowly(*args: Any, **kw: Any) -> Any:
        created = await slow_create(*args, **kw)
        await anyio.sleep(0.05)  # the reply is slow: the other task records meanwhile
        return created

    store.create_run = create_slowly  # type: ignore[method-assign]
    async with Runtime(store, durability=durability) as rt:
        with anyio.fail_after(5):
            assert await rt.run(g.compile(), {}) == {"n": 2}
        run = (await rt.list_runs())[0]
        events = await rt.events(run.run_id)
        _check_journal(events)
        assert EventKind.EMITTED in [e.kind for e in events]


@pytest.mark.anyio
async def test_a_run_created_by_its_first_commit_gets_a_fresh_lease(tmp_path: Path) -> None:
    leases: list[float] = []

    async def slow_start(s: S, ctx: Context) -> dict[str, Any]:
        await anyio.sleep(0.3)  # longer than the lease
        await ctx.step("charge", lambda: 1)  # creates the run
        record = await ctx_runtime.get_run(ctx.run_id)
        assert record.lease_until is not None
        leases.append(record.lease_until - time.time())
        return {"n": 1}

    async with Runtime.open(f"sqlite:///{tmp_path / 'l.db'}", lease_ttl=0.2) as ctx_runtime:
        assert await ctx_runtime.run(_chain("slow_start", ("slow", slow_start)), {}) == {"n": 1}
    assert leases and leases[0] > 0, f"created with an expired lease: {leases}"


@pytest.mark.anyio
async def test_a_cancel_held_behind_a_failing_append_still_stops_a_retrying_node(
    tmp_path: Path,
) -> None:
    attempts: list[int] = []

    async def work(s: S, ctx: Context) -> dict[str, Any]:
        attempts.append(ctx.attempt)
        await ctx.step("pay", lambda: 1)
        await anyio.sleep(30)
        return {"n": 1}

    g = Graph(S, name="retrying")
    g.node("w", work, retry=Retry(attempts=2, backoff=0))
    g.edge(START, "w")
    g.edge("w", END)
    store = store_from_url(f"sqlite:///{tmp_path / 'r.db'}")
    reached, release = anyio.Event(), anyio.Event()
    original = store.append

    async def fails_once(run_id: str, expected: int, events: Any, **kw: Any) -> None:
        if not reached.is_set() and any(e.kind is EventKind.EFFECT_FINISHED for e in events):
            reached.set()
            await release.wait()
            raise TransientStoreError("transient")
        await original(run_id, expected, events, **kw)

    store.append = fails_once  # type: ignore[method-assign,assignment]
    async with Runtime(store) as rt:
        handle = await rt.start(g.compile(), {})
        await reached.wait()
        # The failed write is retried (a storage error never fails the run), lands, and
        # the cancel held behind it then stops the node: no second attempt, no 30 s sleep.
        with anyio.fail_after(2):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_release_soon, release)
                await rt.cancel(handle.run_id)
        assert attempts == [1]
        assert (await rt.get_run(handle.run_id)).status is RunStatus.CANCELLED


@pytest.mark.anyio
async def test_shutdown_waits_for_an_effect_running_in_a_thread(tmp_path: Path) -> None:
    calls: list[str] = []

    def charge() -> str:
        calls.append("start")
        time.sleep(0.3)
        calls.append("done")
        return "receipt"

    async def pays(s: S, ctx: Context) -> dict[str, Any]:
        await ctx.step("charge", charge)
        return {"n": 1}

    app = _chain("thread_payer", ("pay", pays))
    url = f"sqlite:///{tmp_path / 't.db'}"
    async with Runtime.open(url, drain_timeout=0.05) as rt:
        handle = await rt.start(app, {})
        await anyio.sleep(0.1)  # the effect runs in its thread
    assert calls == ["start", "done"]  # closing waited for it, and journaled it
    async with Runtime.open(url, graphs=[app]) as again:
        assert await again.handle(handle.run_id).result() == {"n": 1}
    assert calls == ["start", "done"]  # recovery returned the recorded result


@pytest.mark.anyio
async def test_a_run_started_while_the_runtime_closes_is_abandoned_too() -> None:
    async def slow_to_stop(s: S) -> dict[str, Any]:
        try:
            await anyio.sleep(30)
        finally:
            with anyio.CancelScope(shield=True):  # holds the close for a moment
                await anyio.sleep(0.2)
        return {"n": 1}

    async def long(s: S) -> dict[str, Any]:
        await anyio.sleep(30)
        return {"n": 1}

    late: list[str] = []
    rt = Runtime.open("memory://", drain_timeout=0)
    with anyio.fail_after(5):  # not the 30 s of the late run
        async with anyio.create_task_group() as tg, rt:
            await rt.start(_chain("first", ("slow", slow_to_stop)), {})

            async def start_late() -> None:
                await anyio.sleep(0.05)  # a request arriving during the close
                late.append((await rt.start(_chain("late", ("long", long)), {})).run_id)

            tg.start_soon(start_late)
            await anyio.sleep(0.01)
    assert late  # it was accepted, then abandoned with the rest


@pytest.mark.anyio
async def test_cancelling_a_parent_and_its_child_together_cancels_both(tmp_path: Path) -> None:
    inner = _chain("inner2", ("one", lambda s: {"n": 1}), ("two", lambda s: {"n": 2}))
    outer = _chain("outer2", ("sub", inner), ("after", lambda s: {"n": 3}))
    store = store_from_url(f"sqlite:///{tmp_path / 'b.db'}")
    reached, release = _hold(
        store, lambda run_id, e: "/" in run_id and e.kind is EventKind.STEP_STARTED
    )
    async with Runtime(store) as rt:
        handle = await rt.start(outer, {})
        await reached.wait()
        child = next(run_id for run_id in rt.live_runs() if "/" in run_id)
        async with anyio.create_task_group() as tg:
            tg.start_soon(rt.cancel, handle.run_id)
            tg.start_soon(rt.cancel, child)
            await _release_soon(release)
        parent = await rt.get_run(handle.run_id)
        assert parent.status is RunStatus.CANCELLED, parent.error
        assert (await rt.get_run(child)).status is RunStatus.CANCELLED


@pytest.mark.anyio
async def test_a_run_whose_first_step_is_a_subgraph_is_created_before_its_child(
    tmp_path: Path,
) -> None:
    started, waits = _waiting_node()
    parent = _chain("parent_first", ("sub", _chain("child_first", ("wait", waits))))
    url = f"sqlite:///{tmp_path / 's.db'}"
    async with Runtime.open(url) as rt:
        caller_scope = anyio.CancelScope()

        async def caller() -> None:
            with caller_scope:
                await rt.run(parent, {})  # no run id: created by its first commit

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await started.wait()
            caller_scope.cancel()  # the caller gives up while the child runs
        runs = {r.run_id: r for r in await rt.list_runs()}
        child = next(r for r in runs.values() if r.parent_run_id is not None)
        assert child.parent_run_id in runs  # the child never points at a missing parent
    async with Runtime.open(url, graphs=[parent]) as again:  # recovery resumes the parent
        assert child.parent_run_id is not None
        with anyio.fail_after(5):
            handle = again.handle(child.parent_run_id)
            # The child's node waits 30 s: cancel the recovered run rather than wait.
            await again.cancel(handle.run_id)
        assert (await again.get_run(handle.run_id)).status is RunStatus.CANCELLED
