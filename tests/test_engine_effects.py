"""Journaled effects, retries, timeouts, interrupts, resume, cancel and recovery."""

from __future__ import annotations

from collections.abc import AsyncIterator
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
    NodeTimeoutError,
    Retry,
    RunCancelledError,
    RunFailedError,
    RunStateError,
    RunStatus,
    Runtime,
    SerializationError,
    StateError,
)
from mainspring.events import EffectFinished, ErrorInfo

from . import engine_graphs as eg

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'fx.db'}"


@pytest.fixture
async def rt(url: str) -> AsyncIterator[Runtime]:
    async with Runtime.open(url) as runtime:
        yield runtime


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    eg.CALLS.clear()


class S(TypedDict, total=False):
    key: str
    value: int


async def test_effect_results_are_recorded_with_idempotency_keys(rt: Runtime) -> None:
    handle = await rt.start(eg.support, {"text": "small refund"}, run_id="r1")
    await handle.result()
    events = await rt.events("r1")
    started = [e.data for e in events if e.kind is EventKind.EFFECT_STARTED]
    finished = [e.data for e in events if e.kind is EventKind.EFFECT_FINISHED]
    assert [d["name"] for d in started] == ["router", "orders.lookup"]
    assert [d["result"] for d in finished] == ["refund", 40]
    assert started[1]["key"] == "r1:1.0.0", "keys are deterministic: run, step, task, effect index"
    assert eg.CALLS == {"lookup:r1:1.0.0": 1}, "the function received the key"


async def test_interrupt_parks_and_resume_does_not_repeat_effects(rt: Runtime) -> None:
    handle = await rt.start(eg.support, {"text": "big refund"})
    outcome = await handle.wait()
    assert outcome.status is RunStatus.INTERRUPTED
    assert [(i.node, i.payload) for i in outcome.interrupts] == [("refund", {"approve": 150})]
    record = await rt.get_run(handle.run_id)
    assert record.status is RunStatus.INTERRUPTED
    await rt.resume(handle.run_id, False)
    out = await handle.result()
    assert out["replies"] == ["refund denied"] and out["approved"] is False
    assert list(eg.CALLS.values()) == [1], "the lookup before the interrupt ran once"


async def test_resume_in_another_runtime_on_the_same_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hitl.db'}"
    async with Runtime.open(url) as first:
        handle = await first.start(eg.support, {"text": "big refund"}, run_id="t-1")
        assert (await handle.wait()).status is RunStatus.INTERRUPTED
    # The first runtime (process) is gone. A new one, knowing the graph only by its ref:
    async with Runtime.open(url) as second:
        await second.resume("t-1", True)
        out = await second.handle("t-1").result()
    assert out["replies"] == ["refund issued"]
    assert list(eg.CALLS.values()) == [1]


async def test_parallel_interrupts_are_each_resumable(rt: Runtime) -> None:
    handle = await rt.start(eg.approvals, {})
    outcome = await handle.wait()
    pending = {i.node: i.id for i in outcome.interrupts}
    assert set(pending) == {"legal", "finance"}
    with pytest.raises(RunStateError, match="has 2 pending interrupts"):
        await rt.resume(handle.run_id, "ok")
    await rt.resume(handle.run_id, "no", interrupt_id=pending["finance"])
    outcome = await handle.wait()
    assert outcome.status is RunStatus.INTERRUPTED
    assert [i.node for i in outcome.interrupts] == ["legal"]
    await rt.resume(handle.run_id, "yes")
    out = await handle.result()
    assert out["answers"] == ["legal:yes", "finance:no"], "joined in task order"


async def test_resume_errors_are_clear(rt: Runtime) -> None:
    done = await rt.start(eg.support, {"text": "hello"})
    await done.result()
    with pytest.raises(RunStateError, match="has finished; nothing to resume"):
        await rt.resume(done.run_id, 1)
    parked = await rt.start(eg.support, {"text": "big refund"})
    await parked.wait()
    with pytest.raises(RunStateError, match="no pending interrupt 'nope'"):
        await rt.resume(parked.run_id, 1, interrupt_id="nope")
    with pytest.raises(Exception, match="no run with id 'missing'"):
        await rt.resume("missing", 1)


