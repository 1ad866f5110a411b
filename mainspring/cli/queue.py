"""``mainspring queue`` and ``mainspring schedule``: the run queues of a PostgreSQL store.

``queue`` (or ``queue show``) prints each queue's depth (runs waiting), its oldest wait,
runs delayed, running and failed as poisoned, its limits, and the live workers with the
leases they hold. ``queue set NAME`` sets a queue's limits, which every worker obeys at
its next claim. ``schedule add|list|remove`` keeps cron schedules, whose ticks the
queue's workers start, each exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table

from ._common import (
    EXIT_REFUSED,
    CliError,
    DebugOption,
    JsonOption,
    StoreOption,
    echo_json,
    importable_cwd,
    out,
    parse_json,
    run_async,
)

if TYPE_CHECKING:
    from ..store.postgres import PostgresStore

T = TypeVar("T")

queue_app = typer.Typer(
    help="Run queues of the PostgreSQL store: depth, workers and leases; limits.",
    invoke_without_command=True,
)
schedule_app = typer.Typer(
    help="Cron schedules: a run of a graph in a queue at every tick.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(queue_app, name="queue")
    app.add_typer(schedule_app, name="schedule")


def _with_store(url: str, fn: Callable[[PostgresStore], Awaitable[T]]) -> T:
    if not url.startswith(("postgresql://", "postgres://")):
        raise CliError(
            f"--store {url or '(none)'}: run queues live in a PostgreSQL store; pass "
            "--store postgresql://user@host/db or set MAINSPRING_STORE"
        )
    from ..errors import MainspringError
    from ..store.postgres import PostgresStore

    async def go() -> T:
        store = PostgresStore(url)
        try:
            await store.open()
        except (MainspringError, OSError) as exc:
            raise CliError(f"cannot open the store {url}: {exc}", EXIT_REFUSED) from None
        try:
            return await fn(store)
        finally:
            await store.aclose()

    return run_async(go)


@queue_app.callback()
def queue_root(
    ctx: typer.Context,
    store: StoreOption = "",
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Show every queue and the live workers (same as `mainspring queue show`)."""
    if ctx.invoked_subcommand is None:
        show(store, as_json)


@queue_app.command("show")
def show(store: StoreOption = "", as_json: JsonOption = False, debug: DebugOption = False) -> None:
    """Each queue's depth, oldest wait, delayed, running and poisoned runs, and its limits;
    the live workers with the leases they hold."""

    async def read(s: PostgresStore) -> tuple[Any, Any]:
        return await s.queues.stats(), await s.queues.workers()

    stats, workers = _with_store(store, read)
    if as_json:
        echo_json(
            {
                "queues": [asdict(q) for q in stats],
                "workers": [asdict(w) for w in workers],
            }
        )
        return
    table = Table("queue", "waiting", "oldest", "delayed", "running", "poisoned", "limits")
    for q in stats:
        table.add_row(
            q.name, str(q.waiting), _age(q.oldest_waiting), str(q.delayed), str(q.running),
            str(q.poisoned), _limits(q.config),
        )  # fmt: skip
    out().print(table if stats else 'no queues yet: start runs with queue="NAME"')
    now = time.time()
    wt = Table(
        "worker", "host", "queues", "busy/slots", "state", "runs held", "lease until", "seen"
    )
    for w in workers:
        lease = f"+{w.lease_until - now:.1f}s" if w.lease_until else "-"
        wt.add_row(
            w.owner, w.host, ",".join(w.queues), f"{w.busy}/{w.slots}", w.state, str(w.runs),
            lease, f"{now - w.seen_at:.1f}s ago",
        )  # fmt: skip
    out().print(wt if workers else "no live workers (start one: mainspring worker --queue NAME)")


