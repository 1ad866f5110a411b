"""Routes: live streams of a run (SSE and WebSocket) and of a tenant's runs (docs/server.md)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable
from contextlib import aclosing
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from starlette.requests import HTTPConnection
from starlette.routing import Route
from starlette.types import Receive, Send
from starlette.types import Scope as AsgiScope

from ...errors import RunNotFoundError
from ..auth import Caller, caller_with, require
from ..config import ServerConfig
from ..context import ServerState, server_state
from ..detach import detach
from ..keys.protocol import Scope
from ..schemas import AUTH, MAX_SEQ, errors
from ..streams import EventStreamResponse, StreamHub
from ..streams.keycheck import KeyCheck, key_check
from ..streams.sse import (
    KEEP_ALIVE,
    UNAUTHORIZED,
    frame,
    item_chunks,
    json_bytes,
    send_subscription,
    start_stream,
)
from ..streams.watch import watch_runs
from ..streams.ws import pump
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
        config = state.config
        hub = state.extras[HUB] = StreamHub(
            state.runtime,
            buffer=config.stream_buffer,
            poll=config.stream_poll,
            safety_poll=config.stream_safety_poll,
        )
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


def parse_seq(text: str) -> int | None:
    """A seq a client gave: ASCII digits up to :data:`MAX_SEQ`, else None. (Not
    ``str.isdigit``: it takes "²", which ``int`` refuses, and "٣", which it reads as 3.)"""
    if not (text.isascii() and text.isdecimal()) or len(text.lstrip("0")) > len(str(MAX_SEQ)):
        return None
    seq = int(text)
    return seq if seq <= MAX_SEQ else None


def _resume_point(after: int, last_event_id: str | None) -> int:
    """``after``, or the client's ``Last-Event-ID`` if that is later (a reconnect). An id
    that is not a seq is ignored, as the SSE spec has it: the stream starts from ``after``."""
    resumed = parse_seq(last_event_id.strip()) if last_event_id else None
    return after if resumed is None else max(after, resumed)


class _RunStream:
    """``GET /v1/runs/{run_id}/stream`` as a raw ASGI endpoint (the route below only
    documents it): FastAPI's request handling keeps ~20 KB per request alive for as long
    as its response lasts, most of an idle stream's cost (benchmarks/server_streams.py).
    The same checks, in the same order, with the app's error answers; then the start of
    the answer goes through the middleware (its headers), and the stream itself runs
    detached from them (``detach.py``): an idle stream keeps none of their frames."""

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        run_id: str = request.path_params["run_id"]
        after, tokens, until = _stream_params(request)
        caller = await caller_with(request, Scope.READ)
        check = key_check(request, Scope.READ)  # checked again while the stream lasts
        state = server_state(request)
        start = _resume_point(after, request.headers.get("last-event-id"))
        del request  # not kept while the store answers (a crowd of streams opening at once)
        await caller.api.get_run(run_id)  # another tenant's run, or none: 404 before streaming
        del caller  # nothing of the request outlives its checks
        config = state.config
        if not await start_stream(scope, send, stall_timeout=config.stall_timeout):
            return
        follow = _Follow(
            hub_of(state), run_id, start, tokens, until == "park", config, scope, check
        )
        if not detach(scope, follow):
            await follow(receive, send)


class _Follow:
    """The body of a run's stream: subscribe, send until the end; ``receive`` and ``send``
    the server's own when detached (the client's disconnect arrives on either)."""

    __slots__ = ("after", "check", "config", "hub", "run_id", "scope", "tokens", "until_park")

    def __init__(
        self,
        hub: StreamHub,
        run_id: str,
        after: int,
        tokens: bool,
        until_park: bool,
        config: ServerConfig,
        scope: AsgiScope,
        check: KeyCheck | None,
    ) -> None:
        self.hub, self.run_id, self.after, self.tokens = hub, run_id, after, tokens
        self.until_park, self.config, self.scope = until_park, config, scope
        self.check = check

    def __call__(self, receive: Receive, send: Send) -> Awaitable[str]:
        """The stream, as one coroutine (awaited at once: it closes the subscription)."""
        config = self.config
        sub = self.hub.subscribe(
            self.run_id, after=self.after, tokens=self.tokens, until_park=self.until_park,
            heartbeat=config.heartbeat, listen=receive,
        )  # fmt: skip
        return send_subscription(
            self.scope, send, sub, stall_timeout=config.stall_timeout, started=True,
            check=self.check,
        )  # fmt: skip


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _stream_params(request: HTTPConnection) -> tuple[int, bool, str]:
    """``after``, ``tokens`` and ``until`` of a stream request (SSE or WebSocket), checked
    as FastAPI would."""
    query = request.query_params
    problems: list[dict[str, Any]] = []
    after_text = query.get("after", "0")
    after = parse_seq(after_text)
    if after is None:
        message = f"Input should be a seq: an integer from 0 to {MAX_SEQ} in ASCII digits"
        problems.append(_problem("after", message, after_text))
    tokens_text = query.get("tokens", "true").lower()
    if tokens_text not in _TRUE | _FALSE:
        message = "Input should be a boolean: true or false (also 1/0, yes/no, on/off)"
        problems.append(_problem("tokens", message, tokens_text))
    until = query.get("until", "end")
    if until not in ("end", "park"):
        problems.append(_problem("until", "Input should be 'end' or 'park'", until))
    if problems or after is None:
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
async def stream_run_ws(websocket: WebSocket, run_id: str) -> None:
    """The stream's events as WebSocket text frames (the query of the SSE route). A refusal
    is a close after the handshake, with code 4000 + the HTTP status (4401, 4403, 4404,
    4422) and the reason. The query is read here, not by FastAPI: it would refuse a bad
    one before the handshake (an HTTP 403 that tells the client nothing)."""
    await websocket.accept()
    try:
        after, tokens, until = _stream_params(websocket)
    except RequestValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(map(str, problem["loc"]))
        await websocket.close(4422, f"invalid request: {where}: {problem['msg']}"[:120])
        return
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
        listen=websocket.receive,
    )
    try:
        check = key_check(websocket, Scope.READ)  # checked again while the stream lasts
        await pump(websocket, sub, stall_timeout=config.stall_timeout, check=check)
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
    check = key_check(request, Scope.READ)  # checked again while the stream lasts

    async def chunks() -> AsyncGenerator[bytes, None]:
        runs = watch_runs(
            hub.watch, caller.api, closed=lambda: hub.closed, heartbeat=state.config.heartbeat
        )
        async with aclosing(runs):
            async for batch in runs:
                if check is not None and not await check.valid(idle=not batch):
                    yield UNAUTHORIZED  # the key was revoked: the stream ends
                    return
                if not batch:
                    yield KEEP_ALIVE
                else:
                    yield b"".join(frame("run", json_bytes(run_json(r))) for r in batch)

    return EventStreamResponse(chunks(), stall_timeout=state.config.stall_timeout)
