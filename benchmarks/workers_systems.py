"""W16's adapters: each system behind the same small interface (benchmarks/workers.py drives it).

A :class:`System` makes its fresh database or schema, spawns worker processes (each says
``ready`` to the probe, or answers ``/readyz``), enqueues jobs from this process and tears
everything down. Worker processes run ``workers.py --worker KIND ...`` (the anchors) or
``mainspring worker ...`` (the contract's CLI), in sessions of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import stop_group
from workers_jobs import DBOS_APP, DBOS_WORKFLOW, MS_GRAPH, QUEUE, STEPS, TASK
from workers_probe import Probe

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKERS_PY = HERE / "workers.py"
LOGS = Path(tempfile.gettempdir()) / "mainspring-w16"  # the worker processes' output


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    trace: bool = False
    sleep: float = 0.0


@dataclass
class Proc:
    """One worker process."""

    index: int
    process: subprocess.Popen[bytes]
    label: str  # DBOS: its executor id

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL, as a crash: no clean-up of any kind."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        stop_group(self.process)

    def tell(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()


@dataclass
class System:
    """What a benchmark needs of a system; subclasses fill in the system's calls."""

    name: str
    base_url: str  # postgresql://postgres@127.0.0.1:5432/test
    probe: Probe
    concurrency: int
    steps: int = STEPS
    step_unit: str = "durable steps"
    procs: list[Proc] = field(default_factory=list)
    spawned: int = 0

    async def setup(self) -> None: ...
    async def teardown(self) -> None: ...
    def worker_args(self, index: int, label: str) -> list[str]:
        raise NotImplementedError

    async def enqueue(self, jobs: list[Job]) -> None:
        """Enqueue ``jobs`` as fast as the system's client allows, each stamped just before."""
        raise NotImplementedError

    async def spawn(self, count: int = 1, label: str | None = None) -> list[Proc]:
        """Start ``count`` worker processes and wait until each is ready."""
        new = []
        for _ in range(count):
            index = self.spawned
            self.spawned += 1
            args = self.worker_args(index, label or f"w{index}")
            env = {
                **os.environ,
                "W16_PROBE": str(self.probe.port),
                "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]),
            }
            LOGS.mkdir(exist_ok=True)
            with open(LOGS / f"{self.name}-{index}.log", "wb") as log:  # the child keeps its own
                process = subprocess.Popen(
                    args,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            new.append(Proc(index, process, label or f"w{index}"))
        for proc in new:
            await self.wait_ready(proc)
        self.procs.extend(new)
        return new

    async def wait_ready(self, proc: Proc) -> None:
        await self.probe.wait_ready(proc.pid, proc.process, timeout=60)

    def signal_all(self, signum: int) -> None:
        """``signum`` to every worker process (SIGSTOP / SIGCONT: freeze while a backlog fills)."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signum)

    def check_alive(self) -> None:
        """Raise if a worker process exited (a server restart can end one): no use waiting."""
        for proc in self.procs:
            if proc.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} worker {proc.pid} exited with {proc.process.returncode} "
                    f"(its output: {LOGS}/{self.name}-{proc.index}.log)"
                )

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.stop()
        self.procs.clear()


async def _admin(base_url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(base_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _db_url(base_url: str, database: str) -> str:
    head, _, _ = base_url.split("?")[0].rpartition("/")
    return f"{head}/{database}"


async def fresh_database(base_url: str, database: str) -> str:
    await _admin(base_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    await _admin(base_url, f'CREATE DATABASE "{database}"')
    return _db_url(base_url, database)


async def drop_database(base_url: str, database: str) -> None:
    await _admin(base_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _python_worker(kind: str, *args: str) -> list[str]:
    return [sys.executable, str(WORKERS_PY), "--worker", kind, *args]


# -- DBOS ------------------------------------------------------------------------------------


@dataclass
class Dbos(System):
    """DBOS queues: a registered queue polled by each DBOS process (``polling_interval_sec``)."""

    poll: float = 1.0
    database: str = "bench_w16_dbos"
    url: str = ""
    client: Any = None

    async def setup(self) -> None:
        self.url = await fresh_database(self.base_url, self.database)

    def worker_args(self, index: int, label: str) -> list[str]:
        return _python_worker(
            "dbos", "--url", self.url, "--concurrency", str(self.concurrency),
            "--poll", str(self.poll), "--label", label,
        )  # fmt: skip

    async def spawn(self, count: int = 1, label: str | None = None) -> list[Proc]:
        procs = await super().spawn(count, label)
        if self.client is None:  # the system database exists once a DBOS process launched
            from dbos import DBOSClient

            self.client = DBOSClient(system_database_url=self.url, application_name=DBOS_APP)
        return procs

    async def set_poll(self, poll: float) -> None:
        """The queue's polling interval, written to its row (a worker reads it as it starts)."""
        self.poll = poll
        await asyncio.to_thread(
            self.client.register_queue,
            QUEUE,
            worker_concurrency=self.concurrency,
            polling_interval_sec=poll,
            application_name=DBOS_APP,
        )

    async def resume_dead(self, executor_id: str) -> int:
        """What a supervisor that saw ``executor_id`` die does, with DBOS's public API: resume
        its PENDING workflows onto the queue (from their last completed step)."""

        def run() -> int:
            pending = self.client.list_workflows(
                status="PENDING", executor_id=executor_id, load_input=False, load_output=False
            )
            ids = [w.workflow_id for w in pending]
            if ids:
                self.client.resume_workflows(ids, queue_name=QUEUE)
            return len(ids)

        return await asyncio.to_thread(run)

    async def enqueue(self, jobs: list[Job]) -> None:
        options = {"workflow_name": DBOS_WORKFLOW, "queue_name": QUEUE}

        def run() -> None:
            for job in jobs:
                self.client.enqueue(options, job.id, time.time(), job.trace, job.sleep)

        await asyncio.to_thread(run)

    async def teardown(self) -> None:
        self.stop_all()
        if self.client is not None:
            self.client.destroy()
        await drop_database(self.base_url, self.database)


# -- PgQueuer ----------------------------------------------------------------------------------


@dataclass
class PgQueuer(System):
    """PgQueuer: LISTEN/NOTIFY wake-ups, one job = one step; jobs of a dead worker are picked
    again once their heartbeat is ``heartbeat`` seconds old."""

    heartbeat: float = 2.0
    database: str = "bench_w16_pgqueuer"
    url: str = ""
    conn: Any = None
    queries: Any = None

    async def setup(self) -> None:
        import asyncpg
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        self.steps, self.step_unit = 1, "jobs (1 step each)"
        self.url = await fresh_database(self.base_url, self.database)
        self.conn = await asyncpg.connect(self.url)
        self.queries = Queries(AsyncpgDriver(self.conn))
        await self.queries.install()

    def worker_args(self, index: int, label: str) -> list[str]:
        return _python_worker(
            "pgqueuer", "--url", self.url, "--concurrency", str(self.concurrency),
            "--heartbeat", str(self.heartbeat),
        )  # fmt: skip

    async def enqueue(self, jobs: list[Job]) -> None:
        def payload(job: Job) -> bytes:
            body = {"job": job.id, "enq": time.time(), "trace": job.trace, "sleep": job.sleep}
            return json.dumps(body).encode()

        if len(jobs) == 1:
            await self.queries.enqueue(TASK, payload(jobs[0]))
            return
        for chunk in _chunks(jobs, 500):  # the batch insert: one statement per chunk
            await self.queries.enqueue(
                [TASK] * len(chunk), [payload(j) for j in chunk], [0] * len(chunk)
            )

    async def teardown(self) -> None:
        self.stop_all()
        if self.conn is not None:
            await self.conn.close()
        await drop_database(self.base_url, self.database)


# -- Procrastinate -------------------------------------------------------------------------------


@dataclass
class Procrastinate(System):
    """Procrastinate: LISTEN/NOTIFY wake-ups (polling every 5 s as a fallback), one job = one
    step."""

    database: str = "bench_w16_procrastinate"
    url: str = ""
    app: Any = None
    opened: Any = None

    async def setup(self) -> None:
        from workers_jobs import procrastinate_app

        self.steps, self.step_unit = 1, "jobs (1 step each)"
        self.url = await fresh_database(self.base_url, self.database)
        self.app = procrastinate_app(self.url)
        self.opened = self.app.open_async()
        await self.opened.__aenter__()
        await self.app.schema_manager.apply_schema_async()

    def worker_args(self, index: int, label: str) -> list[str]:
        return _python_worker(
            "procrastinate", "--url", self.url, "--concurrency", str(self.concurrency)
        )

    async def enqueue(self, jobs: list[Job]) -> None:
        task = self.app.tasks[TASK]

        def kwargs(job: Job) -> dict[str, Any]:
            return {"job": job.id, "enq": time.time(), "trace": job.trace, "sleep": job.sleep}

        if len(jobs) == 1:
            await task.defer_async(**kwargs(jobs[0]))
            return
        for chunk in _chunks(jobs, 500):
            await task.batch_defer_async(*[kwargs(j) for j in chunk])

    async def teardown(self) -> None:
        self.stop_all()
        if self.opened is not None:
            await self.opened.__aexit__(None, None, None)
        await drop_database(self.base_url, self.database)


# -- Mainspring ------------------------------------------------------------------------------------


@dataclass
class Mainspring(System):
    """``mainspring worker`` processes on a schema of the PostgreSQL store (issue 16's contract):
    runs started with ``rt.start(graph, input, queue=...)``, claimed with SKIP LOCKED, woken by
    NOTIFY; a dead worker's runs are taken once their lease (``--lease-ttl``) expires."""

    lease_ttl: float = 2.0
    schema: str = "bench_w16_mainspring"
    url: str = ""
    runtime: Any = None
    ports: dict[int, int] = field(default_factory=dict)

    async def setup(self) -> None:
        from mainspring import Runtime

        await _admin(self.base_url, f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        sep = "&" if "?" in self.base_url else "?"
        self.url = f"{self.base_url}{sep}schema={self.schema}"
        # recover="off": this process only enqueues; the workers run and take over runs.
        self.runtime = Runtime.open(self.url, recover="off", graphs=[MS_GRAPH])
        await self.runtime.__aenter__()

    def worker_args(self, index: int, label: str) -> list[str]:
        port = self.ports[index] = _free_port()
        cli = Path(sys.executable).parent / "mainspring"
        return [
            str(cli), "worker", "--store", self.url, "--queue", QUEUE,
            "--concurrency", str(self.concurrency), "--graph", "workers_jobs:MS_GRAPH",
            "--lease-ttl", str(self.lease_ttl), "--health-port", str(port),
            "--health-host", "127.0.0.1",
        ]  # fmt: skip

    async def wait_ready(self, proc: Proc) -> None:
        url = f"http://127.0.0.1:{self.ports[proc.index]}/readyz"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.process.poll() is not None:
                raise RuntimeError(f"mainspring worker exited with {proc.process.returncode}")
            with (
                contextlib.suppress(OSError),  # not listening yet; 503: not ready
                await asyncio.to_thread(urllib.request.urlopen, url, timeout=1) as answer,
            ):
                if answer.status == 200:
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError("mainspring worker: /readyz did not answer 200 within 60 s")

    async def enqueue(self, jobs: list[Job]) -> None:
        async def one(job: Job) -> None:
            state = {"job": job.id, "enq": time.time(), "trace": job.trace, "sleep": job.sleep}
            await self.runtime.start(MS_GRAPH, state, queue=QUEUE)

        if len(jobs) == 1:
            await one(jobs[0])
            return
        for chunk in _chunks(jobs, 16):  # 16 starts in flight: the client's pool, not one conn
            await asyncio.gather(*(one(j) for j in chunk))

    async def teardown(self) -> None:
        self.stop_all()
        if self.runtime is not None:
            await self.runtime.__aexit__(None, None, None)
        await _admin(self.base_url, f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


def _chunks(items: list[Job], size: int) -> list[list[Job]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
