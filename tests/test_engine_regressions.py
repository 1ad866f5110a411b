"""Regression tests for defects a review of the engine found (all fixed).

Each test states the correct behaviour: replay runs no subgraph effects, an
unfinished effect keeps its idempotency key, cancellation never rewrites a
finished run and ends a cancelled parent's child runs, recorded effect errors
come back as their original type, child run streams end, and waiting keeps no
state per run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import anyio
import pytest

from mainspring import END, START, Context, EventKind, Graph, Retry, RunStatus, Runtime
from mainspring.store import MemoryStore, store_from_url


class S(TypedDict, total=False):
    x: int
    ok: bool
    handled: bool


def _linear(name: str, fn: Any, **opts: Any) -> Any:
    g = Graph(S, name=name)
    g.node("n", fn, **opts)
    g.edge(START, "n")
    g.edge("n", END)
    return g.compile()


def _parent_of(name: str, child: Any) -> Any:
    g = Graph(S, name=name)
    g.node("sub", child)
    g.edge(START, "sub")
    g.edge("sub", END)
    return g.compile()


# 1. replay() of a run with a subgraph node runs the child's effects for real and
#    writes a "replay-..." child run into the real store.
@pytest.mark.anyio
async def test_replay_with_subgraph_runs_no_real_effects() -> None:
    calls: list[str] = []

    async def side(x: int) -> int:
        calls.append("side")
        return x + 1

    async def work(s: S, ctx: Context) -> dict[str, Any]:
        return {"x": await ctx.step("side", side, s.get("x", 0))}

    app = _parent_of("replay_outer", _linear("replay_inner", work))
    async with Runtime(MemoryStore()) as rt:
        h = await rt.start(app, {"x": 1})
        assert (await h.result())["x"] == 2
        assert calls == ["side"]
        report = await rt.replay(h.run_id)
        assert report.ok, str(report)
        assert calls == ["side"], "replay called the real effect of the subgraph again"
        stray = [r.run_id for r in await rt.list_runs() if r.run_id.startswith("replay-")]
        assert stray == [], f"replay wrote runs into the real store: {stray}"


# 2. An effect whose attempt timed out (started, never finished) is re-run on retry
#    with a NEW idempotency key, so the downstream service cannot de-duplicate it.
@pytest.mark.anyio
async def test_unfinished_effect_is_retried_with_the_same_idempotency_key() -> None:
    keys: list[str] = []

    async def charge(idempotency_key: str) -> str:
        keys.append(idempotency_key)
        if len(keys) == 1:
            await anyio.sleep(5)  # the provider is slow: the node times out mid-call
        return "charged"

    async def pay(s: S, ctx: Context) -> dict[str, Any]:
        await ctx.step("payments.charge", charge)
        return {"ok": True}

    app = _linear("retry_key", pay, retry=Retry(attempts=2, backoff=0, jitter=False), timeout=0.3)
    async with Runtime(MemoryStore()) as rt:
        out = await (await rt.start(app, {})).result()
        assert out["ok"]
        assert len(keys) == 2
        assert keys[0] == keys[1], f"the unfinished effect was re-run with a new key: {keys}"


# 3. cancel() arriving while the driver commits the run's `finished` event turns a
#    finished run into a cancelled one: the journal gets FINISHED then CANCELLED.
@pytest.mark.anyio
async def test_cancel_racing_completion_does_not_append_after_finished(tmp_path: Path) -> None:
    store = store_from_url(f"sqlite:///{tmp_path / 'race.db'}")
    gate = anyio.Event()
    reached = anyio.Event()
    original = store.append

    async def slow_append(run_id: str, expected: int, events: Any, **kw: Any) -> None:
        if any(e.kind is EventKind.FINISHED for e in events):
            reached.set()
            await gate.wait()
        await original(run_id, expected, events, **kw)

    store.append = slow_append  # type: ignore[method-assign,assignment]

    def n(s: S) -> dict[str, Any]:
        return {"x": 1}

    app = _linear("race", n)
    async with Runtime(store) as rt:
        h = await rt.start(app, {})
        await reached.wait()
        async with anyio.create_task_group() as tg:
            tg.start_soon(rt.cancel, h.run_id)
            await anyio.sleep(0.05)
            gate.set()
        kinds = [e.kind for e in await rt.events(h.run_id)]
        assert kinds[-1] is EventKind.FINISHED, f"journal ends {kinds[-2:]}"
        assert (await rt.get_run(h.run_id)).status is RunStatus.FINISHED


# 4. Cancelling a live parent while its subgraph child runs leaves the child run
#    RUNNING forever: recovery skips child runs and nothing else ends it.
@pytest.mark.anyio
async def test_cancel_live_parent_ends_its_running_subgraph_run() -> None:
    started = anyio.Event()

    async def slow(s: S) -> dict[str, Any]:
        started.set()
        await anyio.sleep(30)
        return {"x": 1}

    app = _parent_of("cancel_outer", _linear("cancel_inner", slow))
    async with Runtime(MemoryStore()) as rt:
        h = await rt.start(app, {})
        await started.wait()
        await rt.cancel(h.run_id)
        assert (await rt.get_run(h.run_id)).status is RunStatus.CANCELLED
        children = [r for r in await rt.list_runs() if r.parent_run_id == h.run_id]
        assert children
        stuck = [(r.run_id, r.status.value) for r in children if not r.status.terminal]
        assert stuck == [], f"child runs of a cancelled parent left unfinished: {stuck}"


# 5. A recorded effect failure is re-raised on resume as EffectError, not as the
#    exception the node saw the first time: a node that handled the error the
#    first time fails after the interrupt is resumed.
@pytest.mark.anyio
async def test_handled_effect_error_is_handled_again_on_resume() -> None:
    def boom() -> None:
        raise ValueError("no stock")

    async def n(s: S, ctx: Context) -> dict[str, Any]:
        handled = False
        try:
            await ctx.step("inventory.reserve", boom)
        except ValueError:
            handled = True
        ok = await ctx.interrupt({"approve": "backorder?"})
        return {"handled": handled, "ok": bool(ok)}

    app = _linear("effect_err", n)
    async with Runtime(MemoryStore()) as rt:
        h = await rt.start(app, {})
        assert (await h.wait()).status is RunStatus.INTERRUPTED
        out = await (await rt.resume(h.run_id, True)).result()
        assert out == {"handled": True, "ok": True}


# 6. Tailing a subgraph child run's events while it runs never ends (the child's
#    subscribers are never closed) and leaks the runtime._subscribers entry.
@pytest.mark.anyio
async def test_events_of_a_subgraph_run_end_when_it_ends() -> None:
    started = anyio.Event()
    go = anyio.Event()

    async def slow(s: S) -> dict[str, Any]:
        started.set()
        await go.wait()
        return {"x": 1}

    app = _parent_of("tail_outer", _linear("tail_inner", slow))
    async with Runtime(MemoryStore()) as rt:
        h = await rt.start(app, {})
        await started.wait()
        child_id = next(r.run_id for r in await rt.list_runs() if r.parent_run_id == h.run_id)
        seen: list[EventKind] = []
        ended = False

        async def tail() -> None:
            nonlocal ended
            async for event in rt.handle(child_id).events():
                seen.append(event.kind)
            ended = True

        async with anyio.create_task_group() as tg:
            tg.start_soon(tail)
            await anyio.sleep(0.05)
            go.set()
            await h.result()
            with anyio.move_on_after(2):
                while not ended:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        assert ended, f"the child's event stream never ended (saw {seen})"
        assert rt.services.registry.subscribers(child_id) is None


# 7. cancel() right after start() of a batch-durability run (the driver has not yet
#    created the run): the create lands but is seen as cancelled, the driver then
#    appends CANCELLED at sequence 0 and gets a ConflictError ("another writer").
#    cancel() returns as if it worked, but the run stays RUNNING and wait() hangs.
@pytest.mark.anyio
async def test_cancel_right_after_batch_start_cancels_the_run(tmp_path: Path) -> None:
    def n(s: S) -> dict[str, Any]:
        return {"x": 1}

    app = _linear("batch_cancel", n)
    async with Runtime(store_from_url(f"sqlite:///{tmp_path / 'b.db'}")) as rt:
        h = await rt.start(app, {}, durability="batch")
        await rt.cancel(h.run_id)
        outcome = None
        with anyio.move_on_after(2):
            outcome = await h.wait()
        record = await rt.get_run(h.run_id)
        assert record.status is RunStatus.CANCELLED, f"store says {record.status.value}"
        assert outcome is not None and outcome.status is RunStatus.CANCELLED, "wait() hung"


# 8. the registry's waiters gain an anyio.Event per run waited on (result()/wait() of a
#    parked run, or a run driven elsewhere) and only loses it when this runtime
#    later starts/stops that run: in a long-lived API server, entries pile up.
@pytest.mark.anyio
async def test_waiting_on_parked_runs_does_not_leak_per_run_state() -> None:
    async def n(s: S, ctx: Context) -> dict[str, Any]:
        return {"ok": bool(await ctx.interrupt("?"))}

    app = _linear("leak", n)
    async with Runtime(MemoryStore()) as rt:
        for _ in range(20):
            h = await rt.start(app, {})
            with anyio.move_on_after(0.01):  # e.g. an HTTP long-poll that gives up
                await h.result()
        waiting = rt.services.registry.waiting()
        assert waiting == 0, f"{waiting} wait events left behind"
