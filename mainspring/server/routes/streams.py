"""Routes: live streams of a run (SSE and WebSocket) and of a tenant's runs (docs/server.md)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from starlette.routing import Route
from starlette.types import Receive, Send
from starlette.types import Scope as AsgiScope

from ...errors import RunNotFoundError
from ..auth import Caller, caller_with, require
from ..context import ServerState, server_state
from ..keys.protocol import Scope
from ..schemas import AUTH, MAX_SEQ, errors
from ..streams import EventStreamResponse, StreamHub
from ..streams.sse import (
    KEEP_ALIVE,
    frame,
    item_chunks,
    json_bytes,
    send_subscription,
    until_disconnect,
)
from ..streams.watch import watch_runs
from ..streams.ws import pump, until_closed
from ..views import run_json

router = APIRouter(tags=["streams"])

HUB = "stream_hub"

After = Annotated[int, Query(ge=0, le=MAX_SEQ, description="send the events after this seq")]
Tokens = Annotated[bool, Query(description="include model_delta events (live tokens)")]
Until = Annotated[
    Literal["end", "park"], Query(description="end the stream when the run ends, or parks")
]


def hub_of(state: ServerState) -> StreamHub:
    """The server's stream hub, made on first use and closed with the server."""
    hub: StreamHub | None = state.extras.get(HUB)
    if hub is None:
        hub = state.extras[HUB] = StreamHub(state.runtime, buffer=state.config.stream_buffer)
        if not state.extras.get(f"{HUB}_closes"):
            state.extras[f"{HUB}_closes"] = True
            state.extras.setdefault("on_stop", []).append(_close)
    return hub


async def _close(state: ServerState) -> None:
    hub: StreamHub | None = state.extras.pop(HUB, None)
    if hub is not None:
        hub.close()


def close_streams(app: FastAPI) -> None:
    """End every open stream of ``app`` now (clients reconnect with their last id; a new
    request gets a new hub): call it as the server begins to stop, or a graceful shutdown
    waits for streams that never end (e.g. from ``uvicorn.Server.handle_exit``; or give
    uvicorn ``timeout_graceful_shutdown``)."""
    hub: StreamHub | None = app.state.mainspring.extras.pop(HUB, None)
    if hub is not None:
        hub.close()


def _resume_point(after: int, last_event_id: str | None) -> int:
    """``after``, or the client's ``Last-Event-ID`` if that is later (a reconnect)."""
    if last_event_id and last_event_id.strip().isdigit():
        # An id past any journal (a client's garbage) is capped, not sent to the store.
        return max(after, min(int(last_event_id.strip()), MAX_SEQ))
    return after


class _RunStream:
    """``GET /v1/runs/{run_id}/stream`` as a raw ASGI endpoint (the route below only
    documents it): FastAPI's request handling keeps ~20 KB per request alive for as long
    as its response lasts, most of an idle stream's cost (benchmarks/server_streams.py).
    The same checks, in the same order, with the app's error answers."""

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        run_id: str = request.path_params["run_id"]
        after, tokens, until = _stream_params(request)
        caller = await caller_with(request, Scope.READ)
        await caller.api.get_run(run_id)  # another tenant's run, or none: 404 before streaming
        state = server_state(request)
        start = _resume_point(after, request.headers.get("last-event-id"))
        del request, caller  # nothing of the request outlives its checks
        config = state.config
        sub = hub_of(state).subscribe(
            run_id, after=start, tokens=tokens, until_park=until == "park",
            heartbeat=config.heartbeat, listen=until_disconnect(receive),
        )  # fmt: skip
        try:
            await send_subscription(scope, send, sub, stall_timeout=config.stall_timeout)
        finally:
            sub.close()


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _stream_params(request: Request) -> tuple[int, bool, str]:
    """``after``, ``tokens`` and ``until`` of a stream request, checked as FastAPI would."""
    query = request.query_params
    problems: list[dict[str, Any]] = []
    after_text = query.get("after", "0")
    after = int(after_text) if after_text.isdigit() else -1
    if not 0 <= after <= MAX_SEQ:
        message = f"Input should be a valid integer >= 0 and <= {MAX_SEQ}"
        problems.append(_problem("after", message, after_text))
    tokens_text = query.get("tokens", "true").lower()
    if tokens_text not in _TRUE | _FALSE:
        problems.append(_problem("tokens", "Input should be a valid boolean", tokens_text))
    until = query.get("until", "end")
    if until not in ("end", "park"):
        problems.append(_problem("until", "Input should be 'end' or 'park'", until))
    if problems:
        raise RequestValidationError(problems)
    return after, tokens_text in _TRUE, until


def _problem(name: str, message: str, value: str) -> dict[str, Any]:
    return {"type": "value_error", "loc": ("query", name), "msg": message, "input": value}


# Served by _RunStream (added first, so it is the route that answers).
router.routes.append(
    Route("/v1/runs/{run_id}/stream", _RunStream(), methods=["GET"], include_in_schema=False)
)


@router.get(
    "/v1/runs/{run_id}/stream",
    response_class=EventStreamResponse,
    status_code=200,  # FastAPI cannot read it from this class (its /openapi.json fails)
    summary="A run's events as Server-Sent Events, from the journal then live",
    responses={200: {"content": {"text/event-stream": {}}}, **errors(*AUTH, 404)},
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
    sub = hub_of(state).subscribe(
        run_id,
        after=_resume_point(after, header),
        tokens=tokens,
        until_park=until == "park",
        heartbeat=config.heartbeat,
        listen=until_closed(websocket),
    )
    try:
        await pump(websocket, sub, stall_timeout=config.stall_timeout)
    finally:
        sub.close()


@router.get(
    "/v1/watch",
    response_class=EventStreamResponse,
    status_code=200,  # FastAPI cannot read it from this class (its /openapi.json fails)
    summary="The caller's runs as they change (SSE `run` events): the console's live list",
    responses={200: {"content": {"text/event-stream": {}}}, **errors(*AUTH)},
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
