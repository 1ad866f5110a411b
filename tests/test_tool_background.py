"""Background tool calls: ctx.tool_async starts a long call and the node goes on; a later
step waits for its result, parked durably, and is resumed when the call ends, also when
the process that started it stopped in between (issue 12, item 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import anyio
import pytest

from mainspring import END, START, Context, Graph, RunStatus, Runtime
from mainspring.tools import Toolbox, ToolFailedError, tool

pytestmark = pytest.mark.anyio

GATE = anyio.Event()
CALLS: list[str] = []


@tool(timeout=60)
async def report(topic: str) -> str:
    """A long call: waits until the test lets it finish."""
    CALLS.append(topic)
    await GATE.wait()
    return f"report on {topic}"


@tool
async def quick(topic: str) -> str:
    CALLS.append(topic)
    return f"quick {topic}"


@tool
async def broken(topic: str) -> str:
    raise ValueError(f"no data for {topic}")


class S(TypedDict, total=False):
    job: dict[str, str]
    notes: list[str]
    result: Any


def _graph(tool_name: str) -> Any:
    g = Graph(S, name=f"bg-{tool_name}")

    @g.node
    async def start(s: S, ctx: Context) -> S:
        job = await ctx.tool_async(tool_name, topic="sales")
        return {"job": job, "notes": ["started"]}

    @g.node
    async def other_work(s: S, ctx: Context) -> S:
        return {"notes": [*s["notes"], "did other work"]}

    @g.node
    async def collect(s: S, ctx: Context) -> S:
        try:
            return {"result": await ctx.wait_tool(s["job"])}
        except ToolFailedError as exc:
            return {"result": f"failed: {exc}"}

    g.edge(START, "start")
    g.edge("start", "other_work")
    g.edge("other_work", "collect")
    g.edge("collect", END)
    return g.compile(ref=f"tests.test_tool_background:{tool_name}_graph")


report_graph = _graph("report")
quick_graph = _graph("quick")
broken_graph = _graph("broken")


def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bg.db'}"


async def test_the_node_goes_on_and_a_later_step_waits_for_the_result(tmp_path: Path) -> None:
    global GATE
    GATE, CALLS[:] = anyio.Event(), []
    box = Toolbox([report])
    async with Runtime.open(url(tmp_path), tools=box, graphs=[report_graph]) as rt:
        handle = await rt.start(report_graph, {})
        parked = await handle.wait()
        assert parked.status is RunStatus.INTERRUPTED  # waiting, not blocking a worker
        assert parked.state["notes"] == ["started", "did other work"]
        GATE.set()  # the call ends: its end resumes the waiting run
        with anyio.fail_after(10):
            while (await rt.get_run(handle.run_id)).status is not RunStatus.FINISHED:
                await anyio.sleep(0.02)
        state = (await rt.outcome(handle.run_id)).state
    assert state["result"] == "report on sales" and CALLS == ["sales"]


async def test_a_call_that_ended_first_is_simply_collected(tmp_path: Path) -> None:
    CALLS[:] = []
    async with Runtime.open(url(tmp_path), tools=Toolbox([quick])) as rt:
        with anyio.fail_after(10):
            handle = await rt.start(quick_graph, {})
            while (await rt.get_run(handle.run_id)).status is not RunStatus.FINISHED:
                await anyio.sleep(0.02)
        assert (await rt.outcome(handle.run_id)).state["result"] == "quick sales"
    assert CALLS == ["sales"]


async def test_a_failed_background_call_raises_where_it_is_awaited(tmp_path: Path) -> None:
    async with Runtime.open(url(tmp_path), tools=Toolbox([broken])) as rt:
        with anyio.fail_after(10):
            handle = await rt.start(broken_graph, {})
            while (await rt.get_run(handle.run_id)).status is not RunStatus.FINISHED:
                await anyio.sleep(0.02)
        result = (await rt.outcome(handle.run_id)).state["result"]
    assert result.startswith("failed: background tool call") and "no data for sales" in result


async def test_the_wait_survives_a_restart_in_between(tmp_path: Path) -> None:
    """The first runtime closes while the call runs (its run is left resumable); the next
    one recovers the call, which ends and resumes the waiting run."""
    global GATE
    GATE, CALLS[:] = anyio.Event(), []
    box = Toolbox([report])
    async with Runtime.open(
        url(tmp_path), tools=box, graphs=[report_graph], drain_timeout=0.2
    ) as rt:
        handle = await rt.start(report_graph, {})
        assert (await handle.wait()).status is RunStatus.INTERRUPTED
    GATE.set()  # the next process's call ends at once
    async with Runtime.open(url(tmp_path), tools=Toolbox([report]), graphs=[report_graph]) as rt:
        with anyio.fail_after(10):
            while (await rt.get_run(handle.run_id)).status is not RunStatus.FINISHED:
                await anyio.sleep(0.02)
        assert (await rt.outcome(handle.run_id)).state["result"] == "report on sales"
    assert CALLS == ["sales", "sales"]  # started once, re-run once after the restart
