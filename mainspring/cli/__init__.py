"""The ``mainspring`` command line: run graphs, inspect and continue their journals.

Every command takes ``--store URL`` (default: ``$MAINSPRING_STORE``, else
``sqlite:///mainspring.db`` in the current directory). Exit codes are documented
in :mod:`mainspring.cli._common`: 0 done or parked, 1 run failed or replay
diverged, 2 usage error, 3 refused by the store or the run, 4 internal error.

Commands live in modules by concept, each with ``register(app)``; they are all
registered in :func:`_register`, the one place a new module is added.
"""

from __future__ import annotations

import io
import sys
from typing import Annotated

import typer

from .. import __version__
from . import (
    audit,
    doctor,
    drive,
    graphs,
    history,
    journal,
    keys,
    memory,
    memory_archive,
    observe,
    policy,
    queue,
    serve,
    tools,
    worker,
)
from ._common import CliGroup, DebugOption

__all__ = ["app", "main"]

app = typer.Typer(
    name="mainspring",
    cls=CliGroup,
    help="Mainspring: durable, journal-backed runs of AI agent graphs.",
    epilog="Exit codes: 0 done (finished, or parked on an interrupt); 1 run failed or cancelled, "
    "or replay diverged; 2 usage error; 3 refused by the store or the run; 4 internal error.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"mainspring {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version."),
    ] = False,
    debug: DebugOption = False,
) -> None:
    """Mainspring: durable, journal-backed runs of AI agent graphs.

    Start with `mainspring run MODULE:GRAPH --input JSON`, list runs with `mainspring runs`,
    read one with `mainspring show RUN`.
    """


def _register(app: typer.Typer) -> None:
    """Add every command module's commands to ``app``: the one place to plug a module in."""
    modules = (drive, journal, history, graphs, observe, doctor, tools, policy, audit, memory, keys)
    for module in (
        *modules,
        serve,
        worker,
        queue,
        memory_archive,
    ):  # memory_archive joins the "memory" group
        module.register(app)


_register(app)


def main() -> None:
    """Entry point of the ``mainspring`` console script."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):  # a terminal that cannot show ▶ ✓ ⏸ gets '?'
            stream.reconfigure(errors="replace")
    app(prog_name="mainspring")
