"""Server-Sent Events as a raw ASGI response: frames, keep-alives, and dropping bad clients.

Written here rather than taken from sse-starlette, whose send does not time out on a
client that stopped reading (sse-starlette #173) and whose disconnect handling has lost
clients before (#89). Each body chunk is sent under ``stall_timeout``: a client that
leaves its socket undrained that long is dropped (the server's transport buffers at most
its high-water mark meanwhile, so one slow client cannot grow the server's memory); a
disconnect ends the stream at once. Neither touches the run.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

import anyio
import msgspec
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ...errors import StoreError
from ...events import Event, EventKind, jsonable_or_repr
from .hub import End, Item

log = logging.getLogger("mainspring.server.streams")

KEEP_ALIVE = b": keep-alive\n\n"
HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}

_encoder = msgspec.json.Encoder()


def json_bytes(value: Any) -> bytes:
    """Compact JSON (one line: an SSE ``data`` field)."""
    return _encoder.encode(value)


def event_json(event: Event) -> bytes:
    """The event's JSON (``Event.to_json``); an in-memory store keeps objects JSON cannot
    hold: those are sent as their repr rather than ending the stream."""
    try:
        return _encoder.encode(event.to_json())
    except Exception:
        seq, kind, ts = event.seq, str(event.kind), event.ts
        data = jsonable_or_repr(event.data)
        return _encoder.encode({"run_id": event.run_id, "seq": seq, "kind": kind, "ts": ts,
                                "data": data})  # fmt: skip


def frame(event: str, data: bytes, id: int | None = None) -> bytes:
    head = b"id: %d\n" % id if id is not None else b""
    return head + b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def item_frame(item: Item) -> bytes:
    if isinstance(item, End):
        return frame("end", json_bytes({"status": item.status, "seq": item.seq}))
    seq = None if item.kind is EventKind.MODEL_DELTA else item.seq  # tokens are not journaled
    return frame(str(item.kind), event_json(item), seq)


async def item_chunks(batches: AsyncGenerator[list[Item], None]) -> AsyncGenerator[bytes, None]:
    """The SSE bytes of a hub subscription: one chunk per batch, a keep-alive when idle; a
    store failure ends the stream with an ``error`` event (the client reconnects)."""
    async with aclosing(batches):
        try:
            async for batch in batches:
                yield b"".join(map(item_frame, batch)) if batch else KEEP_ALIVE
        except StoreError as exc:
            log.warning("a stream ended: the store failed: %s", exc)
            error = {"code": "store_unavailable", "message": f"the store failed: {exc}; retry"}
            yield frame("error", json_bytes({"error": error}))


class EventStreamResponse(StreamingResponse):
    """``text/event-stream`` of ``chunks``; see the module's docstring."""

    def __init__(
        self,
        chunks: AsyncGenerator[bytes, None],
        *,
        stall_timeout: float,
        on_close: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(chunks, media_type="text/event-stream", headers=HEADERS)
        self.chunks = chunks
        self.stall_timeout = stall_timeout
        self.on_close = on_close  # told why the stream ended: "end", "disconnect", "stalled"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        why = "end"
        async with anyio.create_task_group() as tg:

            async def disconnected() -> None:
                nonlocal why
                while (await receive())["type"] != "http.disconnect":
                    pass
                why = "disconnect"
                tg.cancel_scope.cancel()

            tg.start_soon(disconnected)
            try:
                with anyio.fail_after(self.stall_timeout):
                    await send(
                        {
                            "type": "http.response.start",
                            "status": self.status_code,
                            "headers": self.raw_headers,
                        }
                    )
                async with aclosing(self.chunks):
                    async for chunk in self.chunks:
                        with anyio.fail_after(self.stall_timeout):
                            await send(
                                {"type": "http.response.body", "body": chunk, "more_body": True}
                            )
                with anyio.fail_after(self.stall_timeout):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
            except TimeoutError:
                # The client left its socket undrained: drop it. The server closes the
                # connection (the response stays incomplete: the client sees it cut).
                why = "stalled"
                log.info("dropped a stream client that stopped reading (%s)", scope.get("path"))
            tg.cancel_scope.cancel()
        if self.on_close is not None:
            self.on_close(why)
