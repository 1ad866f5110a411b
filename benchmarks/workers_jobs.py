"""W16's worker processes and their jobs: one job body per system, reporting to a UDP probe.

Every job is told (in its input) the job id, when it was enqueued (``time.time()`` just before
the benchmark's enqueue call), whether to trace each step, and how long each step sleeps. It
sends datagrams to the benchmark's probe (``$W16_PROBE``, a port on 127.0.0.1):

* ``start|JOB|PID|T|LATENCY`` when the job's body begins (LATENCY = T - enqueued),
* ``step|JOB|PID|T|I`` before step I when tracing (takeover: which process runs it, when),
* ``done|JOB|PID|T|`` after the last step,
* ``ready|-|PID|T|`` once a worker process is up (before its first claim).

A datagram costs a few microseconds and no database work, so what is measured is the queue.
The system's imports happen inside each ``*_worker`` function: this module is also the graph
module ``mainspring worker --graph workers_jobs:MS_GRAPH`` imports, which needs none of them.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from typing import Any, TypedDict

from mainspring import END, START, CompiledGraph, Graph

STEPS = 10  # durable steps per job where the system has steps (DBOS, Mainspring)
QUEUE = "w16"
DBOS_APP = "w16"
DBOS_WORKFLOW = "w16_job"
TASK = "w16_job"  # PgQueuer's entrypoint and Procrastinate's task

_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
_port = int(os.environ.get("W16_PROBE", "0"))


def probe(kind: str, job: str, extra: object = "") -> None:
    """One datagram to the benchmark (nothing when no probe port was given)."""
    if _port:
        line = f"{kind}|{job}|{os.getpid()}|{time.time():.6f}|{extra}"
        _sock.sendto(line.encode(), ("127.0.0.1", _port))


def began(job: str, enqueued: float) -> None:
    probe("start", job, f"{time.time() - enqueued:.6f}")


# -- Mainspring: a graph of STEPS nodes, each a durable step ---------------------------------


class JobState(TypedDict, total=False):
    job: str
    enq: float
    trace: bool
    sleep: float
    k: str


def _ms_node(i: int) -> Any:
    async def node(state: JobState) -> dict[str, str]:
        job = state["job"]
        if i == 0:
            began(job, state["enq"])
        if state.get("trace"):
            probe("step", job, i)
        if state.get("sleep"):
            await asyncio.sleep(state["sleep"])
        if i == STEPS - 1:
            probe("done", job)
        return {"k": "v"}

    return node


def _ms_graph() -> CompiledGraph:
    g = Graph(JobState)
    previous = START
    for i in range(STEPS):
        g.node(f"s{i}", _ms_node(i))
        g.edge(previous, f"s{i}")
        previous = f"s{i}"
    g.edge(previous, END)
    return g.compile(name="w16_job", ref="workers_jobs:MS_GRAPH")


MS_GRAPH = _ms_graph()


# -- DBOS: a workflow of STEPS @DBOS.step calls on a registered queue ------------------------


def dbos_worker(url: str, concurrency: int, poll: float, executor_id: str) -> None:
    """A DBOS process: launch, register the queue (``poll``: its polling interval), say ready."""
    from dbos import DBOS, DBOSConfig

    @DBOS.step(name="w16_step")
    def w16_step(job: str, i: int, trace: bool, sleep: float) -> int:
        if trace:
            probe("step", job, i)
        if sleep:
            time.sleep(sleep)
        return i

    @DBOS.workflow(name=DBOS_WORKFLOW)
    def w16_job(job: str, enq: float, trace: bool, sleep: float) -> None:
        began(job, enq)
        for i in range(STEPS):
            w16_step(job, i, trace, sleep)
        probe("done", job)

    config: DBOSConfig = {
        "name": DBOS_APP,
        "system_database_url": url,
        "executor_id": executor_id,
        "application_version": "w16",  # every worker the same version, whatever its source
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    DBOS.register_queue(
        QUEUE,
        worker_concurrency=concurrency,
        polling_interval_sec=poll,
        on_conflict="always_update",
    )
    # The queue thread starts within a second of the registration (DBOS checks every second).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(t.name == f"queue-worker-{QUEUE}" for t in threading.enumerate()):
            break
        time.sleep(0.01)
    probe("ready", "-")
    for _ in _stdin_lines():  # until the benchmark closes stdin (or kills this process)
        pass


def _stdin_lines() -> Any:
    import sys

    for line in sys.stdin:
        yield line.strip()
    # stdin closed: the benchmark is done with this worker
    os._exit(0)


# -- PgQueuer: one entrypoint, LISTEN/NOTIFY ----------------------------------------------------


async def pgqueuer_worker(url: str, concurrency: int, heartbeat: float) -> None:
    from datetime import timedelta

    import asyncpg
    from pgqueuer import Job, QueueManager
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    connection = await asyncpg.connect(url)
    qm = QueueManager(Queries(AsyncpgDriver(connection)))

    @qm.entrypoint(TASK)
    async def w16_job(job: Job) -> None:
        body = json.loads(job.payload or b"{}")
        began(body["job"], body["enq"])
        await _one_step(body)

    probe("ready", "-")
    batch = max(1, concurrency // 2)  # PgQueuer wants max_concurrent_tasks >= 2 x batch_size
    await qm.run(
        batch_size=batch,
        max_concurrent_tasks=max(concurrency, 2 * batch),
        heartbeat_timeout=timedelta(seconds=heartbeat),
        # A job whose worker died is re-picked by a dequeue, and only a timeout wakes an idle
        # worker for it (no NOTIFY): its default, 30 s, would be the takeover time.
        dequeue_timeout=timedelta(seconds=heartbeat),
    )


async def _one_step(body: dict[str, Any]) -> None:
    """A PgQueuer or Procrastinate job is one step (neither has durable steps inside a job)."""
    if body.get("trace"):
        probe("step", body["job"], 0)
    if body.get("sleep"):
        await asyncio.sleep(body["sleep"])
    probe("done", body["job"])


# -- Procrastinate: one task, LISTEN/NOTIFY -------------------------------------------------------


def procrastinate_app(url: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name=TASK, queue=QUEUE)
    async def w16_job(job: str, enq: float, trace: bool, sleep: float) -> None:
        began(job, enq)
        await _one_step({"job": job, "trace": trace, "sleep": sleep})

    return app


async def procrastinate_worker(url: str, concurrency: int) -> None:
    app = procrastinate_app(url)
    async with app.open_async():
        probe("ready", "-")
        await app.run_worker_async(
            queues=[QUEUE], concurrency=concurrency, install_signal_handlers=True
        )
