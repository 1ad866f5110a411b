"""The ``doctor`` command: check a store without changing it.

It examines a store that ``open`` refuses as corrupt as well as a healthy one:
the file is read through a read-only connection, never opened as a store.
"""

from __future__ import annotations

from functools import partial

import typer
from rich.text import Text

from ..store._doctor import Diagnosis, diagnose
from ._common import (
    DEFAULT_STORE,
    EXIT_OK,
    EXIT_RUN_FAILED,
    DebugOption,
    JsonOption,
    StoreOption,
    echo_json,
    out,
    run_async,
)


def register(app: typer.Typer) -> None:
    app.command(
        "doctor",
        epilog="Exit code 0 when the store is healthy, 1 when problems were found, "
        "3 when it cannot be opened.",
    )(doctor)


def doctor(
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Check a store without changing it: the file's integrity and every run's journal.

    SQLite: a full integrity check of the file (it works on a file open refuses).
    Every store: each run's events numbered 1 to its last sequence number without
    gaps, starting with run_started, nothing after its end, a status that agrees
    with its last event.
    """
    report = run_async(partial(diagnose, store))
    if as_json:
        echo_json(
            {
                "store": report.store,
                "healthy": report.healthy,
                "checks": report.checks,
                "runs": report.runs,
                "events": report.events,
                "problems": report.problems,
            },
            indent=True,
        )
    else:
        _print(report)
    raise typer.Exit(EXIT_OK if report.healthy else EXIT_RUN_FAILED)


def _print(report: Diagnosis) -> None:
    console = out()
    for problem in report.problems:
        console.print(Text.assemble(("✗ ", "bold red"), problem), soft_wrap=True)
    checked = f"{' and '.join(report.checks)} of {report.runs} runs and {report.events} events"
    if report.healthy:
        console.print(
            Text(f"✓ {report.store} is healthy ({checked})", "bold green"), soft_wrap=True
        )
        return
    count = len(report.problems)
    console.print(
        Text(
            f"✗ {count} problem{'s' if count != 1 else ''} in {report.store} ({checked}); "
            "restore it from a backup, or keep it aside for investigation",
            "bold red",
        ),
        soft_wrap=True,
    )
