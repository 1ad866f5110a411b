"""A cancel or a shutdown never interrupts an append in flight.

The loop of a top-level run commits without an anyio shield (it costs ~4 us a
commit); instead ``request_cancel`` and ``abandon`` wait for the append to end.
These tests hold an append of a step boundary in the store and cancel, or close
the runtime, meanwhile: the journal must stay one unforked history.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import anyio
import pytest

from mainspring import END, START, EventKind, Graph, RunStatus, Runtime
from mainspring.store import store_from_url
from mainspring.store.base import Store


class S(TypedDict, total=False):
    n: int


def _three_steps() -> Any:
    g = Graph(S, name="three")
    for name in ("a", "b", "c"):
        g.node(name, lambda s: {"n": s.get("n", 0) + 1})
    g.edge(START, "a")
    g.edge("a", "b")
    g.edge("b", "c")
    g.edge("c", END)
    return g.compile()


def _hold_second_boundary(store: Store) -> tuple[anyio.Event, anyio.Event]:
    """Make the store hold the append that finishes step 0 and plans step 1."""
    reached, release = anyio.Event(), anyio.Event()
    original = store.append

    async def held_append(run_id: str, expected: int, events: Any, **kw: Any) -> None:
        if any(e.kind is EventKind.STEP_STARTED and e.data["step"] == 1 for e in events):
            reached.set()
            await release.wait()
        await original(run_id, expected, events, **kw)

    store.append = held_append  # type: ignore[method-assign]
    return reached, release


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
