"""MCP servers' tools, resources and prompts as Mainspring tools (official ``mcp`` SDK, v2).

    async with MCPServer.stdio("uvx", ["mcp-server-time"], prefix="time.") as time_server:
        box = Toolbox([lookup_order, *time_server.tools()])   # or box.add_mcp(time_server)
        async with Runtime.open(url, tools=box) as rt: ...

Each MCP tool is a ``Tool`` (its ``inputSchema`` as the parameters, checked before the
call), so a toolbox applies the same gate, journal, limits and retries as to a Python
tool. Every call is bounded: a connect timeout and a per-call timeout by default. A
server that hangs, dies mid-call or writes garbage on stdout gives a ``ToolError``
naming what happened (with the tail of its stderr) within those bounds; the next call
reconnects: a stdio server that exited is started again, one whose call timed out is
pinged first and restarted if it does not answer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from types import EllipsisType, TracebackType
from typing import Any

import anyio
import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from ..models.messages import Message
from .errors import ToolFailedError, ToolTimeoutError
from .mcp_connection import Link, Transport, http_transport, run_link, stdio_transport
from .mcp_tool import MCPTool, prompt_messages, resource_contents, tool_name
from .tool import Tool


class MCPConnectError(ToolFailedError, ConnectionError):
    """The MCP server could not be started or did not complete the handshake in time."""


class MCPConnectionLostError(ToolFailedError, ConnectionError):
    """The connection ended while a call was in flight (the server exited or was killed);
    the call may or may not have taken effect. The next call reconnects."""


class MCPTimeoutError(ToolTimeoutError):
    """The MCP server did not answer a call within its timeout (the call was cancelled)."""


class MCPServer:
    """A connection to one MCP server: ``async with MCPServer.stdio(...) as server``."""

    def __init__(
        self,
        transport: Transport,
        *,
        name: str,
        prefix: str = "",
        connect_timeout: float = 15.0,
        call_timeout: float | None = 30.0,
        ping_timeout: float = 5.0,
    ) -> None:
        self._transport = transport
        self.name = name
        self.prefix = prefix
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self.ping_timeout = ping_timeout
        self._link: Link | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._lock = anyio.Lock()
        self.connects = 0  # how many times a connection was made (restarts show here)

    @classmethod
    def stdio(
        cls,
        command: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        name: str | None = None,
        **options: Any,
    ) -> MCPServer:
        """A server run as a subprocess speaking MCP on its stdin and stdout. ``env`` is
        added to a minimal safe environment (PATH, HOME, ...), not the whole of ours."""
        transport = stdio_transport(command, args, env, cwd)
        return cls(
            transport, name=name or " ".join([os.path.basename(command), *args])[:80], **options
        )

    @classmethod
    def http(
        cls,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        **options: Any,
    ) -> MCPServer:
        """A server at a streamable HTTP endpoint (``http://host:port/mcp``)."""
        return cls(http_transport(url, headers), name=name or url, **options)

    def __repr__(self) -> str:
        return f"<MCPServer {self.name}>"

    # -- lifetime ------------------------------------------------------------------------

    async def __aenter__(self) -> MCPServer:
        if self._tg is not None:
            raise RuntimeError(f"MCP server {self.name!r} is already open; enter it once")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            await self._connect()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        """Stop the connection (a stdio server: stdin closed, then terminated, then killed,
        each after a grace period) and wait for it; the body's own error, if any, goes on."""
        tg, self._tg = self._tg, None
        if self._link is not None:
            self._link.stop.set()
        if tg is not None:  # the link tasks never raise: nothing to group with the body's error
            await tg.__aexit__(None, None, None)

    # -- what the server offers ----------------------------------------------------------

    def tools(self, *, timeout: float | EllipsisType | None = ..., **options: Any) -> list[Tool]:
        """The server's tools as Mainspring tools (named ``prefix + name``). ``options``
        are ``Tool`` options (``needs_approval=``, ``retry=``, ``rate=``, ...) for each."""
        call_timeout = self.call_timeout if timeout is ... else timeout
        return [
            MCPTool(
                self,
                remote,
                name=tool_name(remote.name, self.prefix),
                timeout=call_timeout,
                **options,
            )
            for remote in self._live_link().listing.tools
        ]

    @property
    def resources(self) -> list[types.Resource]:
        return list(self._live_link().listing.resources)

    @property
    def prompts(self) -> list[types.Prompt]:
        return list(self._live_link().listing.prompts)

    def resource_tool(self, **options: Any) -> Tool:
        """A tool ``<prefix>read_resource(uri)`` a model can read the server's resources with
        (their URIs and descriptions are in its description)."""
        listed = "; ".join(
            f"{r.uri} ({r.description or r.name})" for r in self._live_link().listing.resources
        )

        async def read_resource(uri: str) -> Any:
            """Read a resource of the MCP server by its URI."""
            return await self.read_resource(uri)

        described = f"Read a resource of the MCP server {self.name} by its URI. Known: {listed}"
        name = tool_name("read_resource", self.prefix)
        return Tool(read_resource, name=name, description=described[:1000], **options)

    # -- calls -----------------------------------------------------------------------------

    async def call_tool(
        self, name: str, arguments: dict[str, Any], *, timeout: float | EllipsisType | None = ...
    ) -> types.CallToolResult:
        """Call a tool by its name on the server (no argument validation: ``tools()`` gives
        the validated path), bounded by ``timeout`` (default: the server's call timeout)."""
        limit = self.call_timeout if timeout is ... else timeout
        result: types.CallToolResult = await self._bounded(
            f"the call to {name!r}", limit, "call_tool", name, arguments
        )
        return result

    async def read_resource(self, uri: str, *, timeout: float | None = None) -> Any:
        """A resource's content: its text, or each content as JSON data."""
        limit = timeout if timeout is not None else self.call_timeout
        result = await self._bounded(f"reading {uri!r}", limit, "read_resource", uri)
        return resource_contents(result)

    async def get_prompt(
        self, name: str, args: Mapping[str, str] | None = None, *, timeout: float | None = None
    ) -> list[Message]:
        """A prompt of the server, filled in, as messages for ``ctx.model``."""
        limit = timeout if timeout is not None else self.call_timeout
        filled = dict(args or {})
        result = await self._bounded(f"the prompt {name!r}", limit, "get_prompt", name, filled)
        return prompt_messages(result)

    async def _bounded(self, what: str, limit: float | None, method: str, *args: Any) -> Any:
        link = await self._live()
        assert link.client is not None
        try:
            with anyio.fail_after(limit):
                return await getattr(link.client, method)(*args)
        except TimeoutError:
            if link.closed:
                raise self._lost(link, what) from None
            link.suspect = True
            raise MCPTimeoutError(
                f"MCP server {self.name!r} did not answer {what} within {limit:g} s (cancelled)"
                f"{self._evidence(link)}. It is pinged before the next call and restarted if "
                "it does not answer; raise call_timeout= if the tool is only slow"
            ) from None
        except MCPError as exc:
            if link.closed or exc.code == -32000:  # CONNECTION_CLOSED
                raise self._lost(link, what) from None
            raise ToolFailedError(
                f"MCP server {self.name!r} refused {what}: {exc.message} (code {exc.code})"
            ) from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            link.closed = True
            raise self._lost(link, what) from None

    def _lost(self, link: Link, what: str) -> MCPConnectionLostError:
        link.closed = True
        return MCPConnectionLostError(
            f"MCP server {self.name!r} closed the connection during {what} (did it exit or "
            f"crash?){self._evidence(link)}; it may or may not have acted. The next call "
            "reconnects (a stdio server is started again)"
        )

    # -- connecting ------------------------------------------------------------------------

    def _live_link(self) -> Link:
        if self._link is None or self._tg is None:
            raise RuntimeError(
                f"MCP server {self.name!r} is not connected: use `async with server:` first"
            )
        return self._link

    async def _live(self) -> Link:
        link = self._live_link()
        if not link.closed and not link.suspect:
            return link
        async with self._lock:
            link = self._live_link()
            if link.suspect and not link.closed and await self._answers_ping(link):
                link.suspect = False
                return link
            if link.closed or link.suspect:
                link.stop.set()
                link.scope.cancel()  # a hung server: its shutdown is shielded and bounded
                await self._connect()
            return self._live_link()

    async def _answers_ping(self, link: Link) -> bool:
        """Whether the server answers a cheap request in time (a ping where the protocol
        version has one; a tool listing on 2026 servers, which dropped ping)."""
        client = link.client
        assert client is not None
        with anyio.move_on_after(self.ping_timeout):
            try:
                if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
                    await client.list_tools(cache_mode="bypass")
                else:
                    await client.send_ping()
                return True
            except Exception:
                return False
        return False

    async def _connect(self) -> None:
        assert self._tg is not None
        link = Link()
        self._tg.start_soon(run_link, link, self._transport, self.name)
        with anyio.move_on_after(self.connect_timeout) as waited:
            await link.ready.wait()
        if waited.cancelled_caught or link.client is None:
            link.scope.cancel()
            how = (
                f"did not complete the MCP handshake within {self.connect_timeout:g} s"
                if waited.cancelled_caught
                else "could not be connected"
            )
            raise MCPConnectError(
                f"MCP server {self.name!r} {how}{self._evidence(link)}; check the command "
                "or URL, or raise connect_timeout= for a slow start"
            )
        self._link = link
        self.connects += 1

    def _evidence(self, link: Link) -> str:
        found = link.evidence()
        return f" ({found})" if found else ""
