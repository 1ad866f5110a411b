"""The WebSocket form of a run's stream: the hub's items as JSON text frames.

Each frame is ``{"id": seq | null, "event": kind, "data": Event.to_json()}`` (``id`` null
for tokens); the last is ``{"id": null, "event": "end", "data": {"status", "seq"}}``, then
a normal close. A send that does not complete within ``stall_timeout`` drops the client;
the server's WebSocket pings find dead peers; client messages are ignored.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect

from ...errors import StoreError
from ...events import EventKind
from .hub import End, Item, Subscription
from .sse import event_json, json_bytes

if TYPE_CHECKING:
    from .keycheck import KeyCheck

log = logging.getLogger("mainspring.server.streams")


def ws_frame(item: Item) -> str:
    if isinstance(item, End):
        data = json_bytes({"status": item.status, "seq": item.seq})
        return '{"id":null,"event":"end","data":' + data.decode() + "}"
    seq = "null" if item.kind is EventKind.MODEL_DELTA else str(item.seq)
    kind = json_bytes(str(item.kind)).decode()
    return '{"id":' + seq + ',"event":' + kind + ',"data":' + event_json(item).decode() + "}"


async def pump(
    websocket: WebSocket,
    sub: Subscription,
    *,
    stall_timeout: float,
    check: KeyCheck | None = None,
) -> str:
    """Send a hub subscription (given ``listen=websocket.receive``) to an accepted WebSocket until
    the stream ends, the client leaves or stalls; returns why it stopped: "end",
    "disconnect", "stalled", "error" or "unauthorized" (``check`` found the key revoked:
    closed with 4401)."""
    try:
        while (batch := await sub.next()) is not None:
            if check is not None and not await check.valid(idle=not batch):
                with anyio.move_on_after(stall_timeout):
                    await websocket.close(4401, "the API key is unknown or revoked")
                return "unauthorized"
            for item in batch:  # no keep-alive frames: the server's pings do that
                with anyio.fail_after(stall_timeout):
                    await websocket.send_text(ws_frame(item))
            del batch  # an idle stream holds no events
        with anyio.fail_after(stall_timeout):
            await websocket.close(1000)
    except TimeoutError:
        log.info("dropped a WebSocket stream client that stopped reading")
        return "stalled"
    except StoreError as exc:
        log.warning("a stream ended: the store failed: %s", exc)
        with anyio.move_on_after(stall_timeout):
            await websocket.close(1011, "the store failed; reconnect with your last id")
        return "error"
    except (WebSocketDisconnect, OSError):  # an ASGI server says so either way
        return "disconnect"  # gone while we sent
    return "end"
