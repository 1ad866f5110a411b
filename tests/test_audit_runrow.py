"""The audit trail never trusts the mutable run row: records appended to a finished run
(with its row's status or updated_at forged) and forged runs are caught with a key; a
resume writes an anchor; deletions re-check that a run is at rest under their lock; a
run moved to another tenant by its row is found; PostgreSQL signs an anchor in its own
transaction; the default tenant "" is honoured by retention and erasure."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest

from mainspring import RunStatus, Runtime
from mainspring.errors import MainspringError
from mainspring.guard import audit
from mainspring.guard.audit.signing import generate_keys
from mainspring.store._chain import GENESIS, chain_rows

from . import engine_graphs as eg
from ._audit_fixtures import fill
from .conftest import postgres_schema_url

pytestmark = pytest.mark.anyio

_FUTURE = time.time() + 10 * 365 * 86_400
_FORGED = json.dumps({"name": "tool:wire_money", "result": "done"}).encode()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def pg(anyio_backend: str) -> AsyncIterator[tuple[str, str]]:
    async with postgres_schema_url() as url:
        yield url, parse_qs(urlsplit(url).query)["schema"][0]


def _keys(tmp_path: Path) -> tuple[Path, Path]:
    key, pub = tmp_path / "key.pem", tmp_path / "pub.pem"
    generate_keys(key, pub)
    return key, pub


async def _signed_store(url: str, key: Path, n: int = 2, **metadata: Any) -> list[str]:
    rt = Runtime.open(url)
    audit.sign_anchors(rt, key)
    async with rt:
        return await fill(rt, n, **metadata)


async def _verify(url: str, **kw: Any) -> audit.Report:
    async with Runtime.open(url, recover="off") as rt:
        return await audit.verify(rt, **kw)


# -- the run row is not trusted (SQLite) -------------------------------------------------------


def _append_forged(db: sqlite3.Connection, run_id: str, status: str | None) -> None:
    """A correctly chained record after a finished run's last, its row made to agree."""
    seq, head = db.execute(
        "SELECT seq, hash FROM events WHERE run_id = ? ORDER BY seq DESC LIMIT 1", (run_id,)
    ).fetchone()
    (row,) = chain_rows(head, [(run_id, seq + 1, "emitted", time.time(), _FORGED)])
    db.execute("INSERT INTO events (run_id, seq, kind, ts, data, hash) VALUES (?,?,?,?,?,?)", row)
    db.execute(
        "UPDATE runs SET last_seq = ?, updated_at = ?, status = coalesce(?, status)"
        " WHERE run_id = ?",
        (seq + 1, _FUTURE, status, run_id),
    )


