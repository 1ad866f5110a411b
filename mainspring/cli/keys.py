"""The ``keys`` commands: API keys of ``mainspring serve`` (docs/server-security.md).

Keys live with the store (a table in the SQLite file, or in the PostgreSQL schema), so
``--store`` names the server's store. A key is printed once, when it is made; only the
hash of its secret is kept.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table
from rich.text import Text

from ._common import (
    DEFAULT_STORE,
    EXIT_REFUSED,
    CliError,
    DebugOption,
    JsonOption,
    StoreOption,
    _sqlite_path,
    echo_json,
    err,
    out,
    run_async,
)
from ._render import fmt_time

if TYPE_CHECKING:
    from ..server.keys import KeyInfo, KeyStoreCore

T = TypeVar("T")

keys_app = typer.Typer(
    help="API keys of the HTTP server: create (shown once), list, revoke.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


def _with_keys(url: str, fn: Callable[[KeyStoreCore], Awaitable[T]], *, create: bool) -> T:
    from ..server.keys import key_store_from_url

    path = _sqlite_path(url)
    if not create and path is not None and not path.exists():
        raise CliError(
            f"no Mainspring store at {path}, so no keys; pass --store URL (the server's store) "
            "or set MAINSPRING_STORE",
            EXIT_REFUSED,
        )

    async def go() -> T:
        keys = key_store_from_url(url)
        await keys.open()
        try:
            return await fn(keys)
        finally:
            await keys.aclose()

    return run_async(go)


def key_json(info: KeyInfo) -> dict[str, Any]:
    return {
        "key_id": info.key_id,
        "tenant": info.tenant,
        "scopes": sorted(s.value for s in info.scopes),
        "name": info.name,
        "created_at": info.created_at,
        "revoked_at": info.revoked_at,
    }


@keys_app.command("create")
def create(
    tenant: Annotated[
        str,
        typer.Option(
            "--tenant",
            metavar="NAME",
            help="The tenant the key acts for ('*': every tenant, an operator's key).",
        ),
    ],
    scopes: Annotated[
        str,
        typer.Option(
            "--scopes",
            metavar="LIST",
            help="Comma-separated: read, run, approve, admin (admin implies the others).",
        ),
    ],
    name: Annotated[str, typer.Option("--name", help="A label to recognise the key by.")] = "",
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Make a key and print it once (only its hash is stored: keep it now, or make another)."""
    from ..server.keys import parse_scopes

    try:
        wanted = parse_scopes(scopes)
    except ValueError as exc:
        raise CliError(f"--scopes: {exc}") from None

    async def make(keys: KeyStoreCore) -> tuple[KeyInfo, str]:
        try:
            return await keys.create(tenant, wanted, name)
        except ValueError as exc:
            raise CliError(f"--tenant: {exc}") from None

    info, key = _with_keys(store, make, create=True)
    if as_json:
        echo_json({**key_json(info), "key": key})
        return
    typer.echo(key)
    who = "every tenant (operator)" if info.tenant == "*" else f"tenant {info.tenant!r}"
    err().print(
        Text(
            f"key {info.key_id} for {who}, scopes {', '.join(key_json(info)['scopes'])}: "
            "shown this once; keep it secret (send it as 'Authorization: Bearer <key>')",
            "dim",
        ),
        soft_wrap=True,
    )


@keys_app.command("list")
def list_keys(
    tenant: Annotated[
        str | None, typer.Option("--tenant", metavar="NAME", help="Only this tenant's keys.")
    ] = None,
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """List keys, oldest first, revoked ones too (never their secrets)."""

    async def select(keys: KeyStoreCore) -> list[KeyInfo]:
        return await keys.list(tenant)

    found = _with_keys(store, select, create=False)
    if as_json:
        for info in found:
            echo_json(key_json(info))
        return
    console = out()
    if not found:
        console.print("no keys" + (f" of tenant {tenant!r}" if tenant is not None else ""))
        return
    table = Table(box=None, pad_edge=False)
    for head in ("key", "tenant", "scopes", "name", "created", "revoked"):
        table.add_column(head, style="bold" if head == "key" else None)
    for info in found:
        table.add_row(
            info.key_id,
            info.tenant if info.tenant else "(default)",
            ",".join(key_json(info)["scopes"]),
            info.name or "-",
            fmt_time(info.created_at),
            Text(fmt_time(info.revoked_at), "red") if info.revoked_at else Text("-"),
        )
    console.print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[
        str, typer.Argument(metavar="KEY_ID", help="The key's id (see keys list), or the key.")
    ],
    store: StoreOption = DEFAULT_STORE,
    debug: DebugOption = False,
) -> None:
    """Revoke a key: refused from now on (by a running server within its key cache TTL, 5 s)."""

    from ..server.keys._core import key_id_of

    key_id = key_id_of(key_id) or key_id  # the whole key given: its id

    async def drop(keys: KeyStoreCore) -> tuple[bool, KeyInfo | None]:
        return await keys.revoke(key_id), await keys.get(key_id)

    revoked, info = _with_keys(store, drop, create=False)
    if info is None:
        raise CliError(f"no key {key_id!r} in this store; see 'mainspring keys list'", EXIT_REFUSED)
    if revoked:
        typer.echo(f"revoked key {key_id} (tenant {info.tenant!r})")
    else:
        typer.echo(f"key {key_id} was revoked already, at {fmt_time(info.revoked_at or 0)}")
