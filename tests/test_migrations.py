"""Stores written by release 0.1.0 (``tests/fixtures``) open, migrate and keep working."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from mainspring import RunStatus, Runtime
from tests.conftest import drop_postgres_schema, require_postgres
from tests.fixture_graphs import order

FIXTURES = Path(__file__).parent / "fixtures"
pytestmark = pytest.mark.anyio


async def _check_old_store(url: str) -> None:
    async with Runtime.open(url, graphs=[order]) as rt:
        # The run a crashed process left running is recovered on open and finishes.
        left = rt.handle("left-running")
        assert (await left.result())["log"] == ["quoted 140", "approved", "shipped"]
        assert (await rt.handle("finished").result())["log"] == [
            "quoted 30",
            "approved",
            "shipped",
        ]
        assert (await rt.outcome("failed")).status is RunStatus.FAILED
        assert (await rt.outcome("cancelled")).status is RunStatus.CANCELLED
        parked = await rt.outcome("parked")
        assert parked.status is RunStatus.INTERRUPTED
        assert [i.payload for i in parked.interrupts] == [{"approve": 180}]
        await rt.resume("parked", False)
        assert (await rt.handle("parked").result())["log"] == [
            "quoted 180",
            "denied",
            "not shipped",
        ]
        # Time travel over the old journal still works.
        state = await rt.state("finished", at=7)
        assert state.values["price"] == 30
        assert (await rt.replay("finished")).ok
        new = await rt.run(order, {"item": "cup", "qty": 1})
        assert new["log"][-1] == "shipped"
        threads = await rt.list_threads()
        assert [t.thread for t in threads] == ["t1"]


async def test_a_sqlite_store_of_release_0_1_opens_and_keeps_working(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    shutil.copy(FIXTURES / "store_v1.db", path)
    await _check_old_store(f"sqlite:///{path}")
    # Reopening the migrated file migrates nothing more.
    await _check_reopen(f"sqlite:///{path}")


async def _check_reopen(url: str) -> None:
    async with Runtime.open(url, graphs=[order]) as rt:
        runs = await rt.list_runs()
        assert {r.run_id for r in runs} >= {"finished", "parked", "failed", "cancelled"}


async def test_a_postgres_schema_of_release_0_1_opens_and_keeps_working() -> None:
    base = require_postgres()
    if shutil.which("psql") is None:
        pytest.skip("psql is needed to restore the PostgreSQL fixture")
    schema = f"ms_old_{uuid.uuid4().hex[:10]}"
    dump = (FIXTURES / "pg_store_v1.sql").read_text().replace("fixture_v1", schema)
    try:
        subprocess.run(
            ["psql", "-q", "-v", "ON_ERROR_STOP=1", base],
            input=dump,
            text=True,
            check=True,
            capture_output=True,
        )
        url = f"{base}?schema={schema}"
        await _check_old_store(url)
        await _check_reopen(url)
    finally:
        await drop_postgres_schema(base, schema)
