"""Live events across processes: a worker commits, a client of another process's server gets it.

    PYTHONPATH=. python benchmarks/fanout.py [--quick] [--json] [--pg-url URL] [--redis-url URL]

The server (``create_app`` over a Runtime on a PostgreSQL schema, uvicorn, auth off) and
its SSE client run here; the worker is a subprocess (``--worker``: a Runtime on the same
schema driving a run one step per line on its stdin, printing each commit's
``time.monotonic()``, one clock for every process of the machine). The client stamps each
event as it parses it; delivery = receipt - commit, one step at a time (the next step is
let go a random pause after the client has the last one: no backlog, each sample alone).

* ``fanout-pg``: PostgreSQL ``NOTIFY mainspring_events`` (the default), p50; anchor: the
  poll the hub used before (the run's record read every 0.5 s). p99 in the extras.
* ``fanout-redis``: Redis pub/sub, same anchor.
* ``fanout-commit-cost``: what announcing costs the writer: W3 (the 10-step linear graph,
  ``durability="sync"``) per step with ``fanout="pg"`` against ``fanout="off"``,
  interleaved rounds (ratio < 1: the fan-out's cost); ``redis`` in the extras.

Every schema used is dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import uvicorn

from mainspring import Runtime
from mainspring.models.sse import SSEParser
from mainspring.server import ServerConfig, create_app

from graphs import LINEAR_STEPS, ms_linear
from harness import US, Result, Samples, async_sampler, at_most, interleave, paired, skipped
from report import environment, print_json, print_table

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_URL = os.environ.get("MAINSPRING_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
DEFAULT_REDIS_URL = os.environ.get("MAINSPRING_REDIS_URL", "redis://127.0.0.1:6379/0")
MS = 1000.0
POLL = ServerConfig().stream_poll  # the hub's poll without a fan-out (the anchor)


# -- the worker (a subprocess) -------------------------------------------------------------


def worker(url: str, fanout: str, run_id: str, steps: int) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.fanout_worker import main

    anyio.run(main, url, fanout, run_id, steps)


# -- the server and its client (here) --------------------------------------------------------


@contextlib.asynccontextmanager
async def server(url: str, fanout: str) -> AsyncIterator[str]:
    config = ServerConfig(auth=False, console=False)  # the hub's default polls
    async with Runtime.open(url, fanout=fanout, recover="off") as rt:
        app = create_app(rt, config=config)
        uv = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(uv.serve)
            while not uv.started:
                await anyio.sleep(0.01)
            try:
                yield f"http://127.0.0.1:{uv.servers[0].sockets[0].getsockname()[1]}"
            finally:
                uv.should_exit = True


class Worker:
    def __init__(self, url: str, fanout: str, run_id: str, steps: int) -> None:
        env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'benchmarks'}"}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", url, fanout, run_id, str(steps)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def line(self) -> str:
        assert self.proc.stdout is not None
        text = self.proc.stdout.readline()
        if not text:
            raise RuntimeError(f"the worker ended (exit {self.proc.poll()})")
        return text.strip()

    async def until(self, prefix: str) -> str:
        while not (text := await anyio.to_thread.run_sync(self.line)).startswith(prefix):
            pass
        return text

    async def step(self) -> tuple[int, float]:
        """Let one step go; its commit's (last seq, monotonic time)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        _, seq, at = (await self.until("committed")).split()
        return int(seq), float(at)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


async def follow(url: str, run_id: str, received: dict[int, float], started: anyio.Event) -> None:
    parser = SSEParser()
    async with (
        httpx.AsyncClient(timeout=None) as client,
        client.stream("GET", f"{url}/v1/runs/{run_id}/stream") as response,
    ):
        started.set()
        async for chunk in response.aiter_raw():
            now = time.monotonic()
            for event in parser.feed(chunk):
                if event.event == "end":
                    return
                if event.id is not None:
                    received[int(event.id)] = now