@queue_app.command("set")
def set_limits(
    name: Annotated[str, typer.Argument(help="The queue.")],
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="Runs at once, all workers.")
    ] = None,
    per_tenant: Annotated[
        int | None, typer.Option("--per-tenant", min=1, help="Runs at once per tenant.")
    ] = None,
    per_key: Annotated[
        int | None,
        typer.Option("--per-key", min=1, help="Runs at once per concurrency key."),
    ] = None,
    rate: Annotated[
        str | None, typer.Option("--rate", help="Starts per period: 50/s, 600/m, 1000/h.")
    ] = None,
    max_attempts: Annotated[
        int,
        typer.Option(
            "--max-attempts",
            min=1,
            help="Workers that may die driving a run before it fails as poisoned.",
        ),
    ] = 3,
    store: StoreOption = "",
    debug: DebugOption = False,
) -> None:
    """Set queue NAME's limits (options not given: no limit)."""
    from ..errors import StoreError
    from ..worker import QueueConfig

    try:
        config = QueueConfig(name, concurrency, per_tenant, per_key, rate, max_attempts)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    _with_store(store, lambda s: s.queues.configure(config))
    typer.echo(f"queue {name}: {_limits(config)}")


@schedule_app.command("add")
def add_schedule(
    name: Annotated[str, typer.Argument(help="The schedule's name (its runs' ids start so).")],
    cron: Annotated[str, typer.Option("--cron", help="When, in UTC: e.g. '*/5 * * * *'.")],
    graph: Annotated[
        str, typer.Option("--graph", "-g", metavar="MODULE:ATTR", help="The graph to run.")
    ],
    queue: Annotated[str, typer.Option("--queue", "-q", help="The queue its runs go to.")],
    input: Annotated[str, typer.Option("--input", "-i", help="The runs' input (JSON).")] = "null",
    tenant: Annotated[str | None, typer.Option("--tenant", help="The runs' tenant.")] = None,
    store: StoreOption = "",
    debug: DebugOption = False,
) -> None:
    """Add (or replace) a schedule: a run of --graph in --queue at every tick of --cron."""
    from ..errors import MainspringError
    from ..store._pg_queue import check_queue_name
    from ..store._pg_schedules import Schedule
    from ..worker.schedules import next_tick

    value = parse_json(input, "--input")
    try:
        check_queue_name(queue)
        first = next_tick(cron, time.time())
    except MainspringError as exc:
        raise CliError(str(exc)) from None
    if ":" not in graph:
        raise CliError(f"--graph {graph}: give MODULE:ATTR, importable by the workers")
    _check_input(graph, value)
    metadata = {"tenant": tenant} if tenant else {}
    schedule = Schedule(name, cron, graph, value, queue, metadata, first)
    _with_store(store, lambda s: s.schedules.put(schedule))
    typer.echo(f"schedule {name}: {cron} (UTC) -> {graph} in queue {queue}; next {_when(first)}")


@schedule_app.command("list")
def list_schedules(
    store: StoreOption = "", as_json: JsonOption = False, debug: DebugOption = False
) -> None:
    """Every schedule with its next tick and last run."""
    found = _with_store(store, lambda s: s.schedules.all())
    if as_json:
        echo_json([asdict(s) for s in found])
        return
    table = Table("schedule", "cron (UTC)", "graph", "queue", "next", "last run")
    for s in found:
        table.add_row(s.name, s.cron, s.graph, s.queue, _when(s.next_at), s.last_run or "-")
    out().print(table if found else "no schedules")


@schedule_app.command("remove")
def remove_schedule(
    name: Annotated[str, typer.Argument(help="The schedule.")],
    store: StoreOption = "",
    debug: DebugOption = False,
) -> None:
    """Remove a schedule (runs it started are left as they are)."""
    if not _with_store(store, lambda s: s.schedules.remove(name)):
        raise CliError(f"no schedule {name!r} (see `mainspring schedule list`)", EXIT_REFUSED)
    typer.echo(f"schedule {name}: removed")


def _check_input(ref: str, value: Any) -> None:
    """Refuse an input the graph would refuse at every tick (when the graph imports here;
    the workers must import it, this machine need not)."""
    from ..engine.loader import load_graph
    from ..engine.runs import check_input
    from ..errors import MainspringError

    importable_cwd()
    try:
        graph = load_graph(ref)
    except MainspringError:
        return
    try:
        check_input(graph, "schedule", value)
    except (MainspringError, TypeError, ValueError) as exc:
        raise CliError(f"--input: {exc}") from None


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _limits(config: Any) -> str:
    if config is None:
        return "none"
    parts = [
        f"{label} {value}"
        for label, value in (
            ("concurrency", config.concurrency),
            ("per tenant", config.per_tenant),
            ("per key", config.per_key),
            ("rate", config.rate),
        )
        if value is not None
    ]
    return ", ".join([*parts, f"max attempts {config.max_attempts}"])
