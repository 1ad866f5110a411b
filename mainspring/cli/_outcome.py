"""What a command says about a run: its outcome, pending interrupts, and how to continue."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.text import Text

from ..engine import PendingInterrupt, RunOutcome
from ..events import Event, Interrupted, Resumed
from ..store import RunRecord, RunStatus
from ._common import DEFAULT_STORE, EXIT_OK, EXIT_RUN_FAILED
from ._render import compact, error_text, jsonable, print_json


def pending_from_journal(events: Iterable[Event]) -> list[PendingInterrupt]:
    """Interrupts the journal shows asked and not yet answered (no graph needed)."""
    pending: dict[str, PendingInterrupt] = {}
    for e in events:
        d = e.data
        if isinstance(d, Interrupted):
            pending[d.id] = PendingInterrupt(d.id, d.node, d.payload)
        elif isinstance(d, Resumed):
            for iid in d.values:
                pending.pop(iid, None)
    return list(pending.values())


def record_json(record: RunRecord) -> dict[str, Any]:
    data: dict[str, Any] = jsonable(asdict(record))
    data["status"], data["durability"] = record.status.value, record.durability.value
    data["tenant"] = record.tenant
    return data


def outcome_json(outcome: RunOutcome) -> dict[str, Any]:
    return {
        "run_id": outcome.run_id,
        "status": outcome.status.value,
        "seq": outcome.seq,
        "state": jsonable(outcome.state),
        "interrupts": [
            {"id": i.id, "node": i.node, "payload": jsonable(i.payload)} for i in outcome.interrupts
        ],
        "error": jsonable(outcome.error),
    }


def exit_code(status: RunStatus) -> int:
    """0 for a run that finished or waits on an interrupt; 1 for anything else."""
    return EXIT_OK if status in (RunStatus.FINISHED, RunStatus.INTERRUPTED) else EXIT_RUN_FAILED


def command(*words: str, store: str, value: bool = False, tenant: str | None = None) -> str:
    """A command line to paste: ``--store`` added unless it is the default (``--server``
    for a server's URL), ``--tenant`` when the command acted as one."""
    cmd = shlex.join(["mainspring", *words]) + (" --value '<JSON>'" if value else "")
    if store.startswith(("http://", "https://")):  # a server's URL (--server), never a store's
        cmd += f" --server {shlex.quote(store)}"
    elif store != DEFAULT_STORE:
        cmd += f" --store {shlex.quote(store)}"
    return cmd if tenant is None else f"{cmd} --tenant {shlex.quote(tenant)}"


def resume_command(
    run_id: str, store: str, interrupt_id: str | None = None, tenant: str | None = None
) -> str:
    extra = [] if interrupt_id is None else ["--interrupt", interrupt_id]
    return command("resume", run_id, *extra, store=store, value=True, tenant=tenant)


def print_pending(
    console: Console,
    run_id: str,
    pending: list[PendingInterrupt],
    store: str,
    tenant: str | None = None,
) -> None:
    n = len(pending)
    console.print(
        Text(f"⏸ run {run_id} is waiting on {n} interrupt{'s' if n != 1 else ''}:", "bold yellow")
    )
    for i in pending:
        console.print(Text(f"  {i.id} (node {i.node}): {compact(i.payload, 200)}"), soft_wrap=True)
    console.print("continue with:")
    for i in pending:
        console.print(
            Text("  " + resume_command(run_id, store, i.id if n > 1 else None, tenant), "bold"),
            soft_wrap=True,
        )


def print_outcome(
    console: Console, outcome: RunOutcome, *, store: str, debug: bool, tenant: str | None = None
) -> None:
    run_id = outcome.run_id
    status = outcome.status
    if status is RunStatus.FINISHED:
        console.print(Text(f"✓ run {run_id} finished (seq {outcome.seq})", "bold green"))
        console.print(Text("final state:", "bold"))
        print_json(console, outcome.state)
    elif status is RunStatus.INTERRUPTED:
        print_pending(console, run_id, outcome.interrupts, store, tenant)
    elif status is RunStatus.FAILED:
        error = outcome.error or {}
        where = f" in node {error['node']!r}" if error.get("node") else ""
        console.print(
            Text(f"✗ run {run_id} failed{where}: {error_text(error)}", "bold red"), soft_wrap=True
        )
        if debug and error.get("traceback"):
            console.print(Text(str(error["traceback"]).rstrip(), "red"), soft_wrap=True)
        show = command("show", run_id, store=store, tenant=tenant)
        console.print(Text(f"see its journal: {show}", "dim"), soft_wrap=True)
    elif status is RunStatus.CANCELLED:
        console.print(Text(f"■ run {run_id} was cancelled", "bold magenta"))
    else:
        console.print(
            Text(
                f"run {run_id} stopped before it finished; its journal is resumable: "
                + command("resume", run_id, store=store, tenant=tenant),
                "bold red",
            ),
            soft_wrap=True,
        )