async def test_retry_with_backoff_reuses_finished_effects(rt: Runtime) -> None:
    app = eg.build_flaky(fail_times=2).compile()
    out = await rt.run(app, {"key": "k"})
    assert out == {"key": "k", "tries": 3, "done": True}
    assert eg.CALLS["prepare:k"] == 1, "the effect that succeeded in attempt 1 is not repeated"
    runs = await rt.list_runs()
    events = await rt.events(runs[0].run_id)
    failed = [e.data for e in events if e.kind is EventKind.STEP_FAILED]
    assert [(d["attempt"], d["retry"], d["error"]["type"]) for d in failed] == [
        (1, True, "ConnectionError"),
        (2, True, "ConnectionError"),
    ]
    attempts = [e.data.get("attempt", 1) for e in events if e.kind is EventKind.STEP_STARTED]
    assert attempts == [1, 2, 3]


async def test_retries_exhausted_fail_the_run(rt: Runtime) -> None:
    app = eg.build_flaky(fail_times=5, attempts=2).compile()
    with pytest.raises(RunFailedError, match=r"in node 'call': ConnectionError: flaky #2"):
        await rt.run(app, {"key": "x"})


async def test_errors_not_listed_in_retry_on_fail_at_once(rt: Runtime) -> None:
    g = Graph(S)

    @g.node(retry=Retry(attempts=5, backoff=0, on=(ConnectionError,)))
    def strict(s: S) -> None:
        eg.count("strict")
        raise KeyError("missing")

    g.edge(START, "strict")
    g.edge("strict", END)
    with pytest.raises(RunFailedError, match="KeyError"):
        await rt.run(g.compile(name="strict"), {})
    assert eg.CALLS["strict"] == 1


async def test_timeout_is_a_clear_retryable_error(rt: Runtime) -> None:
    g = Graph(S)

    @g.node(timeout=0.05, retry=Retry(attempts=2, backoff=0))
    async def slow(s: S) -> dict[str, Any]:
        n = eg.count("slow")
        if n == 1:
            await anyio.sleep(5)
        return {"value": n}

    g.edge(START, "slow")
    g.edge("slow", END)
    assert (await rt.run(g.compile(name="slow"), {}))["value"] == 2

    g2 = Graph(S)
    g2.node("stuck", lambda s: anyio.sleep(5), timeout=0.05)
    g2.edge(START, "stuck")
    g2.edge("stuck", END)
    with pytest.raises(
        RunFailedError,
        match=r"NodeTimeoutError: node 'stuck' ran longer than its timeout of 0.05 s",
    ):
        await rt.run(g2.compile(name="stuck"), {})
    assert issubclass(NodeTimeoutError, TimeoutError)


async def test_effect_errors_propagate_and_are_recorded(rt: Runtime) -> None:
    g = Graph(S)

    def charge(amount: int) -> int:
        raise PermissionError("card declined")

    @g.node
    async def pay(s: S, ctx: Context) -> dict[str, Any]:
        try:
            await ctx.step("charge", charge, 10)
        except PermissionError:
            return {"value": -1}
        return {"value": 1}

    g.edge(START, "pay")
    g.edge("pay", END)
    handle = await rt.start(g.compile(name="pay"), {})
    assert (await handle.result())["value"] == -1
    events = await rt.events(handle.run_id)
    finished = [e.data for e in events if isinstance(e.data, EffectFinished)]
    assert finished[0].error == ErrorInfo("PermissionError", "card declined", "builtins")


async def test_cancel_a_running_and_a_parked_run(rt: Runtime) -> None:
    g = Graph(S)
    g.node("sleepy", lambda s: anyio.sleep(30))
    g.edge(START, "sleepy")
    g.edge("sleepy", END)
    running = await rt.start(g.compile(name="sleepy"), {})
    await anyio.sleep(0.02)
    with anyio.fail_after(5):
        await running.cancel()
    with pytest.raises(RunCancelledError):
        await running.result()
    assert (await rt.get_run(running.run_id)).status is RunStatus.CANCELLED

    parked = await rt.start(eg.support, {"text": "big refund"})
    await parked.wait()
    await rt.cancel(parked.run_id)
    assert (await rt.get_run(parked.run_id)).status is RunStatus.CANCELLED
    events = await rt.events(parked.run_id)
    assert events[-1].kind is EventKind.CANCELLED
    with pytest.raises(RunStateError, match="already cancelled"):
        await rt.cancel(parked.run_id)