async def delivery(url: str, pg_url: str, fanout: str, steps: int, pause: float) -> list[float]:
    """Commit-to-client seconds of ``steps`` steps of a run another process drives."""
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    proc = Worker(pg_url, fanout, run_id, steps)
    received: dict[int, float] = {}
    out: list[float] = []
    try:
        await proc.until("ready")
        started = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow, url, run_id, received, started)
            await started.wait()
            await anyio.sleep(0.2)  # the hub's first read of the run and its listener
            for _ in range(steps):
                # A random pause first: commits fall anywhere in the poll's period (the
                # anchor) and never right after the previous send (the fan-out's interval).
                await anyio.sleep(random.uniform(0, pause))
                seq, committed = await proc.step()
                with anyio.fail_after(30):
                    while seq not in received:
                        await anyio.sleep(0.0005)
                out.append(received[seq] - committed)
            await proc.until("done")
    finally:
        proc.close()
    return out


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure_delivery(pg_url: str, redis_url: str | None, quick: bool) -> list[Result]:
    fast, slow, rounds = (20, 8, 2) if quick else (100, 20, 3)
    modes = {"pg": "pg", "poll": "off"}
    if redis_url is not None:
        modes["redis"] = redis_url
    got: dict[str, list[float]] = {mode: [] for mode in modes}
    async with contextlib.AsyncExitStack() as stack:
        urls = {
            mode: await stack.enter_async_context(server(pg_url, f)) for mode, f in modes.items()
        }
        for _ in range(rounds):  # interleaved: each mode meets the machine's moods
            for mode, f in modes.items():
                n = slow if mode == "poll" else fast
                pause = POLL if mode == "poll" else 0.02
                got[mode] += await delivery(urls[mode], pg_url, f, n, pause)
    poll_p50 = statistics.median(got["poll"]) * MS
    results = []
    for mode in ("pg", "redis"):
        if mode not in got:
            results.append(skipped("fanout-redis", "ms", f"Redis not reachable at {redis_url}"))
            continue
        values = got[mode]
        result = Result(
            f"fanout-{mode}",
            statistics.median(values) * MS,
            poll_p50,
            "ms",
            extra={
                "p99": pct(values, 0.99) * MS,
                "anchor_p99": pct(got["poll"], 0.99) * MS,
                "samples": len(values),
            },
        )
        result.checks = [at_most(result.extra["p99"], 5.0, "p99 <= 5 ms")]
        results.append(result)
    return results


# -- what announcing costs the writer (W3) ------------------------------------------------


async def measure_cost(pg_url: str, redis_url: str | None, quick: bool) -> Result:
    app = ms_linear()
    runs, reps = (10, 5) if quick else (30, 15)
    choices = {"off": "off", "pg": "pg"} | ({"redis": redis_url} if redis_url else {})
    async with contextlib.AsyncExitStack() as stack:
        samplers = {}
        for name, choice in choices.items():
            rt = await stack.enter_async_context(
                Runtime.open(pg_url, durability="sync", fanout=choice, recover="off")
            )

            async def one(rt: Runtime = rt) -> Any:
                return await rt.run(app, {"k": "a"})

            await one()
            samplers[name] = async_sampler(one, runs, LINEAR_STEPS)
        s: dict[str, Samples] = await interleave(samplers, reps=reps, warmup=1)
    extra: dict[str, Any] = {"off_cpu": s["off"].best_cpu * US, "pg_cpu": s["pg"].best_cpu * US}
    if "redis" in s:
        extra |= {
            "redis": s["redis"].best * US,
            "redis_ratio": paired(s["off"], s["redis"]),
            "redis_cpu": s["redis"].best_cpu * US,
        }
    result = Result(
        "fanout-commit-cost",
        s["pg"].best * US,
        s["off"].best * US,
        "us/step",
        paired_ratio=paired(s["off"], s["pg"]),
        extra=extra,
    )
    result.checks = [at_most(1 / (result.ratio or 1), 1.05, "<= 5% over off")]
    return result


# -- main ---------------------------------------------------------------------------------


async def reachable_redis(url: str) -> bool:
    try:
        import redis.asyncio as redis
    except ImportError:
        return False
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception:
        return False
    finally:
        await client.aclose()
    return True


async def measure(pg_url: str, redis_url: str, quick: bool) -> list[Result]:
    try:
        await (await asyncpg.connect(pg_url, timeout=5)).close()
    except (OSError, asyncpg.PostgresError) as exc:
        why = f"PostgreSQL not reachable at {pg_url} ({exc})"
        return [skipped(w, u, why) for w, u in (("fanout-pg", "ms"), ("fanout-commit-cost", "us"))]
    schema = f"bench_fanout_{uuid.uuid4().hex[:8]}"
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}schema={schema}"
    redis = redis_url if await reachable_redis(redis_url) else None
    try:
        return [*await measure_delivery(url, redis, quick), await measure_cost(url, redis, quick)]
    finally:
        conn = await asyncpg.connect(pg_url, timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (under a minute)")
    parser.add_argument("--json", action="store_true", help="one JSON object per workload")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        url, fanout, run_id, steps = args.worker
        worker(url, fanout, run_id, int(steps))
        return 0
    results = asyncio.run(measure(args.pg_url, args.redis_url, args.quick))
    if args.json:
        for result in results:
            print_json(result)
    else:
        print_table(results, title="Live events across processes", context=environment())
    return 0


if __name__ == "__main__":
    sys.exit(main())
