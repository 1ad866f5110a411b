"""The ``tools`` command: each tool's circuit breaker and limits, from the limits backend.

    mainspring tools --limits redis://127.0.0.1:6379/0 --tools myapp.tools:toolbox

``--limits`` is where the processes keep their limits (``Resilience(backend=...)``):
``redis://...`` or ``postgresql://...?schema=``; ``memory://`` shows only the tools'
declared limits (in-memory state belongs to its process). ``--tools`` names the
toolbox (``MODULE:ATTR``, a Toolbox or a function returning one): its tools are listed
with their limits; without it, every tool the backend holds state for.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

import typer
from rich.table import Table

from ._common import CliError, DebugOption, JsonOption, echo_json, import_ref, out, run_async

LimitsOption = Annotated[
    str,
    typer.Option(
        "--limits",
        "-l",
        envvar="MAINSPRING_LIMITS",
        help="The limits backend: redis://host:port/db, postgresql://...?schema=, or memory://.",
    ),
]
ToolsOption = Annotated[
    str | None,
    typer.Option("--tools", "-t", help="The toolbox, MODULE:ATTR (importable from here)."),
]
PrefixOption = Annotated[
    str, typer.Option("--prefix", help="The Redis key prefix the processes use.")
]


def register(app: typer.Typer) -> None:
    app.command("tools")(tools)


def tools(
    limits: LimitsOption = "memory://",
    toolbox: ToolsOption = None,
    prefix: PrefixOption = "mainspring:tools:",
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Print each tool's circuit breaker state (closed, open, half_open) and its limits:
    tokens left of its rate limit, calls in flight of its concurrency limit."""
    found = _toolbox(toolbox)
    states = run_async(partial(_read, limits, prefix, found))
    if as_json:
        echo_json([_row(s) for s in states], indent=True)
        return
    table = Table("tool", "tenant", "breaker", "failures", "rate limit", "in flight")
    for s in states:
        breaker = s.breaker if s.retry_in is None else f"{s.breaker} ({s.retry_in:.1f} s left)"
        rate = "-" if s.rate is None else f"{s.tokens or 0:.1f}/{s.burst} @ {s.rate:g}/s"
        if s.rate is None and s.tokens is not None:
            rate = f"{s.tokens:.1f} tokens"
        flight = f"{s.in_flight}/{s.concurrency}" if s.concurrency else str(s.in_flight)
        table.add_row(s.tool, s.tenant or "", breaker, str(s.failures), rate, flight)
    console = out()
    console.print(table)
    if not states:
        console.print(f"no tools: name a toolbox with --tools, or none has state in {limits}")


async def _read(url: str, prefix: str, toolbox: Any) -> list[Any]:
    from ..tools.limits_url import open_limits
    from ..tools.states import read_states

    try:
        backend = open_limits(url)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if hasattr(backend, "prefix"):  # Redis
        backend.prefix = prefix
    try:
        return await read_states(backend, list(toolbox) if toolbox is not None else [])
    finally:
        await backend.aclose()


def _toolbox(ref: str | None) -> Any:
    if not ref:
        return None
    found = import_ref(ref, "tools", "a Toolbox")
    box = found() if callable(found) and not hasattr(found, "specs") else found
    if not hasattr(box, "specs"):
        raise CliError(f"--tools {ref} is {box!r}, not a mainspring.tools.Toolbox")
    return box


def _row(state: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(state)
