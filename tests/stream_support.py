"""What the stream tests share: a real uvicorn server on 127.0.0.1, and an SSE client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import msgspec
import uvicorn
from fastapi import FastAPI

from mainspring.models.sse import ServerSentEvent, SSEParser


@dataclass
class Served:
    app: FastAPI
    url: str
    server: uvicorn.Server


@contextlib.asynccontextmanager
async def serve(app: FastAPI, **options: Any) -> AsyncIterator[Served]:
    """``app`` on a free port of 127.0.0.1, in a task of the caller's event loop."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=1,
        **options,
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        while not server.started:
            await anyio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield Served(app, f"http://127.0.0.1:{port}", server)
        finally:
            server.should_exit = True


@dataclass
class Received:
    """What an SSE client got: every event, in order."""

    events: list[ServerSentEvent] = field(default_factory=list)

    @property
    def journaled(self) -> list[dict[str, Any]]:
        """The journal events received (tokens, ends and errors left out)."""
        return [
            msgspec.json.decode(e.data)
            for e in self.events
            if e.event not in ("model_delta", "end", "stream_error")
        ]

    @property
    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.journaled]

    @property
    def end(self) -> dict[str, Any] | None:
        ends = [e for e in self.events if e.event == "end"]
        return msgspec.json.decode(ends[-1].data) if ends else None

    @property
    def last_id(self) -> str | None:
        ids = [e.id for e in self.events if e.id is not None]
        return ids[-1] if ids else None


async def read_sse(
    client: httpx.AsyncClient,
    url: str,
    *,
    into: Received | None = None,
    headers: dict[str, str] | None = None,
    stop_after: int | None = None,
) -> Received:
    """Read the stream at ``url`` until it ends (or ``stop_after`` journal events)."""
    got = into or Received()
    parser = SSEParser()
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for chunk in response.aiter_raw():
            for event in parser.feed(chunk):
                got.events.append(event)
                if event.event == "end":
                    return got
                if stop_after is not None and len(got.journaled) >= stop_after:
                    return got
    return got
