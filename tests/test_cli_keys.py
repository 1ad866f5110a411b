"""``mainspring keys``: create (printed once), list, revoke, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner, Result

from mainspring.cli import app
from mainspring.server.keys import Scope, key_store_from_url


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("MAINSPRING_STORE", raising=False)
    return f"sqlite:///{tmp_path / 'server.db'}"


def cli(*args: str, store: str) -> Result:
    return CliRunner().invoke(app, [*args, "--store", store])


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def verify(store: str, key: str) -> Any:
    async def check() -> Any:
        keys = key_store_from_url(store)
        await keys.open()
        try:
            return await keys.verify(key)
        finally:
            await keys.aclose()

    return anyio.run(check)


def the_commands(store: str) -> None:
    made = ok(
        cli(
            "keys",
            "create",
            "--tenant",
            "acme",
            "--scopes",
            "read,run",
            "--name",
            "ci",
            store=store,
        )
    )
    key = made.stdout.strip()
    assert key.startswith("ms_") and len(made.stdout.splitlines()) == 1  # the key alone
    assert "shown this once" in made.stderr
    principal = verify(store, key)
    assert principal.tenant == "acme" and principal.scopes == {Scope.READ, Scope.RUN}

    op = json.loads(
        ok(
            cli("keys", "create", "--tenant", "*", "--scopes", "admin", "--json", store=store)
        ).stdout
    )
    assert (op["tenant"], op["scopes"], op["revoked_at"]) == ("*", ["admin"], None)
    assert op["key"].startswith(f"ms_{op['key_id']}_")

    listed = [
        json.loads(line)
        for line in ok(cli("keys", "list", "--json", store=store)).stdout.splitlines()
    ]
    assert [k["tenant"] for k in listed] == ["acme", "*"]
    assert all("key" not in k for k in listed)  # never the secret
    assert key not in ok(cli("keys", "list", store=store)).stdout
    only = ok(cli("keys", "list", "--tenant", "acme", "--json", store=store)).stdout.splitlines()
    assert [json.loads(line)["name"] for line in only] == ["ci"]

    key_id = listed[0]["key_id"]
    assert f"revoked key {key_id}" in ok(cli("keys", "revoke", key_id, store=store)).stdout
    assert (
        "revoked already" in ok(cli("keys", "revoke", key, store=store)).stdout
    )  # the key works too
    assert verify(store, key) is None
    table = ok(cli("keys", "list", store=store)).stdout
    assert key_id in table and op["key_id"] in table


def test_create_list_revoke_on_sqlite(store: str) -> None:
    the_commands(store)


def test_create_list_revoke_on_postgres(postgres_url_sync: str) -> None:
    the_commands(postgres_url_sync)


def one_error(result: Result, code: int, fragment: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and fragment in result.stderr, result.stderr
    assert "Traceback" not in result.output


def test_bad_input_and_unknown_keys_say_what_to_fix(store: str, tmp_path: Path) -> None:
    bad_scope = cli("keys", "create", "--tenant", "acme", "--scopes", "read,write", store=store)
    one_error(bad_scope, 2, "unknown scope 'write'; the scopes are read, run, approve, admin")
    one_error(
        cli("keys", "create", "--tenant", "acme", "--scopes", "", store=store),
        2,
        "at least one scope",
    )
    one_error(
        cli("keys", "list", store=f"sqlite:///{tmp_path / 'none.db'}"), 3, "no Mainspring store"
    )
    assert not (tmp_path / "none.db").exists()  # listing makes no store
    assert not Path(store[len("sqlite:///") :]).exists()  # refused before opening anything
    ok(cli("keys", "create", "--tenant", "acme", "--scopes", "read", store=store))
    one_error(
        cli("keys", "revoke", "0123456789abcdef", store=store), 3, "no key '0123456789abcdef'"
    )
