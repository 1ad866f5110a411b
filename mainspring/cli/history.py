"""Time-travel reads: ``state`` (a run's state at any sequence number) and ``replay``.

Neither writes to the store: a replay runs against a scratch copy in memory.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from ..engine import StateView
from ._common import (
    DEFAULT_STORE,
    EXIT_OK,
    EXIT_RUN_FAILED,
    DebugOption,
    GraphOption,
    JsonOption,
    StoreOption,
    TenantOption,
    echo_json,
    out,
    run_async,
)
from ._render import compact, jsonable, print_json, status_text
from ._target import ApiKeyOption, ServerOption, open_target

RunArg = Annotated[str, typer.Argument(metavar="RUN", help="Id of the run.")]


def register(app: typer.Typer) -> None:
    app.command("state")(state)
    app.command("replay", epilog="Exit code 0 when the replay matches, 1 when it diverges.")(replay)


def state(
    run_id: RunArg,
    at: Annotated[
        int | None,
        typer.Option(
            "--at", metavar="SEQ", min=1, help="As of this sequence number (default: now)."
        ),
    ] = None,
    graph: GraphOption = None,
    store: StoreOption = DEFAULT_STORE,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Show a run's state now or as of --at SEQ: values, next nodes, pending interrupts."""

    async def go() -> StateView:
        async with open_target(store, server, api_key, tenant) as rt:
            return await rt.state(run_id, at=at, graph=graph)

    view = run_async(go)
    if as_json:
        echo_json(
            {
                "run_id": view.run_id,
                "seq": view.seq,
                "step": view.step,
                "status": view.status.value,
                "values": jsonable(view.values),
                "next": view.next,
                "interrupts": [
                    {"id": i.id, "node": i.node, "payload": jsonable(i.payload)}
                    for i in view.interrupts
                ],
            },
            indent=True,
        )
        return
    console = out()
    console.print(
        Text.assemble(
            ("run ", "bold"),
            (view.run_id, "bold cyan"),
            f" at seq {view.seq}, step {view.step}: ",
            status_text(view.status),
        )
    )
    if view.next:
        console.print(f"next: {', '.join(view.next)}")
    for i in view.interrupts:
        console.print(
            Text(f"interrupt {i.id} (node {i.node}): {compact(i.payload, 200)}", "yellow"),
            soft_wrap=True,
        )
    console.print(Text("values:", "bold"))
    print_json(console, view.values)


def replay(
    run_id: RunArg,
    graph: GraphOption = None,
    store: StoreOption = DEFAULT_STORE,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    tenant: TenantOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Re-run a run against its recorded effects and report the first divergence, if any.

    Nothing external runs and the store is not written: use it to check that changed
    graph code still reproduces recorded runs.
    """

    async def go() -> int:
        async with open_target(store, server, api_key, tenant) as rt:
            report = await rt.replay(run_id, graph=graph)
        d = report.divergence
        if as_json:
            echo_json(
                {
                    "run_id": report.run_id,
                    "ok": report.ok,
                    "compared": report.compared,
                    "divergence": None
                    if d is None
                    else {"seq": d.seq, "recorded": d.expected, "replayed": d.actual},
                },
                indent=True,
            )
        elif d is None:
            out().print(Text(f"✓ {report}", "bold green"), soft_wrap=True)
        else:
            console = out()
            console.print(
                Text(
                    f"✗ run {run_id}: replay diverges at seq {d.seq} after {report.compared} "
                    "matching facts",
                    "bold red",
                ),
                soft_wrap=True,
            )
            console.print(Text.assemble(("  recorded: ", "bold"), d.expected), soft_wrap=True)
            console.print(
                Text.assemble(("  replayed: ", "bold"), (d.actual, "red")), soft_wrap=True
            )
        return EXIT_OK if report.ok else EXIT_RUN_FAILED

    raise typer.Exit(run_async(go))
