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
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ...errors import StoreError
from ...events import Event, EventKind, jsonable_or_repr
from .hub import End, Item, Subscription

if TYPE_CHECKING:
    from .keycheck import KeyCheck

log = logging.getLogger("mainspring.server.streams")

KEEP_ALIVE = b": keep-alive\n\n"
HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
RAW_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    *((k.encode(), v.encode()) for k, v in HEADERS.items()),
]

_encoder = msgspec.json.Encoder()


def json_bytes(value: Any) -> bytes:
    """Compact JSON (one line: an SSE ``data`` field)."""
    return _encoder.encode(value)


def event_json(event: Event) -> bytes:
    """The event's JSON (``Event.to_json``), encoded once for all its subscribers (a
    small cache of the newest events; it holds each, so an id is never reused)."""
    hit = _encoded.get(id(event))
    if hit is not None and hit[0] is event:
        return hit[1]
    data = _event_json(event)
    _encoded[id(event)] = (event, data)
    if len(_encoded) > ENCODED:
        del _encoded[next(iter(_encoded))]  # the oldest
    return data


ENCODED = 1024
_encoded: dict[int, tuple[Event, bytes]] = {}


def _event_json(event: Event) -> bytes:
    # An in-memory store keeps objects JSON cannot hold: those go as their repr rather
    # than ending the stream.
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


#: The last frame of a stream whose store failed: what to do, not the store's address (the
#: log has the details).
STORE_FAILED = frame(
    "stream_error",
    json_bytes(
        {
            "error": {
                "code": "store_unavailable",
                "message": "the store is unavailable; reconnect with your last event id",
            }
        }
    ),
)


#: The last frame of a stream whose key stopped verifying (revoked, or its scope gone).
UNAUTHORIZED = frame(
    "stream_error",
    json_bytes(
        {
            "error": {
                "code": "unauthorized",
                "message": "the API key is unknown or revoked; reconnect with a valid key",
            }
        }
    ),
)


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
                chunk = b"".join(map(item_frame, batch)) if batch else KEEP_ALIVE
                del batch  # an idle stream holds no events
                yield chunk
                del chunk
        except StoreError as exc:
            log.warning("a stream ended: the store failed: %s", exc)
            yield STORE_FAILED


def until_disconnect(receive: Receive) -> Callable[[], Awaitable[None]]:
    """Returns when the client has gone (what :func:`send_stream`'s watching task awaits)."""

    async def listen() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass  # a request body's rest: nothing a stream reads

    return listen


async def send_stream(
    scope: Scope,
    receive: Receive,
    send: Send,
    chunks: AsyncGenerator[bytes, None],
    *,
    stall_timeout: float,
    headers: list[tuple[bytes, bytes]] | None = None,
    watch_disconnect: bool = True,
) -> str:
    """Send ``chunks`` as a ``text/event-stream`` answer until they end, the client leaves
    or stalls: returns which ("end", "disconnect", "stalled"). ``watch_disconnect``: read
    the connection in a task of its own meanwhile (not needed when ``chunks`` comes from a
    hub subscriber given ``listen=receive``: it ends when the client goes)."""
    if not watch_disconnect:
        return await _send_all(scope, send, chunks, stall_timeout, headers)
    why = "end"
    async with anyio.create_task_group() as tg:

        async def disconnected() -> None:
            nonlocal why
            await until_disconnect(receive)()
            why = "disconnect"
            tg.cancel_scope.cancel()

        tg.start_soon(disconnected)
        ended = await _send_all(scope, send, chunks, stall_timeout, headers)
        if why == "end":
            why = ended
        tg.cancel_scope.cancel()
    return why


async def _send_all(
    scope: Scope,
    send: Send,
    chunks: AsyncGenerator[bytes, None],
    stall_timeout: float,
    headers: list[tuple[bytes, bytes]] | None,
) -> str:
    try:
        with anyio.fail_after(stall_timeout):
            await send(
                {"type": "http.response.start", "status": 200, "headers": headers or RAW_HEADERS}
            )
        async with aclosing(chunks):
            async for chunk in chunks:
                with anyio.fail_after(stall_timeout):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                del chunk  # not kept while the stream is idle
        with anyio.fail_after(stall_timeout):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except TimeoutError:
        # The client left its socket undrained: drop it. The server closes the
        # connection (the response stays incomplete: the client sees it cut).
        log.info("dropped a stream client that stopped reading (%s)", scope.get("path"))
        return "stalled"
    return "end"


async def start_stream(scope: Scope, send: Send, *, stall_timeout: float) -> bool:
    """Send the start of a ``text/event-stream`` answer; False if the client stalled (it is
    dropped: the caller sends nothing more)."""
    try:
        with anyio.fail_after(stall_timeout):
            await send({"type": "http.response.start", "status": 200, "headers": RAW_HEADERS})
    except TimeoutError:
        log.info("dropped a stream client that stopped reading (%s)", scope.get("path"))
        return False
    return True


async def send_subscription(
    scope: Scope,
    send: Send,
    sub: Subscription,
    *,
    stall_timeout: float,
    started: bool = False,
    check: KeyCheck | None = None,
) -> str:
    """Send a hub subscription as a ``text/event-stream`` answer (its body only if
    ``started``: :func:`start_stream` sent the start), in this one coroutine (an idle
    stream is this frame and the subscription's wait: see ``hub.Subscription``), and close
    it; returns why it stopped: "end" (the run's end, the hub closed, the client gone), or
    "stalled". A store failure ends it with an ``error`` event (the client reconnects); a
    key that ``check`` finds revoked, with an ``unauthorized`` one (``keycheck.py``)."""
    try:
        if not started and not await start_stream(scope, send, stall_timeout=stall_timeout):
            return "stalled"
        failed = False
        while not failed:
            try:
                batch = await sub.next()
            except StoreError as exc:
                log.warning("a stream ended: the store failed: %s", exc)
                chunk, failed = STORE_FAILED, True
            else:
                if batch is None:
                    break
                if check is not None and not await check.valid(idle=not batch):
                    chunk, failed = UNAUTHORIZED, True
                else:
                    chunk = b"".join(map(item_frame, batch)) if batch else KEEP_ALIVE
                del batch  # an idle stream holds no events
            with anyio.fail_after(stall_timeout):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            del chunk
        with anyio.fail_after(stall_timeout):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except TimeoutError:
        # The client left its socket undrained: drop it. The server closes the
        # connection (the response stays incomplete: the client sees it cut).
        log.info("dropped a stream client that stopped reading (%s)", scope.get("path"))
        return "stalled"
    finally:
        sub.close()
    return "end"


class EventStreamResponse(StreamingResponse):
    """``text/event-stream`` of ``chunks`` (see :func:`send_stream`), for FastAPI routes."""

    def __init__(
        self,
        chunks: AsyncGenerator[bytes, None],
        status_code: int = 200,  # (FastAPI reads the default for the OpenAPI document)
        *,
        stall_timeout: float = 30.0,
    ) -> None:
        super().__init__(chunks, status_code, media_type="text/event-stream", headers=HEADERS)
        self.chunks = chunks
        self.stall_timeout = stall_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_stream(
            scope, receive, send, self.chunks,
            stall_timeout=self.stall_timeout, headers=self.raw_headers,
        )  # fmt: skip
