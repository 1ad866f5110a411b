"""Routes: live streams of a run (SSE and WebSocket) and of a tenant's runs (docs/server.md)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, WebSocket

from ...errors import RunNotFoundError
from ..auth import Caller, caller_with, require
from ..context import ServerState, server_state
from ..keys.protocol import Scope
from ..streams import EventStreamResponse, StreamHub
from ..streams.sse import KEEP_ALIVE, frame, item_chunks, json_bytes
from ..streams.watch import watch_runs
from ..streams.ws import pump
from ..views import run_json

router = APIRouter(tags=["streams"])

HUB = "stream_hub"

After = Annotated[int, Query(ge=0, description="send the events after this seq")]
Tokens = Annotated[bool, Query(description="include model_delta events (live tokens)")]
Until = Annotated[
    Literal["end", "park"], Query(description="end the stream when the run ends, or parks")
]


def hub_of(state: ServerState) -> StreamHub:
    """The server's stream hub, made on first use and closed with the server."""
    hub: StreamHub | None = state.extras.get(HUB)
    if hub is None:
        hub = state.extras[HUB] = StreamHub(state.runtime, buffer=state.config.stream_buffer)

        async def close(state: ServerState) -> None:
            hub_of(state).close()

        state.extras.setdefault("on_stop", []).append(close)
    return hub


def _resume_point(after: int, last_event_id: str | None) -> int:
    """``after``, or the client's ``Last-Event-ID`` if that is later (a reconnect)."""
    if last_event_id and last_event_id.strip().isdigit():
        return max(after, int(last_event_id.strip()))
    return after


@router.get(
    "/v1/runs/{run_id}/stream",
    response_class=EventStreamResponse,
    status_code=200,  # FastAPI cannot read it from this class (its /openapi.json fails)
    summary="A run's events as Server-Sent Events, from the journal then live",
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_run(
    request: Request,
    run_id: str,
    caller: Annotated[Caller, Depends(require(Scope.READ))],
    after: After = 0,
    tokens: Tokens = True,
    until: Until = "end",
    last_event_id: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> EventStreamResponse:
    await caller.api.get_run(run_id)  # another tenant's run, or none: 404 before streaming
    state = server_state(request)
    config = state.config
    batches = hub_of(state).follow(
        run_id,
        after=_resume_point(after, last_event_id),
        tokens=tokens,
        until_park=until == "park",
        heartbeat=config.heartbeat,
    )
    return EventStreamResponse(item_chunks(batches), stall_timeout=config.stall_timeout)


@router.websocket("/v1/runs/{run_id}/ws")
async def stream_run_ws(
    websocket: WebSocket,
    run_id: str,
    after: After = 0,
    tokens: Tokens = True,
    until: Until = "end",
) -> None:
    """The stream's events as WebSocket text frames. A refusal is a close after the
    handshake, with code 4000 + the HTTP status (4401, 4403, 4404) and the reason."""
    await websocket.accept()
    try:
        caller = await caller_with(websocket, Scope.READ)
        await caller.api.get_run(run_id)
    except HTTPException as exc:
        await websocket.close(4000 + exc.status_code, str(exc.detail)[:120])
        return
    except RunNotFoundError as exc:
        await websocket.close(4404, str(exc)[:120])
        return
    state = server_state(websocket)
    config = state.config
    header = websocket.headers.get("last-event-id")
    batches = hub_of(state).follow(
        run_id,
        after=_resume_point(after, header),
        tokens=tokens,
        until_park=until == "park",
        heartbeat=config.heartbeat,
    )
    await pump(websocket, batches, stall_timeout=config.stall_timeout)


@router.get(
    "/v1/watch",
    response_class=EventStreamResponse,
    status_code=200,  # FastAPI cannot read it from this class (its /openapi.json fails)
    summary="The caller's runs as they change (SSE `run` events): the console's live list",
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def watch(
    request: Request, caller: Annotated[Caller, Depends(require(Scope.READ))]
) -> EventStreamResponse:
    state = server_state(request)
    hub = hub_of(state)

    async def chunks() -> AsyncGenerator[bytes, None]:
        runs = watch_runs(
            hub.watch, caller.api, closed=lambda: hub.closed, heartbeat=state.config.heartbeat
        )
        async with aclosing(runs):
            async for batch in runs:
                if not batch:
                    yield KEEP_ALIVE
                else:
                    yield b"".join(frame("run", json_bytes(run_json(r))) for r in batch)

    return EventStreamResponse(chunks(), stall_timeout=state.config.stall_timeout)
