"""The ``memory`` commands: add to, search, list and forget semantic memory from a shell.

Every command takes ``--url`` (default ``$MAINSPRING_SEMANTIC``, else
``sqlite:///memory.db``), ``--tenant`` and, where it matters, ``--user``/``--agent``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from ._common import DebugOption, JsonOption, echo_json, fail, run_async

if TYPE_CHECKING:
    from ..memory.semantic import SemanticMemory

T = TypeVar("T")

memory_app = typer.Typer(
    help="Semantic memory: add, search, list, forget (docs/memory-semantic.md).",
    no_args_is_help=True,
)

UrlOption = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="MAINSPRING_SEMANTIC",
        help="Semantic memory: sqlite:///PATH (embedded) or postgresql://... (shared).",
    ),
]
TenantOpt = Annotated[str, typer.Option("--tenant", envvar="MAINSPRING_TENANT", help="Tenant.")]
UserOpt = Annotated[str | None, typer.Option("--user", help="The user the items belong to.")]
AgentOpt = Annotated[str | None, typer.Option("--agent", help="The agent the items belong to.")]
_EXIT_USAGE = 2


def register(app: typer.Typer) -> None:
    app.add_typer(memory_app, name="memory")


@asynccontextmanager
async def _opened(url: str) -> AsyncIterator[SemanticMemory]:
    from ..memory.semantic import SemanticMemory

    async with SemanticMemory.open(url) as memory:
        yield memory


def _run(url: str, fn: Callable[[SemanticMemory], Awaitable[T]]) -> T:
    async def go() -> T:
        async with _opened(url) as memory:
            return await fn(memory)

    try:
        return run_async(go)
    except (ValueError, TypeError, KeyError) as exc:  # bad input: what to fix
        fail(str(exc), _EXIT_USAGE)


def _scope(tenant: str, user: str | None, agent: str | None) -> Any:
    from ..memory.scope import Scope

    return Scope(tenant, user, agent)


def _filters(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f'--filter is not JSON ({exc}); give e.g. \'{{"kind": "faq"}}\'', 2)
    if not isinstance(value, dict):
        fail('--filter must be a JSON object, e.g. \'{"kind": "faq"}\'', 2)
    return value


@memory_app.command("add")
def add(
    text: Annotated[str, typer.Argument(help="The fact or passage to remember.")],
    url: UrlOption = "sqlite:///memory.db",
    tenant: TenantOpt = "",
    user: UserOpt = None,
    agent: AgentOpt = None,
    key: Annotated[
        str | None, typer.Option("--key", help="Subject; a later fact replaces it.")
    ] = None,
    metadata: Annotated[str | None, typer.Option("--metadata", help="A JSON object.")] = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Remember TEXT (embedded before the command exits)."""
    meta = _filters(metadata)

    async def go(memory: SemanticMemory) -> Any:
        written = await memory.add(text, scope=_scope(tenant, user, agent), metadata=meta, key=key)
        return await memory.settle(written.id) if written.status != "duplicate" else written

    result = _run(url, go)
    if as_json:
        import msgspec

        echo_json(msgspec.to_builtins(result))
        return
    extra = f" (duplicate of {result.duplicate_of})" if result.duplicate_of else ""
    extra += f" (supersedes {', '.join(result.supersedes)})" if result.supersedes else ""
    typer.echo(f"{result.id} {result.status}{extra}")


@memory_app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    url: UrlOption = "sqlite:///memory.db",
    tenant: TenantOpt = "",
    user: UserOpt = None,
    agent: AgentOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many results.")] = 10,
    mode: Annotated[str, typer.Option("--mode", help="hybrid, vector or keyword.")] = "hybrid",
    filter_: Annotated[
        str | None, typer.Option("--filter", help='Metadata filter, JSON: {"kind": "faq"}.')
    ] = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """The items best matching QUERY, best first."""
    filters = _filters(filter_)

    async def go(memory: SemanticMemory) -> Any:
        scope = _scope(tenant, user, agent)
        return await memory.search(query, scope=scope, limit=limit, filters=filters, mode=mode)  # type: ignore[arg-type]

    hits = _run(url, go)
    if as_json:
        import msgspec

        echo_json(msgspec.to_builtins(hits))
        return
    for hit in hits:
        typer.echo(f"{hit.score:7.4f}  {hit.item.id}  {_one_line(hit.item.text)}")


@memory_app.command("list")
def list_(
    url: UrlOption = "sqlite:///memory.db",
    tenant: TenantOpt = "",
    user: UserOpt = None,
    agent: AgentOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many items.")] = 100,
    after: Annotated[str | None, typer.Option("--after", help="Page on after this id.")] = None,
    superseded: Annotated[
        bool, typer.Option("--superseded", help="Include items a newer fact replaced.")
    ] = False,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """The items of a scope, oldest first."""

    async def go(memory: SemanticMemory) -> Any:
        scope = _scope(tenant, user, agent)
        return await memory.list(scope, limit=limit, after=after, include_superseded=superseded)

    items = _run(url, go)
    if as_json:
        import msgspec

        echo_json(msgspec.to_builtins(items))
        return
    for item in items:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(item.recorded_at))
        mark = " [superseded]" if item.superseded_by else ""
        typer.echo(f"{item.id}  {when}  {_one_line(item.text)}{mark}")


@memory_app.command("forget")
def forget(
    ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Items to delete.")],
    url: UrlOption = "sqlite:///memory.db",
    tenant: TenantOpt = "",
    debug: DebugOption = False,
) -> None:
    """Delete items for good."""

    async def go(memory: SemanticMemory) -> int:
        return await memory.forget(ids, tenant=tenant)

    typer.echo(f"forgot {_run(url, go)} of {len(ids)}")


def _one_line(text: str, width: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
