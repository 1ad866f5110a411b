"""``mainspring audit``: verify (exit codes, findings), export, head and --witness, purge,
erase and keygen, on a real SQLite store file."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import anyio
from typer.testing import CliRunner, Result

from mainspring import Runtime
from mainspring.cli import app

from ._audit_fixtures import fill


def cli(*argv: str) -> Result:
    return CliRunner().invoke(app, list(argv))


def _make(path: Path, **metadata: str) -> tuple[str, list[str]]:
    url = f"sqlite:///{path}"

    async def go() -> list[str]:
        async with Runtime.open(url) as rt:
            return await fill(rt, 2, **metadata)

    return url, anyio.run(go)


def test_verify_passes_then_names_an_edit_and_exits_1(tmp_path: Path) -> None:
    url, ids = _make(tmp_path / "s.db")
    ok = cli("audit", "verify", "--store", url)
    assert ok.exit_code == 0, ok.output
    assert "no tampering found" in ok.output
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute("UPDATE events SET ts = ts + 1 WHERE run_id = ? AND seq = 5", (ids[1],))
    bad = cli("audit", "verify", "--store", url, "--json")
    assert bad.exit_code == 1
    report = json.loads(bad.output)
    assert [(f["run_id"], f["seq"], f["kind"]) for f in report["findings"]] == [
        (ids[1], 5, "edited")
    ]


def test_export_is_json_lines_with_hashes(tmp_path: Path) -> None:
    url, ids = _make(tmp_path / "s.db")
    result = cli("audit", "export", "--store", url, "--run", ids[0])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.output.splitlines()]
    assert {x["type"] for x in lines} == {"event", "anchor"}
    assert all(len(x["hash"]) == 64 for x in lines)


def test_head_is_a_witness_that_catches_a_cut_anchor_tail(tmp_path: Path) -> None:
    url, ids = _make(tmp_path / "s.db")
    witness = cli("audit", "head", "--store", url).output.strip()
    assert witness.startswith("4:")
    # Cut off the newest run with its anchors: the rest of the store is consistent.
    with sqlite3.connect(tmp_path / "s.db") as db:
        for table in ("events", "runs", "anchors"):
            db.execute(f"DELETE FROM {table} WHERE run_id = ?", (ids[1],))
    assert cli("audit", "verify", "--store", url).exit_code == 0  # the honest limit
    caught = cli("audit", "verify", "--store", url, "--witness", witness)
    assert caught.exit_code == 1 and "anchor_truncated" in caught.output


def test_purge_erase_keygen_and_signed_verify(tmp_path: Path) -> None:
    keys = (tmp_path / "k.pem", tmp_path / "p.pem")
    assert cli("audit", "keygen", str(keys[0]), str(keys[1])).exit_code == 0
    assert keys[0].stat().st_mode & 0o077 == 0
    url, ids = _make(tmp_path / "s.db", tenant="t1", user="ann")
    dry = cli("audit", "purge", "--store", url, "--retention", "t1=0", "--dry-run", "--json")
    assert sorted(json.loads(dry.output)["would_purge"]) == sorted(ids)
    erased = cli("audit", "erase", "ann", "--store", url, "--actor", "dpo")
    assert erased.exit_code == 0 and "erased 2 run(s)" in erased.output
    report = json.loads(cli("audit", "verify", "--store", url, "--json").output)
    assert report["ok"] and len(report["notes"]) == 2
    # Unsigned anchors against a public key: each one is reported.
    signed = cli("audit", "verify", "--store", url, "--public-key", str(keys[1]))
    assert signed.exit_code == 1 and "signature_missing" in signed.output
    bad = cli("audit", "purge", "--store", url, "--retention", "t1")
    assert bad.exit_code == 2 and "TENANT=DAYS" in bad.output
