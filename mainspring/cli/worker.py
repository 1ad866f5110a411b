"""``mainspring worker``: a stateless process driving the runs of queues in PostgreSQL.

Any number run at once on as many hosts, against one store: each claims runs of its
queues (``--queue``) as it has free slots (``--concurrency``), wakes on the store's
notifications (no polling while idle), keeps its runs' leases with a heartbeat and takes
over the runs of a worker that died once their leases expire (``--lease-ttl``).
SIGTERM (or Ctrl-C) drains: no new claims, live runs get ``--drain-timeout`` seconds to
finish or park, the rest are handed back at once to the other workers; a second signal
hands them back now. ``--health-port`` serves /healthz, /readyz and /metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Annotated, Any

import anyio
import typer

from ._common import (
    EXIT_REFUSED,
    CliError,
    DebugOption,
    ModelsOption,
    StoreOption,
    ToolsOption,
    import_capability,
    import_graph,
    run_async,
)

_DEFAULT_STORE_HINT = "postgresql://user@host/db (or MAINSPRING_STORE)"


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)


_QueueOption = Annotated[
    list[str] | None,
    typer.Option("--queue", "-q", metavar="NAME", help="A queue to work on (repeatable)."),
]

_ConcurrencyOption = Annotated[
    int, typer.Option("--concurrency", "-c", min=1, help="Runs driven at once.")
]

_GraphOption = Annotated[
    list[str] | None,
    typer.Option(
        "--graph",
        "-g",
        metavar="MODULE:ATTR",
        help="A graph this worker drives (repeatable); runs of other graphs are left to "
        "workers that know them, or imported from the ref their journal records.",
    ),
]

_LeaseTtlOption = Annotated[
    float,
    typer.Option(
        "--lease-ttl",
        min=0.5,
        metavar="SECONDS",
        help="How long a run's lease lasts unrenewed: a dead worker's runs are taken "
        "over within this (plus about a second).",
    ),
]

_DrainTimeoutOption = Annotated[
    float,
    typer.Option(
        "--drain-timeout",
        min=0,
        metavar="SECONDS",
        help="On SIGTERM, how long live runs get to finish or park before they are "
        "handed back to other workers.",
    ),
]

_HealthPortOption = Annotated[
    int | None,
    typer.Option(
        "--health-port",
        min=0,
        max=65535,
        help="Serve /healthz, /readyz and /metrics (Prometheus) on this port.",
    ),
]

_HealthHostOption = Annotated[
    str, typer.Option("--health-host", help="Address of the health port.")
]


def worker(
    store: StoreOption = "",
    queue: _QueueOption = None,
    concurrency: _ConcurrencyOption = 8,
    graph: _GraphOption = None,
    lease_ttl: _LeaseTtlOption = 30.0,
    drain_timeout: _DrainTimeoutOption = 30.0,
    health_port: _HealthPortOption = None,
    health_host: _HealthHostOption = "0.0.0.0",
    models: ModelsOption = None,
    tools: ToolsOption = None,
    debug: DebugOption = False,
) -> None:
    """Drive the runs of --queue from the PostgreSQL store on --store, until SIGTERM.

    Start runs into a queue with Runtime.start(graph, input, queue="NAME") or the HTTP
    API; see them with `mainspring queue`.
    """
    if not store:
        raise CliError(f"mainspring worker needs --store {_DEFAULT_STORE_HINT}")
    if not store.startswith(("postgresql://", "postgres://")):
        raise CliError(
            f"--store {store}: workers share a PostgreSQL store (postgresql://user@host/db); "
            "an embedded store is driven by the process that opens it (mainspring serve)"
        )
    if not queue:
        raise CliError("name the queues to work on: --queue NAME (repeatable)")
    graphs = [import_graph(ref) for ref in graph or []]
    options: dict[str, Any] = {
        "models": import_capability(models or os.environ.get("MAINSPRING_MODELS"), "models"),
        "tools": import_capability(tools or os.environ.get("MAINSPRING_TOOLS"), "tools"),
        "memory": import_capability(os.environ.get("MAINSPRING_MEMORY"), "memory"),
    }
    if not logging.getLogger().handlers:
        logging.basicConfig(
            stream=sys.stderr,
            level=logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )

    async def go() -> None:
        await _work(store, queue, concurrency, graphs, lease_ttl, drain_timeout,
                    health_port, health_host, options)  # fmt: skip

    run_async(go)
    typer.echo("mainspring worker: stopped; runs not finished were handed back to the queue")


async def _work(
    url: str,
    queues: list[str],
    concurrency: int,
    graphs: list[Any],
    lease_ttl: float,
    drain_timeout: float,
    health_port: int | None,
    health_host: str,
    options: dict[str, Any],
) -> None:
    from ..engine.runtime import Runtime
    from ..errors import MainspringError
    from ..store import store_from_url
    from ..worker import Worker

    try:
        rt = Runtime(
            store_from_url(url), graphs=graphs, lease_ttl=lease_ttl, drain_timeout=0, **options
        )
        await rt.__aenter__()
    except (MainspringError, OSError) as exc:
        raise CliError(f"cannot open the store {url}: {exc}", EXIT_REFUSED) from None
    try:
        w = Worker(rt, queues, concurrency=concurrency, drain_timeout=drain_timeout)
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                w.stop()
            else:  # a second signal: hand the runs back now
                w.stop(now=True)
                rt.stop_draining()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        async with anyio.create_task_group() as tg:
            if health_port is not None:
                from ..worker.health import serve_health

                tg.start_soon(serve_health, w, health_host, health_port)
            typer.echo(
                f"mainspring worker {rt.owner}: queues {', '.join(queues)}; "
                f"{concurrency} at once; store {url}"
                + (f"; health on {health_host}:{health_port}" if health_port is not None else ""),
            )
            await w.run()
            tg.cancel_scope.cancel()
    finally:
        await rt.__aexit__(None, None, None)