async def test_changed_effect_names_are_a_nondeterminism_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'drift.db'}"

    def build(effect_name: str) -> Any:
        g = Graph(S, name="drift")

        @g.node
        async def node(s: S, ctx: Context) -> dict[str, Any]:
            await ctx.step(effect_name, lambda: 1)
            await ctx.interrupt("wait")
            return {"value": 1}

        g.edge(START, "node")
        g.edge("node", END)
        return g.compile()

    async with Runtime.open(url) as rt:
        handle = await rt.start(build("fetch"), {})
        await handle.wait()
    async with Runtime.open(url, graphs=[build("download")]) as rt:
        await rt.resume(handle.run_id, "go")
        with pytest.raises(
            RunFailedError,
            match=r"called effect 'download' as its effect #0, but the journal recorded 'fetch'",
        ):
            await rt.handle(handle.run_id).result()


class Loose(TypedDict, total=False):
    value: Any


async def test_values_that_are_not_json_fail_clearly_on_durable_stores(tmp_path: Path) -> None:
    g = Graph(Loose)
    g.node("bad", lambda s: {"value": object()})
    g.edge(START, "bad")
    g.edge("bad", END)
    async with Runtime.open(f"sqlite:///{tmp_path / 'j.db'}") as rt:
        with pytest.raises(RunFailedError, match="the update of node 'bad' is not JSON-compatible"):
            await rt.run(g.compile(name="bad"), {})
        with pytest.raises(SerializationError, match="the input of run"):
            await rt.start(g.compile(name="bad"), {"value": object()})
        with pytest.raises(StateError, match="the input set 'text' to a value of type object"):
            await rt.start(eg.support, {"text": object()})


async def test_recovery_resumes_abandoned_runs_without_repeating_effects(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rec.db'}"
    release = anyio.Event()
    g = Graph(S, name="recover")

    @g.node
    async def work(s: S, ctx: Context) -> dict[str, Any]:
        await ctx.step("first", eg.count, "first")
        if not release.is_set():
            await anyio.sleep(60)  # the "crash" happens here
        return {"value": await ctx.step("second", eg.count, "second")}

    g.edge(START, "work")
    g.edge("work", END)
    app = g.compile()
    async with Runtime.open(url, lease_ttl=0.3, drain_timeout=0.1) as first:
        await first.start(app, {}, run_id="orphan")
        await anyio.sleep(0.1)
    # The first runtime walked away mid-node (as a crash would); its lease expires.
    await anyio.sleep(0.4)
    release.set()
    async with Runtime.open(url, graphs=[app], lease_ttl=0.3) as second:
        out = await second.handle("orphan").result()
    assert out["value"] == 1
    assert eg.CALLS == {"first": 1, "second": 1}


async def test_recover_list_mode_only_lists(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'list.db'}"
    g = Graph(S, name="hang")
    g.node("hang", lambda s: anyio.sleep(60))
    g.edge(START, "hang")
    g.edge("hang", END)
    app = g.compile()
    async with Runtime.open(url, lease_ttl=0.2, drain_timeout=0.05) as first:
        await first.start(app, {}, run_id="h")
        await anyio.sleep(0.05)
    await anyio.sleep(0.3)
    async with Runtime.open(url, graphs=[app], recover="list") as second:
        assert [r.run_id for r in second.recoverable] == ["h"]
        assert (await second.get_run("h")).status is RunStatus.RUNNING
        await second.cancel("h")


async def test_interrupt_inside_a_subgraph_parks_and_resumes_the_parent(rt: Runtime) -> None:
    class Inner(TypedDict, total=False):
        key: str
        value: int

    inner = Graph(Inner, name="approval")

    @inner.node
    async def ask(s: Inner, ctx: Context) -> dict[str, Any]:
        await ctx.step("notify", eg.count, "notify")
        answer = await ctx.interrupt({"approve": s["key"]})
        return {"value": 1 if answer else 0}

    inner.edge(START, "ask")
    inner.edge("ask", END)

    outer = Graph(S, name="outer-approval")
    outer.node("approval", inner.compile())
    outer.edge(START, "approval")
    outer.edge("approval", END)
    handle = await rt.start(outer.compile(), {"key": "k1"})
    outcome = await handle.wait()
    assert outcome.status is RunStatus.INTERRUPTED
    assert [(i.node, i.payload) for i in outcome.interrupts] == [("approval", {"approve": "k1"})]
    await rt.resume(handle.run_id, True)
    assert (await handle.result()) == {"key": "k1", "value": 1}
    assert eg.CALLS == {"notify": 1}, "the child's effect before its interrupt ran once"
    child = (await rt.list_runs(graph="approval"))[0]
    assert child.status is RunStatus.FINISHED and child.parent_run_id == handle.run_id
