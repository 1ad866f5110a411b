"""W11-mcp: the cost of calling an MCP server's tool through Mainspring, over stdio.

One real server package (``mcp-server-time``, its ``get_current_time`` tool) as a
subprocess; the same call, in interleaved blocks, four ways: the SDK's own
``Client.call_tool`` (the anchor), ``MCPServer.call_tool`` (the connection's bounds, no
validation), a Mainspring ``Toolbox.call`` on an ``MCPServer``'s
tool (JSON Schema validation, the timeout, result conversion), and ``ctx.tool`` in a
run on the in-memory store (plus the gate and the journal). The SDK's client has a
server process of its own; the three Mainspring ways share one, so the layers' costs
(toolbox over ``call_tool``, run over toolbox) are measured without the noise between
two processes (~100 us either way). Reported: p50 per call and the differences.

    python benchmarks/run.py --only W11-mcp       # or, alone:
    cd benchmarks && python -m workloads.mcp [--quick]
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypedDict

import anyio

from harness import Result, Settings, skipped

US = 1e6
ARGS = {"timezone": "UTC"}
SERVER = [sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]


class S(TypedDict, total=False):
    n: int
    lat: list[float]


async def _block(call: Callable[[], Awaitable[Any]], n: int, into: list[float]) -> None:
    for _ in range(n):
        started = time.perf_counter()
        await call()
        into.append(time.perf_counter() - started)


def _graph() -> Any:
    from mainspring import END, START, Context, Graph

    g = Graph(S, name="w11-mcp")

    @g.node
    async def calls(s: S, ctx: Context) -> S:
        lat: list[float] = []
        for _ in range(s["n"]):
            started = time.perf_counter()
            await ctx.tool("get_current_time", **ARGS)
            lat.append(time.perf_counter() - started)
        return {"lat": lat}

    g.edge(START, "calls")
    g.edge("calls", END)
    return g.compile()


async def run(settings: Settings) -> list[Result]:
    try:
        from mcp import Client, StdioServerParameters
    except ImportError as exc:
        return [skipped("W11-mcp", "us p50/call", f"needs the mcp extra: {exc}")]
    if importlib.util.find_spec("mcp_server_time") is None:
        return [skipped("W11-mcp", "us p50/call", "needs mcp-server-time (the dev extra)")]
    from mainspring import Runtime
    from mainspring.tools import Toolbox
    from mainspring.tools.mcp_client import MCPServer

    calls, blocks = settings.pick((300, 3), (1_500, 5))
    per = calls // blocks
    params = StdioServerParameters(command=SERVER[0], args=SERVER[1:])
    sdk_lat: list[float] = []
    box_lat: list[float] = []
    raw_lat: list[float] = []
    run_lat: list[float] = []
    graph = _graph()
    async with (
        Client(params) as sdk,
        MCPServer.stdio(SERVER[0], SERVER[1:]) as ours,
    ):
        box = Toolbox(ours.tools())
        async with Runtime.open("memory://", tools=box) as rt:

            async def sdk_call() -> Any:
                return await sdk.call_tool("get_current_time", ARGS)

            async def raw_call() -> Any:  # MCPServer.call_tool: bounded, no validation
                return await ours.call_tool("get_current_time", ARGS)

            async def box_call() -> Any:
                return await box.call("get_current_time", ARGS)

            async def run_block(n: int, into: list[float]) -> None:
                state = await rt.run(graph, {"n": n})
                into.extend(state["lat"])

            for warm in (sdk_call, box_call):  # imports, first schema compile, first timers
                await _block(warm, 30, [])
            await run_block(30, [])
            for i in range(blocks):
                ways: list[Callable[[], Awaitable[None]]] = [
                    lambda: _block(sdk_call, per, sdk_lat),
                    lambda: _block(raw_call, per, raw_lat),
                    lambda: _block(box_call, per, box_lat),
                    lambda: run_block(per, run_lat),
                ]
                for way in ways if i % 2 == 0 else ways[::-1]:
                    await way()
    sdk50 = statistics.median(sdk_lat) * US
    box50 = statistics.median(box_lat) * US
    run50 = statistics.median(run_lat) * US
    raw50 = statistics.median(raw_lat) * US
    return [
        Result(
            "W11-mcp",
            run50,
            sdk50,
            "us p50/call",
            extra={
                "calls_each_way": len(sdk_lat),
                "p50_us_sdk_client": sdk50,
                "p50_us_mcpserver_call_tool": raw50,
                "p50_us_toolbox_call": box50,
                "p50_us_ctx_tool_in_run": run50,
                "overhead_us_toolbox_vs_sdk": box50 - sdk50,
                "overhead_us_ctx_tool_vs_sdk": run50 - sdk50,
                "layer_us_toolbox_over_call_tool": box50 - raw50,
                "layer_us_ctx_tool_over_toolbox": run50 - box50,
            },
        )
    ]


if __name__ == "__main__":
    import json
    import tempfile
    from pathlib import Path

    quick = "--quick" in sys.argv
    with tempfile.TemporaryDirectory() as tmp:
        outcome = anyio.run(run, Settings(quick=quick, workdir=Path(tmp), pg_url=""))
    for line in outcome:
        print(json.dumps(line.to_json()))
