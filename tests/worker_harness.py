"""The harness of the worker fault tests (``test_worker_faults``): a schema with the effect
tables and a client runtime (``Env``), ``mainspring worker`` processes (``WorkerProc``),
and ``until`` (poll with a generous deadline, never a timed assertion).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import asyncpg

from mainspring import Runtime
from mainspring.events import EffectFinished, EventKind
from mainspring.status import RunStatus
from mainspring.store import store_from_url
from tests.conftest import postgres_schema_url
from tests.queue_graphs import EFFECT_TABLES, steps, steps_retried

ROOT = Path(__file__).resolve().parent.parent
TTL = 1.5  # lease TTL of the workers: takeovers come within about this
QUEUE = "q"
DEADLINE = 60.0  # generous: a loaded CI machine; a pass never waits this long


@dataclass
class Env:
    """One test's schema: its store URL, the effect tables' URL, a client runtime."""

    url: str
    schema: str
    base: str
    rt: Runtime
    tmp: Path
    conn: asyncpg.Connection
    workers: list[WorkerProc] = field(default_factory=list)

    async def start(
        self, n: int, *, gate: Path | None = None, prefix: str = "r", graph: Any = steps
    ) -> list[str]:
        ids = [f"{prefix}{i}" for i in range(n)]
        for rid in ids:
            data: dict[str, Any] = {"gate": str(gate)} if gate is not None else {}
            await self.rt.start(graph, data, run_id=rid, queue=QUEUE)
        return ids

    def worker(
        self, *extra: str, concurrency: int = 4, drain: float = 5.0, ttl: float = TTL
    ) -> WorkerProc:
        w = WorkerProc.spawn(self, concurrency=concurrency, drain=drain, ttl=ttl, extra=extra)
        self.workers.append(w)
        return w

    async def rows(self, sql: str, *args: Any) -> list[Any]:
        """``sql`` (``S.`` for this test's schema) on the test's own connection, made again
        if a server restart broke it."""
        sql = sql.replace("S.", f'"{self.schema}".')
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                if self.conn.is_closed():
                    self.conn = await asyncpg.connect(self.base, timeout=5)
                return list(await self.conn.fetch(sql, *args))
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                    asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError):  # fmt: skip
                if time.monotonic() > deadline:
                    raise
                self.conn.terminate()
                await anyio.sleep(0.2)

    async def owners(self, ids: list[str]) -> dict[str, tuple[str | None, int, str]]:
        rows = await self.rows(
            "SELECT run_id, owner, fence, status FROM S.runs WHERE run_id = ANY($1)", ids
        )
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    async def deaths(self, ids: list[str]) -> dict[str, int]:
        rows = await self.rows("SELECT run_id, deaths FROM S.runs WHERE run_id = ANY($1)", ids)
        return {r[0]: r[1] for r in rows}

    async def attempts(self) -> list[tuple[str, str, int]]:
        rows = await self.rows("SELECT run_id, step, pid FROM S.effect_attempts")
        return [(r[0], r[1], r[2]) for r in rows]

    async def effect_log(self) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in await self.rows("SELECT run_id, step FROM S.effect_log")]

    async def journaled(self, run_id: str) -> set[str]:
        """The steps whose effect_finished is in the run's journal."""
        events = await self.rt.store.read(run_id)
        return {
            e.data.name.removeprefix("effect-")
            for e in events
            if isinstance(e.data, EffectFinished)
        }

    async def held_at_gate(self, ids: list[str], owner: str) -> None:
        """Wait until ``owner`` holds every run of ``ids`` with effect ``a`` journaled."""

        async def ready() -> bool:
            held = await self.owners(ids)
            if any(held[r][0] != owner for r in ids):
                return False
            return all([await self.journaled(r) == {"a"} for r in ids])

        await until(ready, f"{owner} holding {ids} at the gate")

    async def all_finished(self, ids: list[str]) -> None:
        """Wait until every run finished, then check each finished exactly once, with each
        effect done exactly once per idempotency key."""

        async def done() -> bool:
            held = await self.owners(ids)
            return all(held[r][2] == "finished" for r in ids)

        try:
            await until(done, f"runs {ids} finished")
        except AssertionError as exc:  # say where each run stands, and what the workers said
            rows = await self.rows(
                "SELECT run_id, status, owner, lease_until - extract(epoch FROM"
                " clock_timestamp()), fence, deaths, last_seq, error FROM S.runs WHERE run_id = ANY($1)",
                ids,
            )
            logs = "\n".join(f"--- worker {w.pid}:\n{w.log()[-6000:]}" for w in self.workers)
            raise AssertionError(f"{exc}\n{[tuple(r) for r in rows]}\n{logs}") from None
        for rid in ids:
            events = await self.rt.store.read(rid)
            kinds = [e.kind for e in events]
            assert kinds.count(EventKind.FINISHED) == 1, (rid, kinds)
            assert kinds[-1] is EventKind.FINISHED, (rid, kinds)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert await self.journaled(rid) == {"a", "b", "c"}
            outcome = await self.rt.handle(rid).wait()
            assert outcome.status is RunStatus.FINISHED
        log = await self.effect_log()
        assert sorted(log) == sorted((r, s) for r in ids for s in "abc"), log


@dataclass
class WorkerProc:
    """A ``mainspring worker`` process, its output in files."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    @classmethod
    def spawn(
        cls, env: Env, *, concurrency: int, drain: float, ttl: float, extra: tuple[str, ...]
    ) -> WorkerProc:
        tag = uuid.uuid4().hex[:6]
        out, err = env.tmp / f"worker-{tag}.out", env.tmp / f"worker-{tag}.err"
        penv = dict(os.environ)
        penv.update(
            MAINSPRING_EFFECT_URL=f"{env.base}#{env.schema}",
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONPATH=str(ROOT),
        )
        penv.pop("MAINSPRING_STORE", None)
        args = [
            sys.executable, "-m", "mainspring", "worker", "--store", env.url,
            "--queue", QUEUE, "--concurrency", str(concurrency),
            "--graph", "tests.queue_graphs:steps", "--lease-ttl", str(ttl),
            "--drain-timeout", str(drain), *extra,
        ]  # fmt: skip
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(args, cwd=ROOT, env=penv, stdout=o, stderr=e)
        return cls(proc, out, err)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.out.read_text() + self.err.read_text()

    async def owner(self) -> str:
        """This worker's owner id, once it is working (it prints it as it starts)."""

        async def said() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.log()}")
            return "mainspring worker " in self.out.read_text()

        await until(said, "a worker to start")
        line = next(ln for ln in self.out.read_text().splitlines() if "mainspring worker " in ln)
        return line.split("mainspring worker ", 1)[1].split(": queues", 1)[0]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def exited(self) -> int:
        with anyio.fail_after(DEADLINE):
            while self.proc.poll() is None:
                await anyio.sleep(0.05)
        return self.proc.returncode

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


async def until(pred: Callable[[], Awaitable[bool]], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``pred`` until true; fail saying ``what`` was awaited after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await anyio.sleep(0.02)


@contextlib.asynccontextmanager
async def open_env(tmp: Path) -> AsyncIterator[Env]:
    """A fresh schema with the effect tables, a client runtime on it; the workers started
    through it are killed (and the schema dropped) at the end."""
    async with postgres_schema_url() as url:
        base, _, query = url.partition("?")
        schema = query.partition("schema=")[2].partition("&")[0]
        graphs = [steps, steps_retried]
        async with Runtime(store_from_url(url), graphs=graphs, recover="off") as rt:
            conn = await asyncpg.connect(base)
            await conn.execute(EFFECT_TABLES.format(schema=schema))
            e = Env(url, schema, base, rt, tmp, conn)
            try:
                yield e
            finally:
                for w in e.workers:
                    w.end()
                e.conn.terminate()
