"""Commands that list and read journals: ``runs``, ``threads`` and ``show`` (they never write)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.text import Text

from ..store import RunRecord, RunStatus, ThreadInfo
from ._common import (
    DEFAULT_STORE,
    DebugOption,
    JsonOption,
    StoreOption,
    TenantOption,
    echo_json,
    out,
    run_async,
)
from ._outcome import pending_from_journal, print_pending, record_json
from ._render import Progress, fmt_age, fmt_time, print_rows, status_text, timeline_rows
from ._target import ApiKeyOption, ServerOption, open_target

RunArg = Annotated[str, typer.Argument(metavar="RUN", help="Id of the run.")]


def register(app: typer.Typer) -> None:
    app.command("runs")(runs)
    app.command("threads")(threads)
    app.command("show")(show)


def runs(
    status: Annotated[
        list[RunStatus] | None,
        typer.Option(
            "--status", case_sensitive=False, help="Only runs with this status (repeatable)."
        ),
    ] = None,
    graph: Annotated[
        str | None,
        typer.Option("--graph", "-g", metavar="NAME", help="Only runs of the graph of this name."),
    ] = None,
    thread: Annotated[
        str | None, typer.Option("--thread", "-t", help="Only runs of this thread.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="At most this many runs.")
    ] = 50,
    store: StoreOption = DEFAULT_STORE,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """List runs, newest first (with --json, one JSON object per line).

    A running run marked `running*` is held by no live process (it crashed):
    continue it with `mainspring resume RUN`.
    """

    async def go() -> tuple[list[RunRecord], set[str]]:
        async with open_target(store, server, api_key, tenant) as rt:
            found = await rt.list_runs(
                status=status or None, graph=graph, thread=thread, limit=limit
            )
            return found, await rt.orphans()

    found, orphans = run_async(go)
    if as_json:
        for record in found:
            echo_json({**record_json(record), "orphaned": record.run_id in orphans})
        return
    console = out()
    if not found:
        console.print("no runs match", style="dim")
        return
    now = time.time()
    # The admin view over several tenants says whose each run is.
    tenants = tenant is None and any(r.tenant for r in found)
    head = ("run", "graph", "thread", "status", "created", "updated", "seq")
    rows = [[Text(h, "bold") for h in (("tenant", *head) if tenants else head)]]
    for r in found:
        orphan = "*" if r.run_id in orphans else ""
        rows.append(
            [
                *([Text(r.tenant or "-")] if tenants else []),
                Text(r.run_id),
                Text(r.graph),
                Text(r.thread or "-"),
                status_text(r.status, orphan),
                Text(fmt_time(r.created_at)),
                Text(fmt_age(r.updated_at, now)),
                Text(str(r.last_seq)),
            ]
        )
    print_rows(console, rows, right=[7 if tenants else 6])
    if orphans & {r.run_id for r in found}:
        console.print(
            "* left unfinished by a process that is gone: mainspring resume RUN", style="dim"
        )


def threads(
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="At most this many threads.")
    ] = 50,
    store: StoreOption = DEFAULT_STORE,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """List threads (sessions) with their latest run, most recently updated first."""

    async def go() -> list[ThreadInfo]:
        async with open_target(store, server, api_key, tenant) as rt:
            return await rt.list_threads(limit=limit)

    infos = run_async(go)
    if as_json:
        for t in infos:
            echo_json(
                {
                    "thread": t.thread,
                    "runs": t.runs,
                    "last_run_id": t.last_run_id,
                    "last_status": t.last_status.value,
                    "updated_at": t.updated_at,
                    "tenant": t.tenant,
                }
            )
        return
    if not infos:
        out().print("no threads", style="dim")
        return
    tenants = tenant is None and any(t.tenant for t in infos)
    head = ("thread", "runs", "last run", "status", "updated")
    rows = [[Text(h, "bold") for h in (("tenant", *head) if tenants else head)]]
    for t in infos:
        rows.append(
            [
                *([Text(t.tenant or "-")] if tenants else []),
                Text(t.thread),
                Text(str(t.runs)),
                Text(t.last_run_id),
                status_text(t.last_status),
                Text(fmt_age(t.updated_at)),
            ]
        )
    print_rows(out(), rows, right=[2 if tenants else 1])


def show(
    run_id: RunArg,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep printing new events until the run ends or parks."
        ),
    ] = False,
    store: StoreOption = DEFAULT_STORE,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Show a run's journal as a timeline: seq, time, kind, step, node and what happened.

    With --json, prints the events as JSON lines.
    """

    async def go() -> None:
        async with open_target(store, server, api_key, tenant) as rt:
            record = await rt.get_run(run_id)
            events = await rt.events(run_id)
            if as_json:
                for e in events:
                    echo_json(e.to_json())
            else:
                console = out()
                _header(record)
                print_rows(console, timeline_rows(events), right=[0, 1, 3])
            if follow:
                progress = Progress(out())
                progress.base = events[0].ts if events else None
                after = events[-1].seq if events else 0
                async for e in rt.handle(run_id).events(after=after, deltas=False):
                    if as_json:
                        echo_json(e.to_json())
                    else:
                        progress.show(e)
                    events.append(e)
                record = await rt.get_run(run_id)
            if as_json:
                return
            if record.status is RunStatus.INTERRUPTED:
                print_pending(out(), run_id, pending_from_journal(events), rt.where, tenant)
            elif record.error:
                out().print(Text(f"error: {record.error}", "red"), soft_wrap=True)

    run_async(go)


def _header(r: RunRecord) -> None:
    line = Text.assemble(
        ("run ", "bold"),
        (r.run_id, "bold cyan"),
        "  graph ",
        (r.graph, "bold"),
        "  status ",
        status_text(r.status),
    )
    if r.thread:
        line.append(f"  thread {r.thread}")
    if r.parent_run_id:
        line.append(f"  parent {r.parent_run_id}")
    forked = r.metadata.get("forked_from")
    if isinstance(forked, dict):
        line.append(f"  forked from {forked.get('run_id')} at seq {forked.get('seq')}")
    out().print(line, soft_wrap=True)
    out().print(
        f"created {fmt_time(r.created_at)}  updated {fmt_time(r.updated_at)}  "
        f"{r.last_seq} events  durability {r.durability.value}",
        style="dim",
    )
