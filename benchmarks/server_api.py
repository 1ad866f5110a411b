"""W15-api: start a run over HTTP and get its first event, against the runtime in process and
against LangGraph's server (``langgraph dev``); and the ASGI stack: FastAPI against Starlette.

    PYTHONPATH=. python benchmarks/server_api.py [--quick] [--json] [--langgraph-cli PATH]

(also ``benchmarks/run.py --only W15-api``). One graph on every side: W1's ten trivial nodes
in a line (``graphs.ms_linear``; ``server_api_langgraph.py`` for LangGraph). Each server runs
in a subprocess of its own on a free port of 127.0.0.1 (uvicorn, its default loop and HTTP
parser: uvloop and httptools here); the client is this process, on raw asyncio sockets
(the lightest client: what is measured is the server), the same for every server:

* Mainspring: ``create_app("memory://")``, auth off (``mainspring serve --no-auth`` on a
  memory store): ``POST /v1/runs``, then ``GET /v1/runs/{id}/stream`` (two requests: the API
  starts a run and streams it apart).
* LangGraph: ``langgraph dev`` (langgraph-api's in-memory server) serving the same graph:
  ``POST /runs/stream`` (stateless, one request) and ``POST /threads`` +
  ``POST /threads/{id}/runs/stream``; the faster of the two is the anchor. Its in-memory
  runtime hands every run to a background worker that polls its queue (``Runs.next``
  sleeps 0.5 s when idle): about a second to a first event, which is what a client of
  ``langgraph dev`` gets (its production server wakes workers through Redis; it needs a
  license and Docker, not measured here).
* in process (the floor): ``rt.start()`` then ``handle.events()`` on ``memory://``.

Each sample is one run, timed from the first byte sent to the first SSE event read
(``W15-api-first-event``) and to the end of the stream, the whole run
(``W15-api-run``), sampled in interleaved rounds; p50 and p99 pool every round's samples.

``W15-api-asgi``: the same trivial JSON endpoint served by FastAPI (as the API's routes
are: ``response_model``), FastAPI returning a dict, bare Starlette and a raw ASGI callable,
each under uvicorn in its own process, driven by ``wrk`` (1 thread, 8 connections) in
interleaved rounds: requests per second and p50. FastAPI's cost is what the API pays
per request for its OpenAPI document and request validation.

LangGraph's server (``langgraph-cli[inmem]``) cannot be installed beside the dev extra:
langgraph-api pins ``jsonschema-rs<0.45`` and schemathesis needs ``>=0.60.1``. Give it its
own environment (the ``bench-langgraph-server`` extra) and pass its ``langgraph``::

    python -m venv .venv-langgraph
    .venv-langgraph/bin/pip install 'langgraph-cli[inmem]>=0.4.40,<0.5' langgraph==1.2.22

It is looked for at ``--langgraph-cli``, ``$MAINSPRING_BENCH_LANGGRAPH_CLI``, beside this
Python, then in ``.venv-langgraph``; without it the LangGraph side reports why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mainspring import Runtime

from graphs import ms_linear
from harness import Result, Settings, at_least, skipped, stop_group
from report import environment, print_json, print_table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
INPUT = {"k": "a"}
MS = 1e3
LANGGRAPH_VENV = ROOT / ".venv-langgraph"
WHY_NO_LANGGRAPH = (
    "langgraph-cli[inmem] not found: it cannot share an environment with the dev extra "
    "(langgraph-api pins jsonschema-rs<0.45, schemathesis needs >=0.60.1); install it in "
    "its own venv (python -m venv .venv-langgraph && .venv-langgraph/bin/pip install "
    "'langgraph-cli[inmem]>=0.4.40,<0.5' langgraph==1.2.22) or pass --langgraph-cli PATH"
)


# -- the servers (subprocesses of this file) ---------------------------------------------


def serve_mainspring(store: str) -> None:
    """``--serve-mainspring STORE``: the API, auth off, on ``STORE``; prints its port."""
    import uvicorn

    from mainspring.server import ServerConfig, create_app

    app = create_app(store, graphs=[ms_linear()], config=ServerConfig(auth=False, console=False))
    _serve(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))


def serve_asgi(kind: str) -> None:
    """``--serve-asgi KIND``: ``GET /ping`` -> ``{"ok": true}`` on one ASGI stack."""
    import uvicorn

    _serve(uvicorn.Config(asgi_app(kind), host="127.0.0.1", port=0, log_level="error"))


def asgi_app(kind: str) -> Any:
    body = b'{"ok":true}'
    if kind == "raw":

        async def raw(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                return
            headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return raw
    if kind == "starlette":
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def ping(request: Request) -> JSONResponse:
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/ping", ping)])
    from fastapi import FastAPI
    from pydantic import BaseModel

    class Ok(BaseModel):
        ok: bool

    app = FastAPI()
    if kind == "fastapi-model":

        @app.get("/ping", response_model=Ok)
        async def ping_model() -> dict[str, bool]:
            return {"ok": True}

    else:

        @app.get("/ping")
        async def ping_dict() -> dict[str, bool]:
            return {"ok": True}

    return app


def _serve(config: Any) -> None:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(config).run(sockets=[sock])


@dataclass
class Server:
    """A server subprocess (its own session: stopped with its process group)."""

    name: str
    process: subprocess.Popen[str]
    port: int
    log: Path | None = None

    def stop(self) -> None:
        stop_group(self.process)


def spawn(name: str, *args: str) -> Server:
    """This file in a subprocess (``--serve-...``): it prints its port when listening."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *args],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.strip().isdigit():
        process.kill()
        raise RuntimeError(f"{name}: the server did not start (printed {line!r})")
    server = Server(name, process, int(line))
    wait_until_up(server, "/ping" if args[0] == "--serve-asgi" else "/healthz")
    return server


