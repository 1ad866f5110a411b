"""W15: the HTTP API's live streams, measured against the runtime called in process.

    PYTHONPATH=. python benchmarks/server_streams.py [--quick] [--json] [--subscribers N]
        [--idle-only]

The server runs in a subprocess of its own (``--serve``: ``create_app`` on a SQLite file,
uvicorn with httptools, auth off, the way ``mainspring serve`` runs embedded); the
clients run here, on raw asyncio sockets (the lightest client: what is measured is the
server). Commit times are taken in the server by a commit listener (the moment the
journal append returned) and compared with the moment a client's socket gave the event
(``time.time()`` on one machine: one clock).

* ``W15-start``: ``POST /v1/runs`` of a one-step graph, then ``GET .../stream`` until its
  first event, p50 (p99 an extra), against ``rt.start()`` + the first event of
  ``handle.events()`` in this process on its own SQLite file, in interleaved rounds.
  Without ``POST /v1/runs`` (the runs routes not merged) a benchmark route starts it.
* ``W15-delivery``: commit to SSE client, p99, one subscriber on a 200-step run (target
  <= 5 ms); the anchor is the in-process ``handle.events()`` from the event's record
  (its ``ts``) to its yield, beside the SSE client's record-to-client (``sse_record_p99``).
* ``W15-idle``: the server's RSS growth per idle subscriber (a parked run's stream, N of
  them) against a bare idle SSE connection on the same server (the floor of a connection:
  uvicorn, its transport, one awaiting handler). Target <= 20 KB.
* ``W15-load``: N (1,000) concurrent subscribers, ten to a live run, while runs are started
  over the API: starts per second, start p50/p99, and delivery p50/p99 across every
  subscriber's events (commit to client).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypedDict

import anyio
import uvicorn
from fastapi import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from mainspring import END, START, Context, Graph, Runtime
from mainspring.server import ServerConfig, create_app
from mainspring.server.routes.streams import hub_of

from harness import Result, at_most
from report import environment, print_json, print_table

ROOT = Path(__file__).resolve().parent.parent


# -- the graphs (the server imports them from here) ----------------------------------------


class Ticks(TypedDict, total=False):
    n: int
    limit: int
    delay: float


def _ticker() -> Any:
    g = Graph(Ticks, name="ticker")

    @g.node
    async def tick(s: Ticks, ctx: Context) -> dict[str, Any]:
        await anyio.sleep(s.get("delay", 0.0))
        return {"n": s.get("n", 0) + 1}

    g.edge(START, "tick")
    g.branch(
        "tick", lambda s: "tick" if s.get("n", 0) < s.get("limit", 1) else END,
        {"tick": "tick", END: END},
    )  # fmt: skip
    return g.compile()


def _parker() -> Any:
    g = Graph(Ticks, name="parker")

    @g.node
    async def wait(s: Ticks, ctx: Context) -> dict[str, Any]:
        await ctx.interrupt({"ok?": True})
        return {"n": 1}

    g.edge(START, "wait")
    g.edge("wait", END)
    return g.compile()


ticker, parker = _ticker(), _parker()


# -- the server process ------------------------------------------------------------------


def serve(db: str) -> None:
    """``--serve DB``: the API on ``sqlite:///DB`` plus a few benchmark routes; prints its port."""
    commits: dict[str, dict[int, float]] = {}
    idle = {"open": 0}

    def heard(run_id: str, events: Any, status: Any) -> None:
        now = time.time()
        if run_id in watched:
            into = commits.setdefault(run_id, {})
            for e in events:
                into[e.seq] = now

    watched: set[str] = set()
    app = create_app(
        f"sqlite:///{db}",
        graphs=[ticker, parker],
        config=ServerConfig(auth=False, console=False, heartbeat=60.0),
        durability="sync",
    )
    state = app.state.mainspring
    state.runtime.services.committed.append(heard)

    @app.post("/bench/start/{graph}")
    async def bench_start(graph: str, request: Request) -> JSONResponse:
        body = await request.json()
        app_graph = {"ticker": ticker, "parker": parker}[graph]
        handle = await state.runtime.start(app_graph, body.get("input"))
        if body.get("watch"):
            watched.add(handle.run_id)
        return JSONResponse({"run_id": handle.run_id}, 201)

    @app.post("/bench/watch/{run_id}")
    async def bench_watch(run_id: str) -> dict[str, bool]:
        watched.add(run_id)
        return {"ok": True}

    @app.get("/bench/commits/{run_id}")
    async def bench_commits(run_id: str) -> dict[str, float]:
        return {str(k): v for k, v in commits.get(run_id, {}).items()}

    @app.get("/bench/rss")
    async def bench_rss() -> dict[str, Any]:
        gc.collect()
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        hub = hub_of(state)
        subs = sum(f.subscribers for f in hub._feeds.values())
        return {"rss": rss, "subscribers": subs, "idle": idle["open"]}

    async def raw_idle(scope: Any, receive: Any, send: Any) -> None:
        """A bare idle stream behind the app's middleware: the framework's share."""
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b": hi\n\n", "more_body": True})
        idle["open"] += 1
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            idle["open"] -= 1

    app.router.routes.insert(0, Route("/bench/raw-idle", _Asgi(raw_idle)))

    @app.get("/bench/idle")
    async def bench_idle() -> StreamingResponse:
        async def forever() -> Any:
            idle["open"] += 1
            try:
                yield b": hi\n\n"
                await anyio.sleep_forever()
            finally:
                idle["open"] -= 1

        return StreamingResponse(forever(), media_type="text/event-stream")

    asyncio.run(_serve(app))


