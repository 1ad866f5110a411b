"""``mainspring audit``: verify, export, purge, erase, and the keys and heads that go with them.

``verify`` exits 0 when nothing was tampered with and 1 when something was (each finding
says the run, the seq or anchor, and the kind of tampering). See docs/audit.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

if TYPE_CHECKING:
    from ..guard.audit.retention import Deleted

from ._common import (
    DEFAULT_STORE,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_USAGE,
    CliError,
    DebugOption,
    JsonOption,
    StoreOption,
    echo_json,
    import_ref,
    open_runtime,
    out,
    run_async,
)

audit_app = typer.Typer(
    help="The tamper-evident audit trail: verify, export, purge, erase (docs/audit.md).",
    no_args_is_help=True,
)

RunOption = Annotated[
    str | None, typer.Option("--run", metavar="RUN", help="Only this run (default: all).")
]
ActorOption = Annotated[
    str | None,
    typer.Option(
        "--actor", help="Who does this, as the anchors record it (default: user@host:pid)."
    ),
]
KeyOption = Annotated[
    Path | None,
    typer.Option(
        "--private-key",
        metavar="FILE",
        help="Sign the anchors this writes (PEM Ed25519), as the runtimes of a signed store do.",
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


def _sign(rt: Any, key: Path | None) -> None:
    if key is not None:
        from ..guard.audit import sign_anchors

        sign_anchors(rt, key)


def _redactor(ref: str | None) -> Any:
    """The function ``--redact MODULE:ATTR`` names."""
    if ref is None:
        return None
    found = import_ref(ref, "redact", "a function taking and returning one record (a dict)")
    if not callable(found):
        raise CliError(f"--redact {ref} is {found!r}, not a function", EXIT_USAGE)
    return found


def _witness(text: str | None) -> tuple[int, bytes] | None:
    if text is None:
        return None
    pos, sep, digest = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(pos), bytes.fromhex(digest)
    except ValueError:
        raise CliError(
            f"--witness {text!r} is not POS:HASH; use what `mainspring audit head` printed",
            EXIT_USAGE,
        ) from None


@audit_app.command("verify", epilog="Exit code 0: nothing tampered with; 1: tampering found.")
def verify(
    store: StoreOption = DEFAULT_STORE,
    run: RunOption = None,
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key", metavar="FILE", help="Every anchor must carry a valid signature."
        ),
    ] = None,
    witness: Annotated[
        str | None,
        typer.Option(
            "--witness",
            metavar="POS:HASH",
            help="An anchor seen before (`audit head`): it must still be there.",
        ),
    ] = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Check every run's hash chain and the store's anchors; say what was tampered with, where."""
    from ..guard.audit import verify as check

    seen = _witness(witness)

    async def go() -> Any:
        async with open_runtime(store) as rt:
            return await check(rt, run=run, public_key=public_key, witness=seen)

    report = run_async(go)
    if as_json:
        echo_json(report.to_json())
    else:
        for finding in report.findings:
            out().print(Text("✗ ", style="red") + Text(str(finding)), soft_wrap=True)
        for note in report.notes:
            out().print(f"  {note}", soft_wrap=True, markup=False, highlight=False)
        signed = f", {report.signed} signed" if report.signed else ""
        summary = (
            f"{report.runs} runs, {report.events} events, {report.anchors} anchors{signed}: "
            + ("no tampering found" if report.ok else f"{len(report.findings)} finding(s)")
        )
        out().print(("✓ " if report.ok else "✗ ") + summary, highlight=False)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_RUN_FAILED)


@audit_app.command("export")
def export(
    store: StoreOption = DEFAULT_STORE,
    run: RunOption = None,
    redact: Annotated[
        str | None,
        typer.Option(
            "--redact",
            metavar="MODULE:ATTR",
            help="A function applied to every exported record (dict -> dict): e.g. a PII redactor.",
        ),
    ] = None,
    debug: DebugOption = False,
) -> None:
    """Write the chains and anchors as JSON lines to stdout (each with its hash and prev)."""
    from ..guard.audit import export_lines

    hook = _redactor(redact)
    sink = sys.stdout.buffer

    async def go() -> None:
        async with open_runtime(store) as rt:
            async for line in export_lines(rt, run=run, redact=hook):
                sink.write(line)
        sink.flush()

    run_async(go)


