"""A Mainspring toolbox served as an MCP server, tested with the SDK's own client
(issue 12, item 3, the server side): stdio subprocess, streamable HTTP, in-process with a
runtime (each call a journaled run) and an agent as a tool."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters

from mainspring import Runtime
from mainspring.events import EffectFinished
from mainspring.tools.mcp_server import serve_mcp
from tests.mcp_servers.toolset import toolbox

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).parent.parent
SERVE = [
    "-m",
    "mainspring.tools.mcp_server",
    "tests.mcp_servers.toolset:toolbox",
    "--name",
    "orders",
]


def _text(result: types.CallToolResult) -> str:
    return " ".join(b.text for b in result.content if isinstance(b, types.TextContent))


async def _check_the_toolset(client: Client) -> None:
    listed = {t.name: t for t in (await client.list_tools()).tools}
    assert set(listed) == {"lookup_order", "shout", "boom"}
    assert listed["lookup_order"].input_schema == toolbox.get("lookup_order").parameters
    assert listed["lookup_order"].description == "Find an order by its id."
    found = await client.call_tool("lookup_order", {"order_id": "A-17"})
    assert not found.is_error
    assert found.structured_content == {"id": "A-17", "amount": 120.0, "status": "open"}
    assert (await client.call_tool("shout", {"text": "hi"})).content[0] == types.TextContent(
        type="text", text="HI"
    )
    bad = await client.call_tool("lookup_order", {"order_id": 17, "extra": 1})
    assert bad.is_error
    assert "order_id" in _text(bad) and "extra" in _text(bad) and "invalid arguments" in _text(bad)
    failed = await client.call_tool("boom", {})
    assert failed.is_error and "the warehouse is on fire" in _text(failed)
    unknown = await client.call_tool("nope", {})
    assert unknown.is_error and "no tool named 'nope'" in _text(unknown)


async def test_served_over_stdio_to_the_sdks_client() -> None:
    params = StdioServerParameters(
        command=sys.executable, args=SERVE, env={"PYTHONPATH": str(ROOT)}, cwd=str(ROOT)
    )
    with anyio.fail_after(20):
        async with Client(params) as client:
            assert client.server_info is None or client.server_info.name == "orders"
            await _check_the_toolset(client)


@pytest.fixture
async def http_url() -> AsyncIterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, *SERVE, "--http", str(port)], cwd=ROOT, stderr=subprocess.DEVNULL
    )
    try:
        with anyio.fail_after(20):
            while True:
                try:
                    await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
                    break
                except OSError:
                    await anyio.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.kill()
        proc.wait()


async def test_served_over_streamable_http(http_url: str) -> None:
    with anyio.fail_after(20):
        async with Client(http_url) as client:
            await _check_the_toolset(client)


async def test_with_a_runtime_each_call_is_a_journaled_run(tmp_path: Path) -> None:
    async with Runtime.open(f"sqlite:///{tmp_path / 'r.db'}", tools=toolbox) as rt:
        async with Client(serve_mcp(toolbox, name="orders", runtime=rt)) as client:
            await _check_the_toolset(client)
        runs = await rt.list_runs()
        finished = [
            e.data
            for run in runs
            for e in await rt.events(run.run_id)
            if isinstance(e.data, EffectFinished)
        ]
    # every call of a known tool is a run whose effect holds its result or its error (an
    # unknown name is refused before a run is made)
    assert len(runs) == 4
    errors = sorted(f.error.type for f in finished if f.error is not None)
    assert errors == ["ToolArgumentsError", "ToolFailedError"]
    assert sorted(f.name for f in finished if f.error is None) == [
        "tool:lookup_order", "tool:shout"
    ]  # fmt: skip


async def test_an_agent_as_a_tool() -> None:
    async def agent(question: str) -> str:
        return f"you asked: {question}"

    server = serve_mcp(toolbox, agent=agent, agent_name="support")
    async with Client(server) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        assert listed["support"].input_schema["required"] == ["input"]
        answer = await client.call_tool("support", {"input": "where is A-17?"})
        assert _text(answer) == "you asked: where is A-17?" and not answer.is_error
        assert (await client.call_tool("support", {"question": 1})).is_error
    with pytest.raises(ValueError, match="agent_name"):
        serve_mcp(toolbox, agent=agent, agent_name="shout")
