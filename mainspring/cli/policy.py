"""The ``policy`` commands: check policy files, and test them against decision cases offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import anyio
import typer

from ._common import DebugOption

policy_app = typer.Typer(
    help="Check policy files and test their decisions offline (docs/policy.md).",
    no_args_is_help=True,
)

_Paths = Annotated[
    list[Path],
    typer.Argument(metavar="POLICY_PATH...", help="Policy files or directories (.cedar, .py)."),
]


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")


@policy_app.command("check")
def check(paths: _Paths, debug: DebugOption = False) -> None:
    """Load the policies (parse Cedar, import Python rules) and print their versions."""
    from ..guard.policy import Policy, PolicyError

    try:
        status = Policy(paths, reload_every=None).status()
    except PolicyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"ok: {status['rules']} rules, version {status['version']}")
    for tenant, layer in sorted(status["tenants"].items()):
        typer.echo(f"  tenant {tenant}: {layer['rules']} rules, version {layer['version']}")


@policy_app.command("test")
def test(
    policy_path: Annotated[Path, typer.Argument(help="A policy file or directory.")],
    cases_file: Annotated[Path, typer.Argument(help="Decision cases, YAML or JSON.")],
    default: Annotated[
        str, typer.Option("--default", help="What no rule decides comes to: allow or deny.")
    ] = "allow",
    debug: DebugOption = False,
) -> None:
    """Decide every case of CASES_FILE with the policy; exit 1 if any case fails."""
    from ..guard.policy import PolicyError
    from ..guard.policy.cases import load_cases, run_cases

    try:
        cases = load_cases(cases_file)
        results = anyio.run(run_cases, [policy_path], cases, default)
    except PolicyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    failed = 0
    for result in results:
        if result.ok:
            typer.echo(f"PASS  {result.name}")
            continue
        failed += 1
        typer.echo(f"FAIL  {result.name}: expected {result.expected}, got {result.got}")
    typer.echo(f"{len(results) - failed} passed, {failed} failed")
    if failed:
        raise typer.Exit(1)
