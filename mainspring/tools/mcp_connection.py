"""One live connection to an MCP server, owned by a task of its own.

The SDK's ``Client`` is an async context manager holding a task group, so it must be
entered and left by one task; calls reach it from any task. A ``Link`` is one such
connection: ``run_link`` (started in the owning ``MCPServer``'s task group) enters the
client, lists what the server offers, signals ``ready`` and holds the connection until
``stop`` is set or the connection ends. What went wrong is kept on the link for the
error messages: the transport closing (a stdio server that exited), lines on the
server's stdout that are not JSON-RPC, and the tail of its stderr.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
from anyio.abc import ObjectReceiveStream
from mcp import Client, StdioServerParameters
from mcp.client._transport import TransportStreams
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage

log = logging.getLogger("mainspring.tools.mcp")

Transport = Callable[["Link"], AbstractAsyncContextManager[TransportStreams]]
_PAGES = 100  # a paginator that never ends cannot hang a listing


@dataclass
class Listing:
    """What the server offered when the link connected."""

    tools: list[types.Tool] = field(default_factory=list)
    resources: list[types.Resource] = field(default_factory=list)
    prompts: list[types.Prompt] = field(default_factory=list)


@dataclass(eq=False)
class Link:
    """One connection attempt and, once ``ready``, the live connection."""

    ready: anyio.Event = field(default_factory=anyio.Event)
    stop: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    client: Client | None = None
    listing: Listing = field(default_factory=Listing)
    error: BaseException | None = None
    closed: bool = False  # the transport ended: calls on this link cannot be answered
    suspect: bool = False  # a call timed out: ping before the next call
    garbage: list[str] = field(default_factory=list)
    stderr: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    def saw_garbage(self, exc: Exception) -> None:
        errors = getattr(exc, "errors", None)
        line = str(exc)
        if callable(errors):
            with suppress(Exception):  # not a pydantic error after all
                line = str(errors()[0].get("input", line))
        if len(self.garbage) < 5:
            self.garbage.append(line[:200])

    def evidence(self) -> str:
        """What the server showed of itself, for an error message ('' when nothing)."""
        parts = []
        if self.garbage:
            parts.append(
                f"it wrote {len(self.garbage)} line(s) on stdout that are not JSON-RPC "
                f"(first: {self.garbage[0]!r}; a stdio server must log to stderr only)"
            )
        if self.error is not None:
            parts.append(f"the connection failed with {_describe(self.error)}")
        if self.stderr:
            parts.append("its stderr ended with: " + " | ".join(self.stderr)[-600:])
        return "; ".join(parts)


def stdio_transport(
    command: str, args: Sequence[str], env: Mapping[str, str] | None, cwd: str | None
) -> Transport:
    params = StdioServerParameters(
        command=command, args=list(args), env=dict(env) if env else None, cwd=cwd
    )

    @asynccontextmanager
    async def connect(link: Link) -> AsyncIterator[TransportStreams]:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        errlog = open(write_fd, "w", encoding="utf-8", errors="replace")  # noqa: SIM115
        try:
            async with stdio_client(params, errlog=errlog) as streams:
                errlog.close()  # the server holds its own end: EOF when it exits
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_read_stderr, read_fd, link)
                    try:
                        async with _watched(streams, link) as watched:
                            yield watched
                    finally:
                        tg.cancel_scope.cancel()
        finally:
            errlog.close()
            os.close(read_fd)

    return connect


def http_transport(url: str, headers: Mapping[str, str] | None) -> Transport:
    @asynccontextmanager
    async def connect(link: Link) -> AsyncIterator[TransportStreams]:
        import httpx2

        timeout = httpx2.Timeout(30.0, read=300.0)  # the call's own timeout bounds each call
        async with (
            httpx2.AsyncClient(headers=dict(headers or {}), timeout=timeout) as http,
            streamable_http_client(url, http_client=http) as streams,
            _watched(streams, link) as watched,
        ):
            yield watched

    return connect


@asynccontextmanager
async def _watched(streams: TransportStreams, link: Link) -> AsyncIterator[TransportStreams]:
    """The transport's streams, with the messages passed through a pump that notes garbage
    and the end of the stream (so a dead server is known before the next call)."""
    read, write = streams
    send, receive = anyio.create_memory_object_stream[SessionMessage | Exception](16)

    async def pump() -> None:
        try:
            async with send:
                async for item in read:
                    if isinstance(item, Exception):
                        link.saw_garbage(item)
                    await send.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
            pass
        finally:
            link.closed = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(pump)
        try:
            yield _as_read_stream(receive), write
        finally:
            tg.cancel_scope.cancel()


def _as_read_stream(stream: ObjectReceiveStream[SessionMessage | Exception]) -> Any:
    return stream  # a memory stream is the SDK's ReadStream


async def _read_stderr(fd: int, link: Link) -> None:
    pending = b""
    while True:
        await anyio.wait_readable(fd)
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not chunk:
            return
        *lines, pending = (pending + chunk).split(b"\n")
        for raw in lines:
            if line := raw.decode("utf-8", "replace").rstrip():
                link.stderr.append(line[:300])
                log.debug("mcp server stderr: %s", line)


async def run_link(link: Link, transport: Transport, describe: str) -> None:
    """Connect, list, then hold the connection until asked to stop or it ends. Never
    raises: what went wrong is kept on the link (the owner's task group must not die)."""
    try:
        with link.scope:
            async with AsyncExitStack() as stack:
                client = Client(transport(link), cache=None)
                await stack.enter_async_context(client)
                link.listing = await _list(client)
                link.client = client
                link.ready.set()
                await link.stop.wait()
    except Exception as exc:
        link.error = exc
        log.debug("mcp link to %s ended: %r", describe, exc)
    finally:
        link.closed = True
        link.ready.set()
        link.done.set()


async def _list(client: Client) -> Listing:
    caps = client.server_capabilities
    listing = Listing()
    if caps.tools is not None:
        listing.tools = await _pages(client.list_tools, "tools")
    if caps.resources is not None:
        listing.resources = await _pages(client.list_resources, "resources")
    if caps.prompts is not None:
        listing.prompts = await _pages(client.list_prompts, "prompts")
    return listing


async def _pages(fetch: Callable[..., Any], attr: str) -> list[Any]:
    found: list[Any] = []
    cursor: str | None = None
    for _ in range(_PAGES):
        page = await fetch(cursor=cursor)
        found.extend(getattr(page, attr))
        cursor = page.next_cursor
        if cursor is None:
            break
    return found


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    return f"{type(exc).__name__}: {exc}"[:300]
