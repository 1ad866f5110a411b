"""``memory archive`` and ``memory tier``: browse, promote and compact the cold archive;
run tiering once.

    mainspring memory archive find --archive DIR --tenant acme --thread support-42
    mainspring memory archive get ID --archive DIR --tenant acme
    mainspring memory archive promote ID --archive DIR --tenant acme --session redis://...
    mainspring memory archive compact --archive DIR
    mainspring memory tier --archive DIR --session redis://... --session-idle 86400 --dry-run

The archive is a :class:`~mainspring.memory.archive.LocalArchive` directory
(``--archive``, or ``$MAINSPRING_ARCHIVE``); a command that moves sessions needs a session
memory every process can reach (``--session redis://...``).
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import anyio
import msgspec
import typer

from ._common import EXIT_REFUSED, CliError, DebugOption, echo_json, out

if TYPE_CHECKING:
    from ..memory.archive import LocalArchive, RecordKind
    from ..memory.session.protocol import SessionMemory

T = TypeVar("T")

archive_app = typer.Typer(
    help="Browse, promote and compact the cold archive.", no_args_is_help=True
)

ArchiveOption = Annotated[
    str,
    typer.Option("--archive", "-a", envvar="MAINSPRING_ARCHIVE", metavar="DIR",
                 help="The archive's directory (a LocalArchive)."),
]  # fmt: skip
TenantOption = Annotated[
    str,
    typer.Option("--tenant", envvar="MAINSPRING_TENANT", metavar="NAME",
                 help="The tenant whose records are read (default: the default tenant)."),
]  # fmt: skip
SessionOption = Annotated[
    str | None,
    typer.Option("--session", envvar="MAINSPRING_SESSION", metavar="URL",
                 help="Session memory the sessions go to and come from: redis://host:port/db."),
]  # fmt: skip
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]


def register(app: typer.Typer) -> None:
    """Add ``archive`` and ``tier`` to the ``memory`` group (made here if no module did)."""
    groups = [g.typer_instance for g in app.registered_groups if g.name == "memory"]
    memory_app = next((g for g in groups if g is not None), None)
    if memory_app is None:
        memory_app = typer.Typer(help="Memory (docs/memory-archive.md).", no_args_is_help=True)
        app.add_typer(memory_app, name="memory")
    memory_app.add_typer(archive_app, name="archive")
    memory_app.command("tier")(tier)


def _when(value: str | None, option: str) -> float | None:
    """Epoch seconds, or an ISO 8601 date or time (UTC unless it says otherwise)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise CliError(
            f"{option} {value!r}: give epoch seconds or an ISO 8601 time (2026-01-31T12:00)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds")


def _with_archive(directory: str, fn: Callable[[LocalArchive], Awaitable[T]]) -> T:
    from ..memory.archive import LocalArchive

    async def run() -> T:
        async with LocalArchive(directory) as archive:
            try:
                return await fn(archive)
            except (ValueError, TypeError) as exc:
                raise CliError(str(exc)) from None
            except LookupError as exc:  # an unknown id: KeyError's message is quoted
                raise CliError(str(exc.args[0]) if exc.args else str(exc), EXIT_REFUSED) from None

    return anyio.run(run)


def _session(url: str | None) -> SessionMemory:
    if url is None:
        raise CliError("this needs session memory every process reaches: --session redis://...")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise CliError(f"--session {url!r}: use redis://host:port/db (memory in this process "
                       "would end with the command)")  # fmt: skip
    from ..memory.session import open_session_memory

    return open_session_memory(url)