def langgraph_cli(given: str | None) -> str | None:
    for candidate in (
        given,
        os.environ.get("MAINSPRING_BENCH_LANGGRAPH_CLI"),
        str(Path(sys.executable).parent / "langgraph"),
        str(LANGGRAPH_VENV / "bin" / "langgraph"),
    ):
        if candidate and shutil.which(candidate):
            return candidate
    return None


def spawn_langgraph(cli: str, workdir: Path) -> Server:
    """``langgraph dev`` serving ``server_api_langgraph.py:graph`` as ``linear``."""
    config = workdir / "langgraph.json"
    graph = HERE / "server_api_langgraph.py"
    config.write_text(
        json.dumps({"dependencies": [str(HERE)], "graphs": {"linear": f"{graph}:graph"}})
    )
    port = _free_port()
    log = workdir / "langgraph-dev.log"
    env = {
        **os.environ,
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "PYTHONPATH": "",
    }
    with log.open("w") as out:
        process = subprocess.Popen(
            [cli, "dev", "--no-browser", "--no-reload", "--port", str(port),
             "--config", str(config), "--server-log-level", "error"],
            stdout=out, stderr=subprocess.STDOUT, text=True, cwd=workdir, env=env,
            start_new_session=True,
        )  # fmt: skip
    server = Server("langgraph dev", process, port, log)
    try:
        wait_until_up(server, "/ok", timeout=120)
    except RuntimeError:
        server.stop()
        raise
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until_up(server: Server, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log.read_text()[-2000:] if server.log else ""
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}: {tail}")
        with contextlib.suppress(OSError):
            status, _ = asyncio.run(request(server.port, "GET", path))
            if status == 200:
                return
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{server.name} did not answer {path} within {timeout:.0f} s")


# -- a light client (raw sockets) -------------------------------------------------------


