"""A real HTTP/1.1 server on 127.0.0.1 that speaks the providers' wire formats, for tests
and benchmarks.

It runs an asyncio server in a thread of its own (:func:`start_wire_server`), so a
test's event loop and a benchmark's sync code both reach it over real TCP. Each
path answers a queue of :class:`Reply` (the last one repeats) or a function of
the :class:`Received` request; every request is recorded with its raw headers and
body, and every accepted TCP connection is counted. A reply can inject faults: a
status with headers and body, a delay before the headers, a delay per SSE event,
an end after N events (cleanly: the stream just stops) or a dropped connection
after N events (mid-body). :func:`fast_chat_server` answers one fixed chat
completion as fast as it can, after an optional latency drawn per request.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WIRE = Path(__file__).parent / "wire"
_EVENT_END = re.compile(rb"(?<=\n\n)|(?<=\r\n\r\n)|(?<=\r\r)")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Overloaded",
}


def fixture(name: str) -> bytes:
    return (WIRE / name).read_bytes()


def fixture_json(name: str) -> Any:
    return json.loads(fixture(name))


@dataclass
class Reply:
    """What the server answers: a body, or SSE ``events`` sent one chunk each, and faults."""

    status: int = 200
    body: bytes = b""
    events: list[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line
    event_delay: float = 0.0  # seconds before each event
    end_after: int | None = None  # send this many events, then end the body cleanly
    drop_after: int | None = None  # send this many events, then close the connection
    close: bool = False  # close the connection after this reply (no keep-alive)

    @classmethod
    def json(cls, data: Any, status: int = 200, **kw: Any) -> Reply:
        return cls(status, json.dumps(data).encode(), **kw)

    @classmethod
    def sse(cls, raw: bytes, **kw: Any) -> Reply:
        """A stream from raw SSE bytes, cut into events after each blank line."""
        return cls(events=[e for e in _EVENT_END.split(raw) if e], **kw)

    @classmethod
    def file(cls, name: str, **kw: Any) -> Reply:
        """A fixture from tests/wire: ``.sse`` as a stream, anything else as the body."""
        if name.endswith(".sse"):
            return cls.sse(fixture(name), **kw)
        return cls(body=fixture(name), **kw)

    @classmethod
    def error(cls, fixtures: str, case: str, **kw: Any) -> Reply:
        """An error reply from a ``*_errors.json`` fixture: its status, headers and body."""
        spec = fixture_json(fixtures)[case]
        return cls.json(spec["body"], spec["status"], headers=dict(spec["headers"]), **kw)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    connection: int  # which TCP connection (1, 2, ...) carried it

    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[Received], Reply]


class WireServer:
    def __init__(
        self, *, latency: Callable[[], float] | None = None, default: Reply | None = None
    ) -> None:
        self.latency = latency
        self.default = default
        self.requests: list[Received] = []
        self.connections = 0
        self.port = 0
        self._routes: dict[str, deque[Reply] | Handler] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="wire-server"
        )
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def on(self, path: str, *replies: Reply | Handler) -> WireServer:
        """Answer ``path`` with these replies in turn (the last repeats), or a handler."""
        if len(replies) == 1 and callable(replies[0]):
            self._routes[path] = replies[0]
        else:
            self._routes[path] = deque(r for r in replies if isinstance(r, Reply))
        return self

    def last(self) -> Received:
        return self.requests[-1]

    def start(self) -> WireServer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()

        if self._server is not None:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> WireServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _reply_for(self, request: Received) -> Reply:
        route = self._routes.get(request.path)
        if route is None:
            if self.default is not None:
                return self.default
            return Reply.json(
                {"error": {"message": f"no route {request.path}", "type": "invalid_request_error"}},
                404,
            )
        if callable(route):
            return route(request)
        return route.popleft() if len(route) > 1 else route[0]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self._writers.add(writer)
        try:
            while True:
                request = await _read_request(reader, number)
                if request is None:
                    return
                self.requests.append(request)
                reply = self._reply_for(request)
                wait = reply.delay + (self.latency() if self.latency else 0.0)
                if wait:
                    await asyncio.sleep(wait)
                if not await _write_reply(writer, reply) or reply.close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()


async def _read_request(reader: asyncio.StreamReader, connection: int) -> Received | None:
    line = await reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return Received(method, path, headers, body, connection)


async def _write_reply(writer: asyncio.StreamWriter, reply: Reply) -> bool:
    """Send ``reply``; False when the connection was dropped on purpose."""
    head = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}"]
    headers = {k.lower(): v for k, v in reply.headers.items()}
    if reply.events is None:
        headers.setdefault("content-type", "application/json")
        headers["content-length"] = str(len(reply.body))
    else:
        headers.setdefault("content-type", "text/event-stream")
        headers["transfer-encoding"] = "chunked"
    if reply.close:
        headers["connection"] = "close"
    head += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
    if reply.events is None:
        writer.write(reply.body)
        await writer.drain()
        return True
    for n, event in enumerate(reply.events):
        if reply.drop_after is not None and n >= reply.drop_after:
            await writer.drain()
            writer.transport.abort()  # mid-body: no final chunk, the client sees a cut
            return False
        if reply.end_after is not None and n >= reply.end_after:
            break
        if reply.event_delay:
            await asyncio.sleep(reply.event_delay)
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


def start_wire_server(
    *, latency: Callable[[], float] | None = None, default: Reply | None = None
) -> WireServer:
    """A started server in a background thread; ``server.base_url``, then ``server.stop()``."""
    return WireServer(latency=latency, default=default).start()


FAST_CHAT_COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "bench-model",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9},
}


def fast_chat_server(latency: Callable[[], float] | None = None) -> WireServer:
    """A started server answering every path with one fixed chat completion."""
    return start_wire_server(latency=latency, default=Reply.json(FAST_CHAT_COMPLETION))


def lognormal_latency(median: float, p99: float, seed: int | None = None) -> Callable[[], float]:
    """Latencies (seconds) from a log-normal with this median and 99th percentile: a heavy
    tail for hedging benchmarks (p99 = 10x p50 is ``lognormal_latency(0.005, 0.05)``)."""
    sigma = math.log(p99 / median) / 2.3263478740408408  # z of the 99th percentile
    rng = random.Random(seed)
    mu = math.log(median)
    return lambda: rng.lognormvariate(mu, sigma)
