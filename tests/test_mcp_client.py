"""MCP servers' tools as Mainspring tools (issue 12, item 3, the client side).

Against real MCP server packages from PyPI run as subprocesses over stdio
(``mcp-server-time``, ``mcp-server-git``), and the SDK's own server (tests/mcp_servers/
unruly.py) for the failure modes and for streamable HTTP.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TypedDict

import anyio
import pytest

from mainspring import END, START, Context, Graph, Runtime
from mainspring.events import EffectStarted
from mainspring.models.messages import TextPart
from mainspring.tools import ToolArgumentsError, Toolbox, ToolError, ToolFailedError
from mainspring.tools.mcp_client import (
    MCPConnectError,
    MCPConnectionLostError,
    MCPServer,
    MCPTimeoutError,
)

pytestmark = pytest.mark.anyio

UNRULY = str(Path(__file__).parent / "mcp_servers" / "unruly.py")
BIN = Path(sys.executable).parent


def time_server(**options: Any) -> MCPServer:
    args = ["-m", "mcp_server_time", "--local-timezone", "UTC"]
    return MCPServer.stdio(sys.executable, args, prefix="time.", **options)


def unruly(*args: str, **options: Any) -> MCPServer:
    return MCPServer.stdio(sys.executable, [UNRULY, *args], name="unruly", **options)


async def test_a_real_servers_tools_are_validated_mainspring_tools() -> None:
    async with time_server() as server:
        tools = server.tools()
        assert [t.name for t in tools] == ["time.get_current_time", "time.convert_time"]
        spec = tools[0].spec()
        assert spec.parameters["required"] == ["timezone"]  # the server's inputSchema
        assert "IANA" in spec.parameters["properties"]["timezone"]["description"]
        box = Toolbox(tools)
        now = await box.call("time.get_current_time", {"timezone": "Europe/Paris"})
        assert now["timezone"] == "Europe/Paris" and isinstance(now["is_dst"], bool)
        with pytest.raises(ToolArgumentsError) as bad:
            await box.call("time.convert_time", {"source_timezone": 5, "time": "10:00"})
        message = str(bad.value)  # every problem, before anything reached the server
        assert (
            "5 is not of type 'string'" in message and "'target_timezone' is a required" in message
        )
        with pytest.raises(ToolFailedError, match=r"reported an error: .*Invalid timezone"):
            await box.call("time.get_current_time", {"timezone": "Nowhere/Atlantis"})


class S(TypedDict, total=False):
    result: Any


async def test_an_mcp_tool_in_a_run_is_a_journaled_effect_through_the_gate(tmp_path: Path) -> None:
    async with time_server() as server:
        box = Toolbox()
        box.add_mcp(server)
        g = Graph(S, name="mcp-run")

        @g.node
        async def ask(s: S, ctx: Context) -> S:
            return {"result": await ctx.tool("time.get_current_time", timezone="Asia/Tokyo")}

        g.edge(START, "ask")
        g.edge("ask", END)
        async with Runtime.open(f"sqlite:///{tmp_path / 'r.db'}", tools=box) as rt:
            state = await rt.run(g.compile(), {})
            events = await rt.events((await rt.list_runs())[0].run_id)
    assert state["result"]["timezone"] == "Asia/Tokyo"
    started = next(e.data for e in events if isinstance(e.data, EffectStarted))
    assert (started.name, started.args) == (
        "tool:time.get_current_time",
        {"timezone": "Asia/Tokyo"},
    )


@pytest.fixture
def git_repo(tmp_path: Path) -> Iterator[Path]:
    if shutil.which("git") is None:
        pytest.skip("mcp-server-git needs the git command (Debian: git)")
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip
    (repo / "notes.txt").write_text("first\n")
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "add the notes"]):
        subprocess.run(["git", *cmd], cwd=repo, env=env, check=True)
    (repo / "notes.txt").write_text("first\nsecond\n")
    yield repo


async def test_the_git_server_reads_a_repository(git_repo: Path) -> None:
    args = ["-m", "mcp_server_git", "--repository", str(git_repo)]
    async with MCPServer.stdio(sys.executable, args, prefix="git_") as server:
        box = Toolbox(server.tools())
        assert {"git_git_status", "git_git_log", "git_git_diff_unstaged"} <= {t.name for t in box}
        log = await box.call("git_git_log", {"repo_path": str(git_repo)})
        assert "add the notes" in log
        diff = await box.call("git_git_diff_unstaged", {"repo_path": str(git_repo)})
        assert "+second" in diff
        with pytest.raises(ToolFailedError, match="reported an error"):
            await box.call("git_git_show", {"repo_path": str(git_repo), "revision": "no-such-rev"})


async def test_resources_and_prompts() -> None:
    async with unruly() as server:
        assert [r.uri for r in server.resources] == ["memo://greeting"]
        assert [p.name for p in server.prompts] == ["review"]
        assert await server.read_resource("memo://greeting") == "hello from unruly"
        messages = await server.get_prompt("review", {"code": "x = 1"})
        assert messages[0].role == "user"
        assert messages[0].content == [TextPart("Please review:\nx = 1")]
        reader = server.resource_tool()
        assert "memo://greeting" in reader.description
        assert await Toolbox([reader]).call("read_resource", {"uri": "memo://greeting"}) == (
            "hello from unruly"
        )


async def test_a_slow_call_times_out_and_a_server_that_still_answers_is_kept() -> None:
    async with unruly(call_timeout=0.5) as server:
        box = Toolbox(server.tools())
        started = time.monotonic()
        with pytest.raises(
            MCPTimeoutError, match=r"did not answer the call to .sleep. within 0\.5 s"
        ):
            await box.call("sleep", {"seconds": 1.5})
        assert time.monotonic() - started < 2.5
        assert await box.call("add", {"a": 2, "b": 3}) == {"result": 5}
        assert server.connects == 1  # it answered the check: no restart


async def test_a_hung_server_is_restarted_on_the_next_call() -> None:
    async with unruly(call_timeout=0.5, ping_timeout=0.5) as server:
        box = Toolbox(server.tools())
        pid = (await box.call("pid", {}))["result"]
        os.kill(pid, signal.SIGSTOP)  # the whole process hangs
        try:
            with pytest.raises(MCPTimeoutError):
                await box.call("echo", {"text": "hello?"})
            assert await box.call("echo", {"text": "again"}) == {"result": "again"}
            assert server.connects == 2 and (await box.call("pid", {}))["result"] != pid
        finally:
            os.kill(pid, signal.SIGKILL)


async def test_a_server_that_dies_mid_call_says_so_and_is_started_again() -> None:
    async with unruly() as server:
        box = Toolbox(server.tools())
        started = time.monotonic()
        with pytest.raises(MCPConnectionLostError) as lost:
            await box.call("crash", {})
        assert time.monotonic() - started < 5
        assert "unruly: crashing on purpose" in str(lost.value)  # its stderr, in the error
        assert isinstance(lost.value, ToolError) and "reconnects" in str(lost.value)
        assert await box.call("add", {"a": 1, "b": 1}) == {"result": 2}
        pid = (await box.call("pid", {}))["result"]
        os.kill(pid, signal.SIGKILL)  # killed while idle: the next call does not fail
        await anyio.sleep(0.2)
        assert await box.call("add", {"a": 2, "b": 2}) == {"result": 4}
        assert server.connects == 3


async def test_garbage_or_a_missing_command_fail_the_connect_clearly() -> None:
    started = time.monotonic()
    with pytest.raises(MCPConnectError) as garbage:
        async with unruly("garbage", connect_timeout=2.0):
            pass
    assert time.monotonic() - started < 6
    assert "not JSON-RPC (first: 'garbage, not json'" in str(garbage.value)
    with pytest.raises(MCPConnectError, match="No such file or directory"):
        async with MCPServer.stdio(str(BIN / "no-such-mcp-server"), connect_timeout=2.0):
            pass
    with pytest.raises(RuntimeError, match="async with server"):
        unruly().tools()


@pytest.fixture
async def http_url() -> AsyncIterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, UNRULY, "http", str(port)], stderr=subprocess.DEVNULL)
    try:
        with anyio.fail_after(20):
            while True:
                try:
                    stream = await anyio.connect_tcp("127.0.0.1", port)
                    await stream.aclose()
                    break
                except OSError:
                    await anyio.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.kill()
        proc.wait()


async def test_streamable_http(http_url: str) -> None:
    async with MCPServer.http(http_url, headers={"X-Trace": "t-1"}, call_timeout=0.5) as server:
        box = Toolbox(server.tools())
        assert "add" in box and await box.call("add", {"a": 20, "b": 22}) == {"result": 42}
        with pytest.raises(ToolArgumentsError, match="'b' is a required property"):
            await box.call("add", {"a": 1})
        with pytest.raises(MCPTimeoutError):
            await box.call("sleep", {"seconds": 2})
        assert await box.call("echo", {"text": "still here"}) == {"result": "still here"}
