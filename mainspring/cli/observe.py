"""Commands that look at runs through their telemetry: ``trace``, ``stats`` and ``metrics``.

All three read journals only; none needs a tracing backend.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from ..errors import RunNotFoundError
from ..events import Event
from ..telemetry.conventions import Capture
from ..telemetry.latency import LatencyStats, latency_stats
from ..telemetry.reader import trace_events
from ..telemetry.spans.derive import derive_spans
from ..telemetry.spans.record import SpanRecord
from ..telemetry.waterfall import fmt_duration, render, to_json
from ._common import (
    DEFAULT_STORE,
    EXIT_REFUSED,
    CliError,
    DebugOption,
    JsonOption,
    StoreOption,
    TenantOption,
    echo_json,
    err,
    open_runtime,
    out,
    run_async,
    scope,
)

RunArg = Annotated[str, typer.Argument(metavar="RUN", help="Id of the run.")]


def register(app: typer.Typer) -> None:
    app.command("trace")(trace)
    app.command("stats")(stats)
    app.command("metrics")(metrics)


def trace(
    run_id: RunArg,
    io: Annotated[
        bool, typer.Option("--io", help="Include inputs, updates and results in --json spans.")
    ] = False,
    store: StoreOption = DEFAULT_STORE,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Draw a run's trace as a waterfall in the terminal, read from its journal.

    Nested spans drawn to scale, the critical path (●), parallel branches (‖), retries,
    waits (░) and errors (red); subgraph runs are included. With --json, prints the spans
    (ids, parents, times in ns, attributes) as one JSON document.
    """

    async def go() -> list[Event]:
        async with open_runtime(store) as admin:
            rt = scope(admin, tenant)
            await rt.get_run(run_id)  # scoped: its subgraph runs are its tenant's too
            return await trace_events(admin.store, run_id)

    events = run_async(go)
    if not events:
        raise RunNotFoundError(run_id)
    spans = derive_spans(events, Capture(enabled=io))
    if as_json:
        echo_json(to_json(spans))
        return
    console = out()
    console.print(render(spans, width=console.width), soft_wrap=True)


def stats(
    graph: Annotated[
        str,
        typer.Argument(metavar="GRAPH", help="Name of the graph (as `mainspring runs` shows it)."),
    ],
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="Over at most this many recent runs.")
    ] = 100,
    store: StoreOption = DEFAULT_STORE,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Latency p50, p95 and p99 per node and per effect over the graph's recent runs.

    Node figures are per attempt (retries count separately); attempts that parked on an
    interrupt are left out. With --json, one JSON object per node or effect.
    """

    async def go() -> tuple[int, list[SpanRecord]]:
        async with open_runtime(store) as admin:
            rt = scope(admin, tenant)
            runs = await rt.list_runs(graph=graph, limit=limit)
            spans: list[SpanRecord] = []
            for record in runs:
                spans.extend(derive_spans(await rt.events(record.run_id)))
            return len(runs), spans

    count, spans = run_async(go)
    if not count:
        raise CliError(
            f"no runs of graph {graph!r} in {store}; `mainspring runs` lists runs and their graphs",
            EXIT_REFUSED,
        )
    rows = latency_stats(spans)
    if as_json:
        for row in rows:
            echo_json({"graph": graph, "runs": count, **row.to_json()})
        return
    console = out()
    console.print(
        Text.assemble(("graph ", "bold"), (graph, "bold cyan"), f"  over {count} recent runs")
    )
    console.print(_stats_table(rows))


def _stats_table(rows: list[LatencyStats]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("", "name", "count", "errors", "p50", "p95", "p99", "max"):
        table.add_column(name, justify="left" if name in ("", "name") else "right", no_wrap=True)
    for row in rows:
        table.add_row(
            Text(row.kind, style="cyan" if row.kind == "node" else "green"),
            row.name,
            str(row.count),
            Text(str(row.errors), style="red" if row.errors else "dim"),
            *(fmt_duration(int(v * 1e9)) for v in (row.p50, row.p95, row.p99, row.max)),
        )
    return table


def metrics(
    port: Annotated[
        int, typer.Option("--port", "-p", min=0, max=65535, help="Port to serve /metrics on.")
    ] = 9464,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (0.0.0.0 for all).")
    ] = "127.0.0.1",
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between reads of the store.")
    ] = 5.0,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="Follow this many recent runs.")
    ] = 1000,
    once: Annotated[
        bool, typer.Option("--once", help="Print the metrics once and exit instead of serving.")
    ] = False,
    store: StoreOption = DEFAULT_STORE,
    tenant: TenantOption = None,
    debug: DebugOption = False,
) -> None:
    """Serve Prometheus metrics computed from the journals of the store's recent runs.

    For a runtime embedded in another process: point Prometheus at http://HOST:PORT/metrics.
    The store is read again every --interval seconds; --once prints the metrics and exits.
    """
    try:
        from prometheus_client import generate_latest, start_http_server

        from ..telemetry.metrics.aggregator import MetricsAggregator
        from ..telemetry.metrics.poller import JournalPoller
        from ..telemetry.metrics.prometheus import PrometheusSink
    except ImportError as exc:
        raise CliError(
            f"metrics need prometheus-client ({exc}); pip install 'mainspring[telemetry]'"
        ) from None

    async def go() -> bytes | None:
        async with open_runtime(store) as admin:
            sink = PrometheusSink()
            aggregator = MetricsAggregator(sink)
            poller = JournalPoller(admin.store, aggregator, limit=limit, tenant=tenant)
            await poller.poll()
            if once:
                return generate_latest(sink.registry)
            try:
                start_http_server(port, addr=host, registry=sink.registry)
            except OSError as exc:
                raise CliError(
                    f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port",
                    EXIT_REFUSED,
                ) from None
            err().print(
                f"serving metrics of {store} at http://{host}:{port}/metrics (Ctrl-C to stop)",
                style="dim",
                soft_wrap=True,
            )
            await poller.run(interval)
            return None

    text = run_async(go)
    if text is not None:
        typer.echo(text.decode(), nl=False)
