"""Commands that drive runs: ``run``, ``resume``, ``fork`` (with live progress) and ``cancel``."""

from __future__ import annotations

import enum
from typing import Annotated

import typer
from rich.text import Text

from ..engine import PendingInterrupt
from ..engine.timetravel import ForkEffects
from ..status import Durability, RunStatus
from ._common import (
    DEFAULT_STORE,
    ActorOption,
    CliError,
    DebugOption,
    GraphOption,
    JsonOption,
    ModelsOption,
    StoreOption,
    TenantOption,
    ToolsOption,
    actor_or_default,
    driving,
    echo_json,
    import_graph,
    out,
    parse_json,
    run_async,
)
from ._handle import GraphArg, Handle
from ._outcome import (
    command,
    exit_code,
    outcome_json,
    pending_from_journal,
    print_outcome,
    resume_command,
)
from ._render import Progress, compact
from ._target import ApiKeyOption, ServerOption, exists, open_target

_EXIT_HELP = (
    "Exit code 0 when the run finishes or waits on an interrupt, 1 when it fails or is "
    "cancelled, 2 for a usage error, 3 when the store or the run refuses."
)


def register(app: typer.Typer) -> None:
    app.command("run", epilog=_EXIT_HELP)(run)
    app.command("resume", epilog=_EXIT_HELP)(resume)
    app.command("fork", epilog=_EXIT_HELP)(fork)
    app.command("cancel")(cancel)


async def _follow(
    handle: Handle,
    *,
    after: int,
    store: str,
    as_json: bool,
    debug: bool,
    tenant: str | None = None,
) -> int:
    """Print the run's events from ``after`` as they happen, then its outcome; the exit code."""
    if not as_json:
        progress = Progress(out())
        async for event in handle.events(after=after, deltas=False):
            progress.show(event)
    outcome = await handle.wait()
    if as_json:
        echo_json(outcome_json(outcome), indent=True)
    else:
        print_outcome(out(), outcome, store=store, debug=debug, tenant=tenant)
    return exit_code(outcome.status)


def run(
    ctx: typer.Context,
    graph: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:GRAPH",
            help="The graph to run, e.g. myapp.agents:support (importable from the current "
            "directory); with --server, the name the server serves it under (or its ref).",
        ),
    ],
    input: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            metavar="JSON",
            help="The run's input as JSON, or @file.json (@- reads stdin).",
        ),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            help="Id of the new run (default: a random one). An existing id starts nothing: "
            "its run is shown instead.",
        ),
    ] = None,
    thread: Annotated[
        str | None, typer.Option("--thread", "-t", help="Thread (session) the run belongs to.")
    ] = None,
    durability: Annotated[
        Durability | None,
        typer.Option(
            case_sensitive=False,
            help="When steps are committed: sync (fsync each step), batch (group commits), "
            "off (fastest, lost on a crash). Default: sync.",
        ),
    ] = None,
    store: StoreOption = DEFAULT_STORE,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    tenant: TenantOption = None,
    models: ModelsOption = None,
    tools: ToolsOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Run a graph: show each step, effect and interrupt as it happens, then the final state.

    A run that parks on an interrupt is not an error: the command prints the pending
    interrupts and the exact `mainspring resume` command to continue it.
    With --json, prints only the outcome as one JSON object.
    """
    value = parse_json(input, "--input") if input is not None else None
    app: GraphArg = graph if server else import_graph(graph)  # a server has its own graphs

    async def go() -> int:
        target = open_target(
            store, server, api_key, tenant, create=True, models=models, tools=tools
        )
        async with target as rt:
            existed = await exists(rt, run_id)
            handle = await rt.start(app, value, run_id=run_id, thread=thread, durability=durability)
            driving(
                ctx, handle.run_id, command("resume", handle.run_id, store=rt.where, tenant=tenant)
            )
            if existed and not as_json:
                out().print(
                    Text(
                        f"run {handle.run_id} already exists; nothing started, showing it", "yellow"
                    )
                )
            return await _follow(
                handle, after=0, store=rt.where, as_json=as_json, debug=debug, tenant=tenant
            )

    raise typer.Exit(run_async(go))


def resume(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Id of the run to continue.")],
    value: Annotated[
        str | None,
        typer.Option(
            "--value",
            "-v",
            metavar="JSON",
            help="The answer to the pending interrupt as JSON, or @file.json; "
            "required when the run waits on one (--value null answers null).",
        ),
    ] = None,
    interrupt: Annotated[
        str | None,
        typer.Option(
            "--interrupt",
            metavar="ID",
            help="Which pending interrupt --value answers, when there are several.",
        ),
    ] = None,
    graph: GraphOption = None,
    store: StoreOption = DEFAULT_STORE,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    tenant: TenantOption = None,
    actor: ActorOption = None,
    models: ModelsOption = None,
    tools: ToolsOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Continue a run: answer its pending interrupt, or pick up a run a crashed process left.

    Shows the progress like `mainspring run` and prints the final state. The graph is
    imported from the reference recorded when the run started, or from --graph.
    """
    answer = parse_json(value, "--value") if value is not None else None

    async def go() -> int:
        async with open_target(store, server, api_key, tenant, models=models, tools=tools) as rt:
            where = rt.where
            record = await rt.get_run(run_id)
            driving(ctx, run_id, command("resume", run_id, store=where, tenant=tenant))
            if record.status is RunStatus.INTERRUPTED:
                pending = pending_from_journal(await rt.events(run_id))
                problem = _unanswered(run_id, pending, value is not None, interrupt, where, tenant)
                if problem:
                    raise CliError(problem)
            handle = await rt.resume(
                run_id, answer, interrupt_id=interrupt, graph=graph, actor=actor_or_default(actor)
            )
            return await _follow(
                handle,
                after=record.last_seq,
                store=where,
                as_json=as_json,
                debug=debug,
                tenant=tenant,
            )

    raise typer.Exit(run_async(go))