async def _send(port: int, method: str, path: str, body: Any) -> tuple[Any, Any, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode() if body is not None else b""
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream, application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    head = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, head


async def request(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request on its own connection: (status, JSON body)."""
    reader, writer, head = await _send(port, method, path, body)
    try:
        raw = b"".join([chunk async for chunk in _body(reader, head)])
    finally:
        writer.close()
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(raw) if raw else None


async def _body(reader: asyncio.StreamReader, head: bytes) -> Any:
    """The body's pieces as they arrive (chunked or sized)."""
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return
            yield (await reader.readexactly(size + 2))[:-2]
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            yield await reader.readexactly(int(line.split(b":")[1]))
            return
    yield await reader.read(-1)


async def stream(
    port: int, method: str, path: str, body: Any, started: float, is_end: Callable[[bytes], bool]
) -> tuple[float, float]:
    """Read the SSE stream: (seconds from ``started`` to its first event, to its end)."""
    reader, writer, head = await _send(port, method, path, body)
    first: float | None = None
    try:
        assert b" 200 " in head.split(b"\r\n")[0], head
        buffer = b""
        async for chunk in _body(reader, head):
            buffer = (buffer + chunk).replace(b"\r\n", b"\n")  # LangGraph ends lines with CRLF
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                if b"data:" not in frame:
                    continue  # a comment (keep-alive)
                if first is None:
                    first = time.perf_counter() - started
                if is_end(frame):
                    return first, time.perf_counter() - started
    finally:
        writer.close()
    assert first is not None, f"{path}: the stream ended without an event"
    return first, time.perf_counter() - started


def _ms_end(frame: bytes) -> bool:
    return frame.startswith(b"event: end")


def _never(frame: bytes) -> bool:
    return False  # LangGraph's stream ends with its body


# -- one run, each way -----------------------------------------------------------------

Sample = Callable[[], Awaitable[tuple[float, float]]]


def over_mainspring(port: int) -> Sample:
    async def sample() -> tuple[float, float]:
        started = time.perf_counter()
        status, run = await request(port, "POST", "/v1/runs", {"graph": "linear", "input": INPUT})
        assert status == 201, run
        path = f"/v1/runs/{run['run_id']}/stream"
        return await stream(port, "GET", path, None, started, _ms_end)

    return sample


def over_langgraph(port: int, *, thread: bool) -> Sample:
    body = {"assistant_id": "linear", "input": INPUT, "stream_mode": ["values"]}

    async def stateless() -> tuple[float, float]:
        started = time.perf_counter()
        return await stream(port, "POST", "/runs/stream", body, started, _never)

    async def threaded() -> tuple[float, float]:
        started = time.perf_counter()
        status, created = await request(port, "POST", "/threads", {})
        assert status == 200, created
        path = f"/threads/{created['thread_id']}/runs/stream"
        return await stream(port, "POST", path, body, started, _never)

    return threaded if thread else stateless


def in_process(rt: Runtime) -> Sample:
    app = ms_linear()

    async def sample() -> tuple[float, float]:
        started = time.perf_counter()
        handle = await rt.start(app, INPUT)
        first: float | None = None
        async for _ in handle.events():
            if first is None:
                first = time.perf_counter() - started
        assert first is not None
        return first, time.perf_counter() - started

    return sample


@dataclass
class Latencies:
    first: list[float] = field(default_factory=list)
    end: list[float] = field(default_factory=list)
    rounds: list[tuple[float, float]] = field(default_factory=list)  # per round: p50 first, end

    def p(self, which: str, q: float) -> float:
        """The ``q`` quantile in ms of every round's ``first`` or ``end`` latencies."""
        values: list[float] = sorted(self.first if which == "first" else self.end)
        return values[min(len(values) - 1, int(len(values) * q))] * MS


async def interleaved(
    samples: dict[str, Sample], rounds: int, per: dict[str, int]
) -> dict[str, Latencies]:
    """``rounds`` rounds of ``per[name]`` runs of each contender, their order rotating, after
    a warm-up run each."""
    for sample in samples.values():
        await sample()
    out = {name: Latencies() for name in samples}
    names = list(samples)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            firsts, ends = [], []
            for _ in range(per[name]):
                first, end = await samples[name]()
                firsts.append(first)
                ends.append(end)
            out[name].first += firsts
            out[name].end += ends
            out[name].rounds.append((statistics.median(firsts), statistics.median(ends)))
    return out


# -- the ASGI stacks under wrk ------------------------------------------------------------


def wrk(port: int, seconds: float) -> tuple[float, float]:
    """(requests/s, p50 ms) of ``GET /ping`` with wrk, 1 thread, 8 connections."""
    done = subprocess.run(
        ["wrk", "-t1", "-c8", f"-d{seconds:g}s", "--latency", f"http://127.0.0.1:{port}/ping"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rate = p50 = 0.0
    for line in done.stdout.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            rate = float(words[1])
        elif words[:1] == ["50%"]:
            p50 = _ms(words[1])
    return rate, p50


def _ms(text: str) -> float:
    for suffix, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text)


def asgi_stacks(quick: bool) -> Result:
    if shutil.which("wrk") is None:
        return skipped("W15-api-asgi", "req/s", "wrk not installed (apt-get install wrk)")
    kinds = ["fastapi-model", "fastapi", "starlette", "raw"]
    servers = {kind: spawn(kind, "--serve-asgi", kind) for kind in kinds}
    try:
        for kind in kinds:
            wrk(servers[kind].port, 1)  # warm-up (wrk takes whole seconds)
        rates: dict[str, list[float]] = {k: [] for k in kinds}
        p50s: dict[str, list[float]] = {k: [] for k in kinds}
        seconds, rounds = (1, 2) if quick else (5, 5)
        for r in range(rounds):
            for kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
                rate, p50 = wrk(servers[kind].port, seconds)
                rates[kind].append(rate)
                p50s[kind].append(p50)
    finally:
        for server in servers.values():
            server.stop()
    per_round = [f / s for f, s in zip(rates["fastapi-model"], rates["starlette"], strict=True)]
    return Result(
        "W15-api-asgi",
        max(rates["fastapi-model"]),
        max(rates["starlette"]),
        "req/s",
        higher_is_better=True,
        paired_ratio=statistics.median(per_round),
        extra={
            "anchor_is": "bare Starlette, same endpoint",
            "fastapi_dict_rps": max(rates["fastapi"]),
            "raw_asgi_rps": max(rates["raw"]),
            "p50_ms": min(p50s["fastapi-model"]),
            "anchor_p50_ms": min(p50s["starlette"]),
            "fastapi_dict_p50_ms": min(p50s["fastapi"]),
            "raw_asgi_p50_ms": min(p50s["raw"]),
            "fastapi_us_per_request": (
                1 / max(rates["fastapi-model"]) - 1 / max(rates["starlette"])
            )
            * 1e6,
            "client": "wrk -t1 -c8, one uvicorn process each",
        },
    )


# -- the workloads ------------------------------------------------------------------------


async def first_events(workdir: Path, quick: bool, cli: str | None) -> list[Result]:
    # LangGraph's server answers in about a second (below): fewer of its runs per round.
    rounds, n_ours, n_theirs = (3, 40, 2) if quick else (6, 100, 10)
    servers: list[Server] = []
    why_not: str | None = None
    try:
        ours = await asyncio.to_thread(spawn, "mainspring", "--serve-mainspring", "memory://")
        servers.append(ours)
        samples: dict[str, Sample] = {"mainspring": over_mainspring(ours.port)}
        if cli is None:
            why_not = WHY_NO_LANGGRAPH
        else:
            try:
                lg = await asyncio.to_thread(spawn_langgraph, cli, workdir)
                servers.append(lg)
                samples["lg_stateless"] = over_langgraph(lg.port, thread=False)
                samples["lg_thread"] = over_langgraph(lg.port, thread=True)
            except (RuntimeError, OSError) as exc:
                why_not = f"langgraph dev did not run: {exc}"[:400]
        async with Runtime.open("memory://") as rt:
            samples["in_process"] = in_process(rt)
            per = {name: n_theirs if name.startswith("lg_") else n_ours for name in samples}
            found = await interleaved(samples, rounds, per)
    finally:
        for server in servers:
            server.stop()
    return [
        _row(found, "first", "W15-api-first-event", why_not),
        _row(found, "end", "W15-api-run", why_not),
    ]


def _row(found: dict[str, Latencies], which: str, workload: str, why_not: str | None) -> Result:
    ms, floor = found["mainspring"], found["in_process"]
    index = 0 if which == "first" else 1
    extra: dict[str, Any] = {
        "p99": ms.p(which, 0.99),
        "floor": floor.p(which, 0.5),
        "vs_floor": ms.p(which, 0.5) / floor.p(which, 0.5),
        "floor_p99": floor.p(which, 0.99),
        "api_overhead_p50_ms": ms.p(which, 0.5) - floor.p(which, 0.5),
        "samples": len(getattr(ms, which)),
        "anchor_samples": 0,
    }
    anchor: float | None = None
    paired: float | None = None
    if why_not is None:
        stateless, threaded = found["lg_stateless"], found["lg_thread"]
        best = min((stateless, threaded), key=lambda lat: lat.p(which, 0.5))
        anchor = best.p(which, 0.5)
        extra |= {
            "anchor_is": "langgraph dev, "
            + (
                "POST /runs/stream"
                if best is stateless
                else "POST /threads + /threads/{id}/runs/stream"
            ),
            "anchor_p99": best.p(which, 0.99),
            "anchor_stateless_p50": stateless.p(which, 0.5),
            "anchor_thread_p50": threaded.p(which, 0.5),
            "anchor_samples": len(getattr(best, which)),
        }
        paired = statistics.median(
            b[index] / m[index] for b, m in zip(best.rounds, ms.rounds, strict=True)
        )
    else:
        extra["anchor_skipped"] = why_not
    result = Result(workload, ms.p(which, 0.5), anchor, "ms p50", paired_ratio=paired, extra=extra)
    if why_not is None:
        result.checks = [at_least(result.ratio, 1.0, "<= langgraph dev's p50")]
    return result


async def run(settings: Settings) -> list[Result]:
    """The ``run.py`` family (``--only W15-api``)."""
    return await measure(settings.workdir, settings.quick, langgraph_cli(None))


async def measure(workdir: Path, quick: bool, cli: str | None) -> list[Result]:
    results = await first_events(workdir, quick, cli)
    try:
        results.append(await asyncio.to_thread(asgi_stacks, quick))
    except (subprocess.CalledProcessError, RuntimeError) as exc:  # keep the rows above
        results.append(skipped("W15-api-asgi", "req/s", f"failed: {exc}"[:300]))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (well under a minute)")
    parser.add_argument("--json", action="store_true", help="one JSON object per workload")
    parser.add_argument("--langgraph-cli", help="the `langgraph` of langgraph-cli[inmem]")
    parser.add_argument("--serve-mainspring", metavar="STORE", help=argparse.SUPPRESS)
    parser.add_argument("--serve-asgi", metavar="KIND", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_mainspring:
        serve_mainspring(args.serve_mainspring)
        return 0
    if args.serve_asgi:
        serve_asgi(args.serve_asgi)
        return 0
    cli = langgraph_cli(args.langgraph_cli)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(measure(Path(tmp), args.quick, cli))
    if args.json:
        for result in results:
            print_json(result)
    else:
        print_table(results, title="W15-api: the HTTP API's overhead", context=environment())
    return 0 if all(r.met is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
