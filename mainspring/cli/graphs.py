"""The ``graph`` command: a graph's shape as a Mermaid flowchart."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import DEFAULT_STORE, DebugOption, import_graph

# Accepted so that scripts may pass --store to every command; a graph needs no store.
_UnusedStore = Annotated[str, typer.Option("--store", "-s", envvar="MAINSPRING_STORE", hidden=True)]


def register(app: typer.Typer) -> None:
    app.command("graph")(graph)


def graph(
    ref: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:GRAPH",
            help="The graph, e.g. myapp.agents:support (importable from the current directory).",
        ),
    ],
    store: _UnusedStore = DEFAULT_STORE,
    debug: DebugOption = False,
) -> None:
    """Print a graph's Mermaid flowchart (paste it into any Mermaid viewer or Markdown file).

    Solid arrows are edges, dotted arrows the targets a branch may choose.
    """
    typer.echo(import_graph(ref).to_mermaid().rstrip("\n"))