def _unanswered(
    run_id: str,
    pending: list[PendingInterrupt],
    has_value: bool,
    chosen: str | None,
    store: str,
    tenant: str | None,
) -> str | None:
    """What --value and --interrupt leave unanswered about a parked run, if anything."""

    def asks(items: list[PendingInterrupt]) -> str:
        return "; ".join(f"{i.id} (node {i.node}): {compact(i.payload)}" for i in items)

    if chosen is not None:
        named = [i for i in pending if i.id == chosen]
        if not named:
            ids = ", ".join(i.id for i in pending) or "none"
            return (
                f"run {run_id!r} has no pending interrupt {chosen!r}; pending: {ids}; "
                "name one with --interrupt ID"
            )
        pending = named
    elif len(pending) > 1:
        return (
            f"run {run_id!r} is waiting on {len(pending)} interrupts: {asks(pending)}; answer "
            "one at a time with --interrupt ID --value JSON, e.g. "
            + resume_command(run_id, store, pending[0].id, tenant)
        )
    if not has_value:
        return (
            f"run {run_id!r} is waiting on interrupt {asks(pending) or '(unknown)'}; answer it "
            "with --value JSON (--value null answers null)"
        )
    return None


class ForkChoice(enum.StrEnum):
    rerun = "rerun"
    reuse = "reuse"


def fork(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Id of the run to fork.")],
    at: Annotated[
        int | None,
        typer.Option(
            "--at",
            metavar="SEQ",
            min=1,
            help="Copy the journal up to this sequence number (see `mainspring show RUN`); "
            "default: all of it.",
        ),
    ] = None,
    new_run_id: Annotated[
        str | None, typer.Option("--run-id", help="Id of the new run (default: a random one).")
    ] = None,
    thread: Annotated[
        str | None, typer.Option("--thread", "-t", help="Thread of the new run (default: RUN's).")
    ] = None,
    effects: Annotated[
        ForkChoice | None,
        typer.Option(
            "--effects",
            help="What to do with side effects RUN made after --at: 'rerun' calls them again "
            "(new idempotency keys), 'reuse' takes their recorded results where the fork makes "
            "the same call. Required when there are any.",
        ),
    ] = None,
    graph: GraphOption = None,
    store: StoreOption = DEFAULT_STORE,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    tenant: TenantOption = None,
    actor: ActorOption = None,
    models: ModelsOption = None,
    tools: ToolsOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Time travel: start a new run from RUN's journal up to --at, and run it from there.

    Effects recorded before --at are not repeated; those after it are repeated or reused
    only as --effects says. Prints the new run's id, its progress and its outcome (with
    --json, the outcome with the new run_id).
    """

    async def go() -> int:
        async with open_target(store, server, api_key, tenant, models=models, tools=tools) as rt:
            source = await rt.get_run(run_id)
            seq = source.last_seq if at is None else at
            choice: ForkEffects | None = None
            if effects is not None:
                choice = "rerun" if effects is ForkChoice.rerun else "reuse"
            handle = await rt.fork(
                run_id,
                seq,
                new_run_id=new_run_id,
                thread=thread,
                effects=choice,
                graph=graph,
                actor=actor_or_default(actor),
            )
            driving(
                ctx, handle.run_id, command("resume", handle.run_id, store=rt.where, tenant=tenant)
            )
            if not as_json:
                out().print(
                    Text.assemble(
                        "forked ",
                        (run_id, "bold"),
                        f" at seq {seq} as new run ",
                        (handle.run_id, "bold cyan"),
                    )
                )
            return await _follow(
                handle, after=seq, store=rt.where, as_json=as_json, debug=debug, tenant=tenant
            )

    raise typer.Exit(run_async(go))


def cancel(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Id of the run to cancel.")],
    graph: GraphOption = None,
    store: StoreOption = DEFAULT_STORE,
    server: ServerOption = None,
    api_key: ApiKeyOption = None,
    tenant: TenantOption = None,
    actor: ActorOption = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Cancel a run that waits on an interrupt or was left unfinished by a crashed process.

    The journal ends with a `cancelled` event; a run another live process drives must be
    cancelled there.
    """

    async def go() -> RunStatus:
        async with open_target(store, server, api_key, tenant) as rt:
            return await rt.cancel(run_id, graph=graph, actor=actor_or_default(actor))

    status = run_async(go)
    if as_json:
        echo_json({"run_id": run_id, "status": status.value})
    else:
        out().print(Text(f"■ run {run_id} {status.value}", "bold magenta"))
