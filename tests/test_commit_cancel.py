"""Cancelling runs: prompt, never in the middle of an append, and nothing left behind.

A run is cancelled through its task (``Task.cancel``, see ``engine/cancel.py``)
and the loop of a top-level run commits without an anyio shield, so a cancel
or a shutdown that arrives while an append is in flight must wait for it. These
tests hold appends in the store (a step boundary, an effect, a subgraph's step)
and cancel, or close the runtime, meanwhile: the journal must stay one unforked
history, and the tasks involved must not be left cancelled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
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
    RunCancelledError,
    RunStatus,
    Runtime,
)
from mainspring.errors import StoreError
from mainspring.store import store_from_url
from mainspring.store.base import Store


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
        calls.append("after the effect")  # never: the cancel surfaces once the record lands
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
        assert calls == ["pay"]


@pytest.mark.anyio
async def test_cancel_while_a_subgraph_commits_in_the_parent_task(tmp_path: Path) -> None:
    inner = _chain("inner", ("one", lambda s: {"n": 1}), ("two", lambda s: {"n": 2}))
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
    started = anyio.Event()

    async def waits(s: S) -> dict[str, Any]:
        started.set()
        await anyio.sleep(30)
        return {"n": 1}

    app = _chain("waits", ("wait", waits))
    async with Runtime.open("memory://") as rt:

        async def caller() -> None:
            import asyncio

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

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await reached.wait()
            tg.start_soon(rt.cancel, "first")
            await anyio.sleep(0.05)  # the cancel is held behind the append
            release.set()