class _Asgi:
    """An ASGI callable as a route's endpoint (Starlette wraps plain functions)."""

    def __init__(self, app: Callable[[Any, Any, Any], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def serve_raw() -> None:
    """``--serve-raw``: a bare ASGI app (no framework) whose ``/bench/idle`` streams hold a
    connection open: the floor of an idle stream connection under uvicorn."""
    idle = {"open": 0}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/bench/rss":
            gc.collect()
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            body = json.dumps({"rss": rss, "idle": idle["open"]}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b": hi\n\n", "more_body": True})
        idle["open"] += 1
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            idle["open"] -= 1

    asyncio.run(_serve(app))


async def _serve(app: Any) -> None:
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="error", http="httptools",
        backlog=4096, timeout_graceful_shutdown=1,
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    print(server.servers[0].sockets[0].getsockname()[1], flush=True)
    await task


# -- a light client ------------------------------------------------------------------------


class Http:
    """Requests on short connections, and SSE streams read chunk by chunk (raw sockets)."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            data = json.dumps(body).encode() if body is not None else b""
            writer.write(
                f"{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                + data
            )
            raw = await reader.read(-1)
        finally:
            writer.close()
        head, _, rest = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if b"transfer-encoding: chunked" in head.lower():
            rest = _dechunk(rest)
        return status, json.loads(rest) if rest else None

    async def stream(
        self,
        path: str,
        on_frame: Callable[[bytes, float], bool],
        ready: asyncio.Event | None = None,
    ) -> None:
        """Read the SSE stream at ``path``; ``on_frame(frame, received_at)`` -> True to stop."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            assert b" 200 " in head.split(b"\r\n")[0], head
            if ready is not None:
                ready.set()
            buffer = b""
            while True:
                size = int((await reader.readline()).strip() or b"0", 16)
                if size == 0:
                    return
                chunk = await reader.readexactly(size + 2)
                now = time.time()
                buffer += chunk[:-2]
                while b"\n\n" in buffer:
                    frame, buffer = buffer.split(b"\n\n", 1)
                    if on_frame(frame, now):
                        return
        finally:
            writer.close()


def _dechunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_text, _, rest = rest.partition(b"\r\n")
        size = int(size_text or b"0", 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2 :]
    return out


def _frame_id(frame: bytes) -> int | None:
    for line in frame.split(b"\n"):
        if line.startswith(b"id: "):
            return int(line[4:])
    return None


def _is_end(frame: bytes) -> bool:
    return frame.startswith(b"event: end") or b"\nevent: end" in frame


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


# -- workloads ---------------------------------------------------------------------------


class Bench:
    def __init__(self, http: Http, workdir: Path, quick: bool) -> None:
        self.http, self.workdir, self.quick = http, workdir, quick
        self.api_start: bool | None = None

    async def start(self, graph: str, input: Any) -> str:
        """Start a run over the API (``POST /v1/runs``), else the benchmark route."""
        if self.api_start is not False:
            status, body = await self.http.request(
                "POST", "/v1/runs", {"graph": graph, "input": input}
            )
            if status in (200, 201):
                self.api_start = True
                return str(body["run_id"])
            if not self.api_start and status in (404, 405):
                self.api_start = False
            else:
                raise RuntimeError(f"POST /v1/runs answered {status}: {body}")
        status, body = await self.http.request("POST", f"/bench/start/{graph}", {"input": input})
        assert status == 201, body
        return str(body["run_id"])

    async def first_event(self, run_id: str) -> None:
        await self.http.stream(f"/v1/runs/{run_id}/stream", lambda frame, now: True)

    async def w15_start(self) -> Result:
        rounds, per = (5, 20) if self.quick else (10, 50)
        api: list[list[float]] = []
        local: list[list[float]] = []
        async with Runtime.open(f"sqlite:///{self.workdir / 'local.db'}", durability="sync") as rt:

            async def in_process() -> None:
                handle = await rt.start(ticker, {"limit": 1})
                async for _ in handle.events():
                    break

            async def over_api() -> None:
                await self.first_event(await self.start("ticker", {"limit": 1}))

            await over_api()
            await in_process()  # warm-up
            for round_ in range(rounds):
                order: list[tuple[list[list[float]], Callable[[], Awaitable[None]]]] = [
                    (api, over_api),
                    (local, in_process),
                ]
                if round_ % 2:
                    order.reverse()
                for into, fn in order:
                    times = []
                    for _ in range(per):
                        t = time.perf_counter()
                        await fn()
                        times.append((time.perf_counter() - t) * 1e3)
                    into.append(times)
        api_all = [x for r in api for x in r]
        local_all = [x for r in local for x in r]
        # Each side's best round (noise only adds time); p99 over every start.
        api_p50 = min(statistics.median(r) for r in api)
        local_p50 = min(statistics.median(r) for r in local)
        ratio = statistics.median(
            statistics.median(b) / statistics.median(a) for a, b in zip(api, local, strict=True)
        )
        return Result(
            "W15-start", api_p50, local_p50, "ms p50 start -> first event", paired_ratio=ratio,
            extra={"p99": _pct(api_all, 0.99), "anchor_p99": _pct(local_all, 0.99),
                   "overhead_p50_ms": api_p50 - local_p50,
                   "started_with": "POST /v1/runs" if self.api_start else "bench route"},
        )  # fmt: skip

    async def w15_delivery(self) -> Result:
        """Rounds of one run each (SSE, then the in-process anchor, alternating); each
        side's best round is reported (noise on a shared machine only adds time)."""
        steps, rounds = (100, 3) if self.quick else (200, 5)
        run_id = await self.start("parker", None)  # warm the stream path first
        await self.http.stream(f"/v1/runs/{run_id}/stream?until=park", lambda f, n: _is_end(f))
        commit_p99: list[float] = []
        commit_p50: list[float] = []
        record_p99: list[float] = []
        anchor_p99: list[float] = []
        async with Runtime.open(f"sqlite:///{self.workdir / 'anchor.db'}") as rt:
            for _ in range(rounds):
                lat, record_ms = await self._sse_round(steps)
                commit_p99.append(_pct(lat, 0.99))
                commit_p50.append(_pct(lat, 0.5))
                record_p99.append(_pct(record_ms, 0.99))
                # The anchor: the runtime's own subscriber in process, record to yield.
                anchor: list[float] = []
                handle = await rt.start(ticker, {"limit": steps, "delay": 0.002})
                async for event in handle.events():
                    anchor.append((time.time() - event.ts) * 1e3)
                anchor_p99.append(_pct(anchor, 0.99))
        best = min(commit_p99)
        return Result(
            "W15-delivery", min(record_p99), min(anchor_p99), "ms p99 record -> subscriber",
            checks=[at_most(best, 5.0, "commit -> SSE client p99 <= 5 ms")],
            extra={"commit_to_client_p99": best, "commit_to_client_p50": min(commit_p50),
                   "commit_to_client_p99_median_round": statistics.median(commit_p99),
                   "rounds": rounds, "events_per_round": 3 * steps},
        )  # fmt: skip

    async def _sse_round(self, steps: int) -> tuple[list[float], list[float]]:
        """One run followed over SSE: commit -> client and record -> client, ms."""
        _, body = await self.http.request(
            "POST", "/bench/start/ticker", {"input": {"limit": steps, "delay": 0.002}, "watch": 1}
        )
        run_id = body["run_id"]
        received: dict[int, float] = {}
        record_ms: list[float] = []

        def on_frame(frame: bytes, now: float) -> bool:
            seq = _frame_id(frame)
            if seq is not None:
                received[seq] = now
                data = frame.split(b"\ndata: ", 1)[1]
                record_ms.append((now - json.loads(data)["ts"]) * 1e3)
            return _is_end(frame)

        await self.http.stream(f"/v1/runs/{run_id}/stream", on_frame)
        _, commits = await self.http.request("GET", f"/bench/commits/{run_id}")
        lat = [(received[int(s)] - t) * 1e3 for s, t in commits.items() if int(s) in received]
        return lat, record_ms

    async def w15_idle(self, n: int) -> Result:
        """Each side in a fresh server process: freed memory is not handed back to the OS,
        so a second measurement in one process would reuse the first one's."""
        results: dict[str, float] = {}
        for name in ("raw", "fastapi", "app", "ours"):
            with server(self.workdir, f"idle-{name}", raw=name == "raw") as port:
                path = "/bench/raw-idle" if name == "app" else "/bench/idle"
                results[name] = await idle_growth(Http(port), name == "ours", n, path)
        with server(self.workdir, "idle-ours-10") as port:  # the steady cost, bursts aside
            steady = await idle_growth(Http(port), True, n, burst=10)
        above = results["ours"] - results["raw"]
        return Result(
            "W15-idle", results["ours"], results["fastapi"], "KB RSS per idle subscriber",
            checks=[at_most(results["ours"], 20.0, "<= 20 KB per idle subscriber")],
            extra={"subscribers": n, "floor": results["raw"],
                   "vs_floor": results["ours"] / results["raw"], "above_floor_kb": above,
                   "app_middleware_floor": results["app"], "opened_ten_at_a_time": steady},
        )  # fmt: skip

    async def w15_load(self, n: int) -> list[Result]:
        """``n`` subscribers, ten to a run, each run a step every 0.5 s (~6 events/s):
        delivery with the subscribers alone, then starts as fast as 4 clients go (and
        delivery meanwhile, the server saturated)."""
        runs = max(1, n // 10)
        seconds = 3.0 if self.quick else 10.0
        steps = int(2 * seconds / 0.5) + 20
        run_ids = []
        for _ in range(runs):
            _, body = await self.http.request(
                "POST", "/bench/start/ticker",
                {"input": {"limit": steps, "delay": 0.5}, "watch": 1},
            )  # fmt: skip
            run_ids.append(body["run_id"])
            await asyncio.sleep(0.5 / runs)  # spread over a step: runs are not in lockstep
        received: dict[str, list[tuple[int, float]]] = {r: [] for r in run_ids}
        stop = asyncio.Event()
        readies = []

        async def subscriber(run_id: str, ready: asyncio.Event) -> None:
            got = received[run_id]

            def on_frame(frame: bytes, now: float) -> bool:
                seq = _frame_id(frame)
                if seq is not None:
                    got.append((seq, now))
                return _is_end(frame) or stop.is_set()

            await self.http.stream(f"/v1/runs/{run_id}/stream", on_frame, ready)

        subs = []
        for i in range(n):
            ready = asyncio.Event()
            readies.append(ready)
            subs.append(asyncio.create_task(subscriber(run_ids[i % runs], ready)))
            if i % 100 == 99:
                await asyncio.sleep(0.02)
        await asyncio.gather(*(r.wait() for r in readies))
        await asyncio.sleep(1.0)  # each new subscriber first reads the journal: let it settle
        quiet_from = time.time()  # every subscriber is on and caught up from here
        await asyncio.sleep(seconds)  # phase 1: the subscribers alone
        busy_from = time.time()  # phase 2: runs started as fast as 4 clients can
        starts: list[float] = []
        began = time.perf_counter()

        async def starter() -> None:
            while time.perf_counter() - began < seconds:
                t = time.perf_counter()
                await self.start("ticker", {"limit": 1})
                starts.append((time.perf_counter() - t) * 1e3)

        await asyncio.gather(*(starter() for _ in range(4)))
        elapsed = time.perf_counter() - began
        busy_until = time.time()
        stop.set()
        for task in subs:
            task.cancel()
        await asyncio.gather(*subs, return_exceptions=True)
        quiet: list[float] = []
        busy: list[float] = []
        for run_id in run_ids:
            _, commits = await self.http.request("GET", f"/bench/commits/{run_id}")
            committed = {int(s): t for s, t in commits.items()}
            for seq, at in received[run_id]:
                t = committed.get(seq)
                if t is not None and quiet_from <= t < busy_from:
                    quiet.append((at - t) * 1e3)
                elif t is not None and busy_from <= t < busy_until:
                    busy.append((at - t) * 1e3)
        how = "POST /v1/runs" if self.api_start else "bench route"
        return [
            Result(
                "W15-load-delivery", _pct(quiet, 0.99), None,
                f"ms p99 commit -> client, {n} subscribers",
                extra={"p50_ms": _pct(quiet, 0.5), "deliveries": len(quiet)},
            ),
            Result(
                "W15-load-start", len(starts) / elapsed, None,
                f"starts/s (4 clients) with {n} subscribers", higher_is_better=True,
                extra={"p50_ms": _pct(starts, 0.5), "p99_ms": _pct(starts, 0.99),
                       "started_with": how, "delivery_p50_ms": _pct(busy, 0.5),
                       "delivery_p99_ms": _pct(busy, 0.99)},
            ),
        ]  # fmt: skip


async def idle_growth(
    http: Http, ours: bool, n: int, path: str = "/bench/idle", burst: int = 100
) -> float:
    """The server's RSS growth per idle stream, KB: a parked run's (ours), or a bare one;
    opened ``burst`` at a time (each opening request holds the whole stack while it is
    checked, and the memory of a burst is kept by Python's allocator afterwards)."""
    key = "idle"
    if ours:
        _, body = await http.request("POST", "/bench/start/parker", {"input": None})
        run_id = body["run_id"]
        await http.stream(f"/v1/runs/{run_id}/stream?until=park", lambda f, now: _is_end(f))
        path, key = f"/v1/runs/{run_id}/stream", "subscribers"
    stop = asyncio.Event()

    async def hold() -> None:
        ready = asyncio.Event()
        inner = asyncio.create_task(http.stream(path, lambda f, now: False, ready))
        await ready.wait()
        await stop.wait()
        inner.cancel()

    tasks: list[asyncio.Task[None]] = []

    async def open_many(count: int) -> float:
        for i in range(count):
            tasks.append(asyncio.create_task(hold()))
            if i % burst == burst - 1:
                await asyncio.sleep(0.05)
        while True:
            _, info = await http.request("GET", "/bench/rss")
            if info[key] >= len(tasks):
                return float(info["rss"])
            await asyncio.sleep(0.1)

    await open_many(50)  # allocators and lazily made parts warm
    await asyncio.sleep(0.2)
    _, info = await http.request("GET", "/bench/rss")
    before = float(info["rss"])
    after = await open_many(n)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return (after - before) / n / 1024


@contextlib.contextmanager
def server(workdir: Path, name: str, *, raw: bool = False) -> Iterator[int]:
    """A server process (``--serve``, or ``--serve-raw``) on a SQLite file of its own."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    mode = ["--serve-raw"] if raw else ["--serve", str(workdir / f"{name}.db")]
    proc = subprocess.Popen(
        [sys.executable, __file__, *mode],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def measure(
    workdir: Path, quick: bool, subscribers: int, only_idle: bool = False
) -> list[Result]:
    if only_idle:
        return [await Bench(Http(0), workdir, quick).w15_idle(subscribers)]
    with server(workdir, "server") as port:
        bench = Bench(Http(port), workdir, quick)
        first = [await bench.w15_start(), await bench.w15_delivery()]
    idle = await bench.w15_idle(subscribers)
    with server(workdir, "load") as port:
        bench = Bench(Http(port), workdir, quick)
        load = await bench.w15_load(subscribers)
    return [*first, idle, *load]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (under a minute)")
    parser.add_argument("--json", action="store_true", help="one JSON object per workload")
    parser.add_argument("--subscribers", type=int, default=None, help="default 1000 (quick 300)")
    parser.add_argument("--idle-only", action="store_true", help="W15-idle alone")
    parser.add_argument("--serve", metavar="DB", help=argparse.SUPPRESS)
    parser.add_argument("--serve-raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_raw:
        serve_raw()
        return 0
    if args.serve:
        serve(args.serve)
        return 0
    n = args.subscribers or (300 if args.quick else 1000)
    with tempfile.TemporaryDirectory(prefix="mainspring-w15-") as tmp:
        results = asyncio.run(measure(Path(tmp), args.quick, n, args.idle_only))
    if args.json:
        for result in results:
            print_json(result)
    else:
        print_table(results, title="W15: live streams over HTTP", context=environment())
    return 0


if __name__ == "__main__":
    sys.exit(main())