@audit_app.command("head")
def head(store: StoreOption = DEFAULT_STORE, debug: DebugOption = False) -> None:
    """Print the newest anchor as POS:HASH: keep it elsewhere, give it to verify --witness."""

    async def go() -> Any:
        async with open_runtime(store) as rt:
            anchors = await rt.store.audit_anchors()  # type: ignore[attr-defined]
            return anchors[-1] if anchors else None

    last = run_async(go)
    typer.echo("0:" + "00" * 32 if last is None else f"{last.pos}:{last.hash.hex()}")


@audit_app.command("purge")
def purge(
    retention: Annotated[
        list[str],
        typer.Option(
            "--retention",
            metavar="TENANT=DAYS",
            help="Keep runs of TENANT (run metadata 'tenant'; '=DAYS' for the default tenant)"
            " this many days; repeat per tenant.",
        ),
    ] = [],  # noqa: B006 (typer reads the default, never mutates it)
    default: Annotated[
        float | None,
        typer.Option("--default", metavar="DAYS", help="For other tenants (default: kept)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would go.")] = False,
    actor: ActorOption = None,
    private_key: KeyOption = None,
    store: StoreOption = DEFAULT_STORE,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Delete runs at rest older than their tenant's retention, each anchored first."""
    from ..guard.audit import purge as do_purge

    ages: dict[str, float] = {}
    for item in retention:
        tenant, sep, days = item.partition("=")
        try:
            ages[tenant] = float(days) if sep else float("nan")
        except ValueError:
            ages[tenant] = float("nan")
        if ages[tenant] != ages[tenant]:
            raise CliError(f"--retention {item!r} is not TENANT=DAYS", EXIT_USAGE)

    async def go() -> Deleted:
        async with open_runtime(store) as rt:
            _sign(rt, private_key)
            return await do_purge(rt, ages, default=default, actor=actor, dry_run=dry_run)

    gone = run_async(go)
    if as_json:
        echo_json(
            {
                "purged": [] if dry_run else list(gone),
                "would_purge": list(gone) if dry_run else [],
                "skipped": gone.skipped,
            }
        )
    else:
        verb = "would purge" if dry_run else "purged"
        typer.echo(f"{verb} {len(gone)} run(s)" + "".join(f"\n  {r}" for r in gone))
        _echo_skipped(gone.skipped)


@audit_app.command("erase")
def erase(
    user: Annotated[str, typer.Argument(help="The user id (run metadata 'user').")],
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only in this tenant.")] = None,
    actor: ActorOption = None,
    private_key: KeyOption = None,
    store: StoreOption = DEFAULT_STORE,
    debug: DebugOption = False,
) -> None:
    """Right to erasure: delete the user's runs at rest, each anchored first (by a hash of the id)."""
    from ..guard.audit import erase_user

    async def go() -> tuple[list[str], list[str]]:
        async with open_runtime(store) as rt:
            _sign(rt, private_key)
            erased = await erase_user(rt, user, actor=actor, tenant=tenant)
            return [a.run_id for a in erased], erased.skipped

    gone, skipped = run_async(go)
    typer.echo(f"erased {len(gone)} run(s)" + "".join(f"\n  {r}" for r in gone))
    _echo_skipped(skipped)


def _echo_skipped(skipped: list[str]) -> None:
    """Runs chosen but resumed before their deletion's lock: left in place, said so."""
    if skipped:
        typer.echo(
            f"skipped {len(skipped)} run(s) in flight (resumed since they were listed)"
            + "".join(f"\n  {r}" for r in skipped)
        )


@audit_app.command("keygen")
def keygen(
    private: Annotated[
        Path, typer.Argument(help="Where to write the private key (PEM, mode 600).")
    ],
    public: Annotated[Path, typer.Argument(help="Where to write the public key (PEM).")],
    debug: DebugOption = False,
) -> None:
    """Make an Ed25519 key pair for signing anchors (the private key never enters the store)."""
    from ..guard.audit import generate_keys

    if private.exists():
        raise CliError(
            f"{private} exists; choose another path (keys are never overwritten)", EXIT_USAGE
        )
    generate_keys(private, public)
    typer.echo(f"wrote {private} (private) and {public} (public)")