@pytest.mark.parametrize("status", [None, "running"])
async def test_a_record_appended_to_a_finished_run_is_inserted_whatever_its_row_says(
    tmp_path: Path, status: str | None
) -> None:
    key, pub = _keys(tmp_path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    ids = await _signed_store(url, key)
    assert (await _verify(url, public_key=pub)).ok
    db = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    _append_forged(db, ids[0], status)
    report = await _verify(url, public_key=pub)
    assert [(f.run_id, f.seq, f.kind) for f in report.findings] == [(ids[0], 9, "inserted")], (
        report.findings
    )


async def test_a_forged_run_with_a_future_row_is_unanchored(tmp_path: Path) -> None:
    key, pub = _keys(tmp_path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    ids = await _signed_store(url, key)
    db = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    cols = [c[1] for c in db.execute("PRAGMA table_info(runs)")]
    row = list(db.execute("SELECT * FROM runs WHERE run_id = ?", (ids[1],)).fetchone())
    row[cols.index("run_id")] = "forged"
    row[cols.index("updated_at")] = _FUTURE
    row[cols.index("status")] = "running"
    db.execute(f"INSERT INTO runs VALUES ({','.join('?' * len(row))})", row)
    events = db.execute(
        "SELECT seq, kind, ts, data FROM events WHERE run_id = ? ORDER BY seq", (ids[1],)
    ).fetchall()
    for e in chain_rows(GENESIS, [("forged", s, k, time.time(), d) for s, k, _, d in events]):
        db.execute("INSERT INTO events (run_id, seq, kind, ts, data, hash) VALUES (?,?,?,?,?,?)", e)
    report = await _verify(url, public_key=pub)
    assert [(f.run_id, f.kind) for f in report.findings] == [("forged", "run_unanchored")]


async def test_a_resume_writes_an_anchor_and_a_run_in_flight_verifies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    async with Runtime.open(url) as rt:
        handle = await rt.start(eg.support, {"text": "big refund"}, run_id="p")
        assert (await handle.wait()).status is RunStatus.INTERRUPTED
        await rt.resume("p", True)
        await rt.handle("p").result()
        anchors = [a for a in await audit.audited(rt).audit_anchors() if a.run_id == "p"]
        assert [a.reason for a in anchors] == ["created", "rest", "resumed", "rest"]
        assert (await audit.verify(rt)).ok


async def test_runs_resumed_or_created_while_verify_reads_are_judged_by_their_new_anchors(
    tmp_path: Path,
) -> None:
    """Between verify reading the anchors and reading the runs, one run is resumed and
    one created: their events show up with no anchor yet read, and the second look at the
    anchors (whose new ones went in with those events) clears them."""
    for url in ("memory://", f"sqlite:///{tmp_path / 's.db'}"):
        async with Runtime.open(url) as rt:
            handle = await rt.start(eg.support, {"text": "big refund"}, run_id="p")
            assert (await handle.wait()).status is RunStatus.INTERRUPTED
            store: Any = audit.audited(rt)
            listed = store.audit_runs

            async def meanwhile(rt: Runtime = rt, listed: Any = listed) -> Any:
                await rt.resume("p", True)
                await rt.handle("p").result()
                await fill(rt, 1)
                return await listed()

            store.audit_runs = meanwhile
            try:
                report = await audit.verify(rt)
            finally:
                store.audit_runs = listed
            assert report.ok and report.runs == 2, (url, report.findings)


async def test_a_run_moved_to_another_tenant_by_its_row_is_found(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    async with Runtime.open(url) as rt:
        (rid,) = await fill(rt, 1, tenant="acme", user="u1")
    db = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    db.execute(
        "UPDATE runs SET tenant = 'evil', metadata = ? WHERE run_id = ?",
        (json.dumps({"tenant": "evil", "user": "u1"}), rid),
    )
    report = await _verify(url)
    assert [(f.run_id, f.seq, f.kind) for f in report.findings] == [(rid, 1, "moved")]
    assert "'evil'" in report.findings[0].detail and "'acme'" in report.findings[0].detail
    db.execute("UPDATE runs SET tenant = 'acme', metadata = ? WHERE run_id = ?",
               (json.dumps({"tenant": "acme", "user": "u2"}), rid))  # fmt: skip
    assert (await _verify(url)).kinds() == {"moved"}


async def test_verify_through_a_tenant_view_says_it_is_an_admin_operation() -> None:
    async with Runtime.open("memory://") as rt:
        with pytest.raises(MainspringError, match="store-wide"):
            await audit.verify(rt.tenant("acme"))


# -- retention and erasure ----------------------------------------------------------------------


async def _purge_while_resumed(rt: Runtime) -> tuple[list[str], list[str], RunStatus]:
    """Purge a parked run that is resumed right after purge listed the runs."""
    handle = await rt.start(eg.support, {"text": "big refund"}, metadata={"tenant": "acme"})
    assert (await handle.wait()).status is RunStatus.INTERRUPTED
    store: Any = rt.store
    listed = store.audit_runs

    async def then_resumed() -> Any:
        runs = await listed()
        await rt.resume(handle.run_id, True)
        return runs

    store.audit_runs = then_resumed
    try:
        gone = await audit.purge(rt, {"acme": 0}, now=time.time() + 10)
    finally:
        store.audit_runs = listed
    outcome = await rt.handle(handle.run_id).wait()
    assert (await audit.verify(rt)).ok
    return list(gone), gone.skipped, outcome.status


async def test_purge_skips_a_run_resumed_after_it_was_listed(tmp_path: Path) -> None:
    for url in ("memory://", f"sqlite:///{tmp_path / 's.db'}"):
        async with Runtime.open(url) as rt:
            gone, skipped, status = await _purge_while_resumed(rt)
        assert gone == [] and len(skipped) == 1 and status is RunStatus.FINISHED, url


async def test_purge_under_the_lock_keeps_a_run_changed_after_its_cutoff(tmp_path: Path) -> None:
    async with Runtime.open(f"sqlite:///{tmp_path / 's.db'}") as rt:
        (rid,) = await fill(rt, 1)
        store: Any = audit.audited(rt)
        assert await store.delete_runs([rid], "purged", "t", ["{}"], [0.0]) == []
        assert [a.run_id for a in await store.delete_runs([rid], "purged", "t", ["{}"])] == [rid]


async def test_the_default_tenant_is_honoured_by_purge_and_erasure(tmp_path: Path) -> None:
    async with Runtime.open(f"sqlite:///{tmp_path / 's.db'}") as rt:
        (default,) = await fill(rt, 1, user="u1")
        (acme,) = await fill(rt, 1, tenant="acme", user="u1")
        later = time.time() + 100 * 86_400
        assert await audit.purge(rt, {"": 30}, now=later, dry_run=True) == [default]
        assert [a.run_id for a in await audit.erase_user(rt, "u1", tenant="")] == [default]
        assert [r.run_id for r in await rt.list_runs()] == [acme]
        assert (await audit.verify(rt)).ok


def test_cli_retention_for_the_default_tenant(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mainspring.cli import app

    url = f"sqlite:///{tmp_path / 's.db'}"

    async def make() -> None:
        async with Runtime.open(url) as rt:
            await fill(rt, 1)

    anyio.run(make)
    result = CliRunner().invoke(
        app, ["audit", "purge", "--retention", "=0", "--store", url, "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "would purge 1 run(s)" in result.output


# -- PostgreSQL -----------------------------------------------------------------------------------


async def test_pg_a_record_appended_to_a_finished_run_is_inserted(
    pg: tuple[str, str], tmp_path: Path
) -> None:
    import asyncpg

    url, schema = pg
    key, pub = _keys(tmp_path)
    ids = await _signed_store(url, key)
    conn = await asyncpg.connect(url.split("?")[0])
    try:
        await conn.execute(f'SET search_path TO "{schema}"')
        last = await conn.fetchrow(
            "SELECT seq, hash FROM events WHERE run_id = $1 ORDER BY seq DESC LIMIT 1", ids[0]
        )
        assert last is not None
        seq, head = last
        (row,) = chain_rows(bytes(head), [(ids[0], seq + 1, "emitted", time.time(), _FORGED)])
        await conn.execute(
            "INSERT INTO events (run_id, seq, kind, ts, data, hash) VALUES ($1,$2,$3,$4,$5,$6)",
            row[0], row[1], row[2], row[3], row[4].decode(), row[5],
        )  # fmt: skip
        await conn.execute(
            "UPDATE runs SET last_seq = $1, updated_at = $2, status = 'running' WHERE run_id = $3",
            seq + 1, _FUTURE, ids[0],
        )  # fmt: skip
    finally:
        await conn.close()
    report = await _verify(url, public_key=pub)
    assert [(f.run_id, f.kind) for f in report.findings] == [(ids[0], "inserted")]


async def test_pg_a_resume_writes_an_anchor_and_purge_skips_a_resumed_run(
    pg: tuple[str, str],
) -> None:
    url, _ = pg
    async with Runtime.open(url) as rt:
        gone, skipped, status = await _purge_while_resumed(rt)
        anchors = await audit.audited(rt).audit_anchors()
        assert [a.reason for a in anchors] == ["created", "rest", "resumed", "rest"]
    assert gone == [] and len(skipped) == 1 and status is RunStatus.FINISHED


async def test_pg_a_connection_lost_while_signing_leaves_no_unsigned_anchor(
    pg: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncpg

    from mainspring.store._pg_audit import sign as real

    url, _ = pg
    key, pub = _keys(tmp_path)
    failed: list[int] = []

    async def drops_once(conn: Any, sql: Any, settings: Any, row: Any) -> None:
        if row is not None and row[0] is not None and not failed:
            failed.append(row[0])  # the statement ran; the connection drops before the sign
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")
        await real(conn, sql, settings, row)

    monkeypatch.setattr("mainspring.store._pg_writes.sign", drops_once)
    rt = Runtime.open(url)
    audit.sign_anchors(rt, key)
    async with rt:
        ids = await fill(rt, 2)
        assert [(await rt.get_run(i)).status for i in ids] == [RunStatus.FINISHED] * 2
    assert failed
    report = await _verify(url, public_key=pub)
    assert report.ok and report.anchors == report.signed == 4, report.findings


async def test_pg_group_committed_resumes_are_anchored_and_signed(
    pg: tuple[str, str], tmp_path: Path
) -> None:
    url, _ = pg
    key, pub = _keys(tmp_path)
    rt = Runtime.open(url, durability="batch")
    audit.sign_anchors(rt, key)
    async with rt:
        for i in range(3):
            handle = await rt.start(eg.support, {"text": "big refund"}, run_id=f"g{i}")
            assert (await handle.wait()).status is RunStatus.INTERRUPTED
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(rt.resume, f"g{i}", True)
        for i in range(3):
            await rt.handle(f"g{i}").result()
        anchors = await audit.audited(rt).audit_anchors()
    for i in range(3):
        reasons = [a.reason for a in anchors if a.run_id == f"g{i}"]
        assert reasons == ["created", "rest", "resumed", "rest"], reasons
    report = await _verify(url, public_key=pub)
    assert report.ok and report.signed == report.anchors == 12, report.findings