@archive_app.command("find")
def find(
    archive: ArchiveOption,
    tenant: TenantOption = "",
    thread: Annotated[str | None, typer.Option(help="Only this thread's records.")] = None,
    kind: Annotated[str | None, typer.Option(help="session or item.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Last active at or after (epoch s or ISO).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Last active before (epoch s or ISO).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, oldest first.")] = 100,
    after: Annotated[str | None, typer.Option(help="The last id of the previous page.")] = None,
    json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """List archived records of a tenant: by thread, kind and time of last activity."""
    if kind not in (None, "session", "item"):
        raise CliError(f"--kind {kind!r}: use session or item")
    since_s, until_s = _when(since, "--since"), _when(until, "--until")
    of_kind = cast("RecordKind | None", kind)
    records = _with_archive(archive, lambda a: a.find(
        tenant=tenant, thread=thread, kind=of_kind, since=since_s, until=until_s, limit=limit,
        after=after))  # fmt: skip
    for r in records:
        if json:
            echo_json(msgspec.to_builtins(r))
        else:
            out().print(f"{r.id}  {r.kind:7s}  thread={r.thread or '-'}  last active "
                        f"{_iso(r.time)}  archived {_iso(r.archived_at)}",
                        markup=False, soft_wrap=True)  # fmt: skip
    if not json:
        out().print(f"{len(records)} record(s)", style="dim")


@archive_app.command("get")
def get(
    id: Annotated[str, typer.Argument(help="The record's id.")],
    archive: ArchiveOption,
    tenant: TenantOption = "",
    debug: DebugOption = False,
) -> None:
    """Print one archived record as JSON."""
    record = _with_archive(archive, lambda a: a.get(id, tenant=tenant))
    if record is None:
        raise CliError(f"no archived record {id!r} for tenant {tenant!r}", EXIT_REFUSED)
    echo_json(msgspec.to_builtins(record), indent=True)


@archive_app.command("compact")
def compact(archive: ArchiveOption, debug: DebugOption = False) -> None:
    """Rewrite the archive's segments without removed records (atomically)."""
    report = _with_archive(archive, lambda a: a.compact())
    out().print(f"{report.records} record(s) kept; {report.segments_before} segment(s) of "
                f"{report.bytes_before:,} bytes -> {report.segments_after} of "
                f"{report.bytes_after:,} bytes")  # fmt: skip


@archive_app.command("promote")
def promote(
    id: Annotated[str, typer.Argument(help="The archived session's id.")],
    archive: ArchiveOption,
    tenant: TenantOption = "",
    session: SessionOption = None,
    debug: DebugOption = False,
) -> None:
    """Put an archived session back into session memory and remove it from the archive."""
    from ..memory.archive import Tiering, TieringPolicy

    sessions = _session(session)

    async def run(a: LocalArchive) -> Any:
        async with sessions:
            return await Tiering(TieringPolicy(), a, sessions).promote(id, tenant=tenant)

    record = _with_archive(archive, run)
    out().print(f"promoted {record.kind} {record.id} (thread {record.thread})", markup=False)


def tier(
    archive: ArchiveOption,
    session: SessionOption = None,
    session_idle: Annotated[
        float, typer.Option(help="Archive threads not written for this many seconds.")
    ] = 86_400.0,
    tenant: Annotated[list[str] | None, typer.Option(help="A tenant (repeat for more).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report, move nothing.")] = False,
    json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Run the tiering policy once: move idle sessions to the archive (or say which)."""
    from ..memory.archive import Tiering, TieringPolicy

    sessions = _session(session)
    policy = TieringPolicy(session_idle=session_idle)

    async def run(a: LocalArchive) -> Any:
        async with sessions:
            return await Tiering(policy, a, sessions, tenants=tenant or [""]).run_once(
                dry_run=dry_run
            )

    report = _with_archive(archive, run)
    for m in report.moved:
        if json:
            echo_json(msgspec.to_builtins(m))
        else:
            out().print(f"{'would move' if dry_run else 'moved'} {m.kind} {m.id} "
                        f"(tenant {m.tenant!r}, {m.reason})", markup=False)  # fmt: skip
    if not json:
        out().print(f"{len(report.moved)} {'to move' if dry_run else 'moved'}, "
                    f"{len(report.kept)} kept (written meanwhile)", style="dim")  # fmt: skip
