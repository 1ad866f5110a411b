"""A worker's probes and metrics over HTTP, for Kubernetes and Prometheus (``--health-port``).

``GET /healthz``: 200 while the worker's loop lives (liveness). ``GET /readyz``: 200 when
the store answers and the worker is not draining, else 503 (readiness). ``GET /metrics``:
Prometheus text: per queue the runs waiting (``mainspring_queue_depth``, what an
autoscaler scales on), the oldest wait, the runs held; this worker's slots busy and total.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Final

import anyio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..errors import StoreError

PROBE_TIMEOUT: Final = 2.0  # seconds a probe or a scrape waits for the store

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..store._pg_queue import QueueStats
    from .core import Worker


class _Snapshot(Collector):
    """The numbers of one scrape, read from the store just before it."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.stats: list[QueueStats] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["queue"]
        depth = GaugeMetricFamily("mainspring_queue_depth", "Runs waiting to start", labels=labels)
        oldest = GaugeMetricFamily(
            "mainspring_queue_oldest_seconds", "How long the oldest waiting run has waited",
            labels=labels,
        )  # fmt: skip
        running = GaugeMetricFamily(
            "mainspring_queue_running", "Runs held by a live worker", labels=labels
        )
        delayed = GaugeMetricFamily(
            "mainspring_queue_delayed", "Runs waiting for their start time", labels=labels
        )
        found = {q.name: q for q in self.stats}
        for name in self.worker.queues:  # a queue with no runs yet says 0, not nothing
            q = found.get(name)
            depth.add_metric([name], q.waiting if q else 0)
            oldest.add_metric([name], (q.oldest_waiting or 0.0) if q else 0.0)
            running.add_metric([name], q.running if q else 0)
            delayed.add_metric([name], q.delayed if q else 0)
        yield from (depth, oldest, running, delayed)
        yield GaugeMetricFamily(
            "mainspring_worker_slots_busy", "Runs this worker drives now", value=self.worker.busy
        )
        yield GaugeMetricFamily(
            "mainspring_worker_slots_total", "Runs this worker may drive at once",
            value=self.worker.concurrency,
        )  # fmt: skip


def health_app(worker: Worker) -> Starlette:
    snapshot = _Snapshot(worker)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(snapshot)

    async def healthz(request: Request) -> Response:
        alive = worker.state in ("starting", "running", "draining")
        return JSONResponse({"status": worker.state}, status_code=200 if alive else 503)

    async def readyz(request: Request) -> Response:
        if worker.state != "running":
            return JSONResponse({"ready": False, "why": worker.state}, status_code=503)
        why = f"the store did not answer within {PROBE_TIMEOUT:g} s"
        with anyio.move_on_after(PROBE_TIMEOUT):  # a probe answers now, not after retries
            try:
                await worker.store.queues.next_wake(worker.queues, worker.runtime.owner)
                why = ""
            except StoreError as exc:
                why = str(exc)
        if why:
            return JSONResponse({"ready": False, "why": why}, status_code=503)
        return JSONResponse({"ready": True, "busy": worker.busy, "slots": worker.concurrency})

    async def metrics(request: Request) -> Response:
        snapshot.stats = []  # unread (the store down): the worker's own gauges still count
        with anyio.move_on_after(PROBE_TIMEOUT), contextlib.suppress(StoreError):
            snapshot.stats = await worker.store.queues.stats()
        body: Any = generate_latest(registry)
        return PlainTextResponse(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ]
    )


class _ProbeServer:
    """uvicorn's Server without its signal handling: the worker command has its own."""

    @staticmethod
    def make(config: Any) -> Any:
        import contextlib

        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        return Server(config)


async def serve_health(worker: Worker, host: str, port: int) -> None:
    """Serve the probes until cancelled."""
    import uvicorn

    config = uvicorn.Config(
        health_app(worker), host=host, port=port, log_level="warning", lifespan="off",
        access_log=False,
    )  # fmt: skip
    await _ProbeServer.make(config).serve()
