"""A run's live events over Server-Sent Events, resumed after every disconnect.

The server gives each journaled event its ``seq`` as the SSE id and, on a reconnect with
``Last-Event-ID: N``, sends every event after ``N`` from the journal before the live ones
(docs/server.md, "Streams"). This iterator keeps the last ``seq`` it handed out, so a
dropped connection, a server restart or a stall costs the caller nothing: it reconnects
with that id, skips anything at or below it (none twice) and goes on (none lost). Only a
run's ``model_delta`` tokens sent while it was disconnected are gone: they are never
journaled, and the ``effect_finished`` event that follows carries the whole answer.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote as _quote

import anyio
import httpx
import orjson

from ..events import Event, EventKind
from ..models.sse import aiter_sse
from ..status import RunStatus
from .errors import ClientError, StreamLostError, error_from_response
from .models import event_from_json

_EVENT_NAMES = frozenset(k.value for k in EventKind) | {"message"}
#: Answers worth a reconnect: the server or a proxy in front of it is restarting.
_TRANSIENT = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Reconnect:
    """How a stream retries: ``attempts`` connections in a row that fail (or end before the
    run's end) before it gives up, waiting ``backoff`` seconds after the first, doubled
    after each (jittered, at most ``max_backoff``; a server's SSE ``retry:`` raises the
    first wait). Any event received starts the count again. ``idle`` seconds without a
    byte (the server sends a keep-alive every 15 s) count as a lost connection."""

    attempts: int = 8
    backoff: float = 0.2
    max_backoff: float = 5.0
    idle: float = 45.0

    def delay(self, failures: int, server_hint: float | None) -> float:
        base = max(self.backoff, server_hint or 0.0)
        wait = min(self.max_backoff, base * 2 ** (failures - 1))
        return float(wait * random.uniform(0.5, 1.0))  # jitter, not a secret


class RunStream:
    """``async for event in client.stream(run_id)``: events after ``after``, until the run
    ends (or parks, with ``until="park"``); see the module's docstring.

    ``last_seq`` is the last journaled event handed out (give it back as ``after`` to go
    on later), ``end`` the server's closing word (``{"status", "seq"}``) once it came,
    ``reconnects`` how many times the connection was made again.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        run_id: str,
        *,
        after: int = 0,
        tokens: bool = False,
        until: str | None = None,
        reconnect: Reconnect | None = None,
    ) -> None:
        self.run_id = run_id
        self.last_seq = after
        self.end: dict[str, Any] | None = None
        self.reconnects = 0
        self._http = http
        self._tokens = tokens
        self._until = until
        self._reconnect = reconnect or Reconnect()
        self._server_retry: float | None = None
        self._events = self._follow()

    @property
    def status(self) -> RunStatus | None:
        """The run's status the stream ended on (None while it goes on)."""
        return None if self.end is None else RunStatus(self.end["status"])

    def __aiter__(self) -> RunStream:
        return self

    async def __anext__(self) -> Event:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()

    async def __aenter__(self) -> RunStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _follow(self) -> AsyncGenerator[Event, None]:
        failures = 0
        while True:
            try:
                async for event in self._connect():
                    failures = 0
                    yield event
                if self.end is not None:
                    return
                problem = "the server closed the stream before the run's end"
            except httpx.TransportError as exc:  # refused, reset, idle past its timeout
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except ClientError as exc:
                if exc.status not in _TRANSIENT:
                    raise  # not found, no key, ...: asking again changes nothing
                problem = f"HTTP {exc.status}: {exc.message}"
            failures += 1
            if failures > self._reconnect.attempts:
                raise StreamLostError(
                    0,
                    "stream_lost",
                    f"lost the event stream of run {self.run_id!r} and could not get it back "
                    f"in {self._reconnect.attempts} attempts (last: {problem}); the last event "
                    f"received was seq {self.last_seq}: continue with "
                    f"stream({self.run_id!r}, after={self.last_seq})",
                    {"run_id": self.run_id, "last_seq": self.last_seq},
                )
            await anyio.sleep(self._reconnect.delay(failures, self._server_retry))
            self.reconnects += 1

    async def _connect(self) -> AsyncGenerator[Event, None]:
        params: dict[str, str | int] = {
            "after": self.last_seq,
            "tokens": "true" if self._tokens else "false",
        }
        if self._until:
            params["until"] = self._until
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_seq:
            headers["Last-Event-ID"] = str(self.last_seq)
        timeout = httpx.Timeout(self._http.timeout.connect, read=self._reconnect.idle)
        path = f"/v1/runs/{_quote(self.run_id, safe='')}/stream"
        async with self._http.stream(
            "GET", path, params=params, headers=headers, timeout=timeout
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                raise error_from_response(response)
            async for sse in aiter_sse(response.aiter_bytes()):
                if sse.retry is not None:
                    self._server_retry = sse.retry / 1000
                if sse.event == "end":
                    self.end = orjson.loads(sse.data)
                    return
                if sse.event in ("stream_error", "error"):  # the server gave up on this stream
                    body = orjson.loads(sse.data)
                    error = body.get("error", body) if isinstance(body, dict) else {}
                    code = str(error.get("code", "error"))
                    status = 503 if code == "store_unavailable" else 500  # 503: reconnect
                    raise ClientError(status, code, str(error.get("message", body)))
                if sse.event not in _EVENT_NAMES:
                    continue  # a kind of message this client does not know yet
                event = event_from_json(orjson.loads(sse.data))
                if event.kind is EventKind.MODEL_DELTA:
                    if self._tokens:
                        yield event
                    continue
                if event.seq <= self.last_seq:
                    continue  # sent again after a reconnect: handed out once already
                self.last_seq = event.seq
                yield event
