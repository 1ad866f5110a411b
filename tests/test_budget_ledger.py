"""The budget ledger's conformance suite: memory, SQLite and PostgreSQL keep the same
counters, atomically, across tasks and (SQLite, PostgreSQL) processes."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

from mainspring.models.budget_ledger import BudgetLedger, Entry, Refusal, Reservation
from mainspring.models.budget_ledger_memory import MemoryLedger
from mainspring.models.budget_ledger_sqlite import SQLiteLedger
from tests.conftest import PG_URL, drop_postgres_schema, require_postgres

pytestmark = pytest.mark.anyio

if TYPE_CHECKING:
    from asyncpg.connection import LoggedQuery

ROOT = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def postgres_ledger_url() -> AsyncIterator[str]:
    """A PostgreSQL URL on a schema of its own, dropped afterwards (skips without PostgreSQL)."""
    base = require_postgres(PG_URL)
    schema = f"ms_b_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{base}{'&' if '?' in base else '?'}schema={schema}"
    finally:
        await drop_postgres_schema(base, schema)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BudgetLedger]:
    if request.param == "memory":
        memory = MemoryLedger()
        assert isinstance(memory, BudgetLedger)
        yield memory
        return
    if request.param == "sqlite":
        made: BudgetLedger = SQLiteLedger(tmp_path / "budgets.db")
        yield made
        await made.aclose()
        return
    from mainspring.models.budget_ledger_postgres import PostgresLedger

    async with postgres_ledger_url() as url:
        made = PostgresLedger(url, max_size=5)
        try:
            yield made
        finally:
            await made.aclose()


def tokens(scope: str, amount: float, limit: float | None = None, bucket: int = 0) -> Entry:
    return Entry(scope, "tokens", amount, limit, bucket)


async def test_a_reservation_adds_every_amount_and_reports_the_totals(ledger: BudgetLedger) -> None:
    first = await ledger.reserve([tokens("run:a", 30, 100), Entry("tenant:t", "cost", 0.5, 2.0)])
    assert isinstance(first, Reservation) and first.totals == (30.0, 0.5)
    second = await ledger.reserve([tokens("run:a", 60, 100)])
    assert isinstance(second, Reservation) and second.totals == (90.0,)
    assert await ledger.spent("run:a", "tokens") == 90
    assert await ledger.spent("tenant:t", "cost") == 0.5
    assert await ledger.spent("run:never", "tokens") == 0


async def test_a_refusal_names_the_entry_and_adds_nothing(ledger: BudgetLedger) -> None:
    assert isinstance(await ledger.reserve([tokens("tenant:t", 80, 100)]), Reservation)
    refused = await ledger.reserve([tokens("run:a", 10, 1000), tokens("tenant:t", 30, 100)])
    assert isinstance(refused, Refusal)
    assert (refused.index, refused.spent, refused.entry.scope) == (1, 80.0, "tenant:t")
    assert await ledger.spent("run:a", "tokens") == 0, "all or nothing: run:a was not added to"
    assert await ledger.spent("tenant:t", "tokens") == 80
    fits = await ledger.reserve([tokens("tenant:t", 20, 100)])
    assert isinstance(fits, Reservation) and fits.totals == (100.0,), "exactly the limit fits"


async def test_a_counter_at_its_limit_refuses_even_a_call_estimated_at_nothing(
    ledger: BudgetLedger,
) -> None:
    assert isinstance(await ledger.reserve([Entry("user:u", "cost", 1.0, 1.0)]), Reservation)
    assert isinstance(await ledger.reserve([Entry("user:u", "cost", 0.0, 1.0)]), Refusal)


async def test_an_entry_without_a_limit_is_counted_and_never_refused(ledger: BudgetLedger) -> None:
    for _ in range(3):
        assert isinstance(await ledger.reserve([tokens("tenant:t", 80)]), Reservation)
    assert await ledger.spent("tenant:t", "tokens") == 240
    refused = await ledger.reserve([tokens("tenant:t", 1, 100)])
    assert isinstance(refused, Refusal) and refused.spent == 240


async def test_settle_replaces_the_estimate_and_release_takes_it_back(ledger: BudgetLedger) -> None:
    reserved = await ledger.reserve([tokens("run:a", 500, 1000), Entry("run:a", "calls", 1, 10)])
    assert isinstance(reserved, Reservation)
    await ledger.settle(reserved, {"tokens": 120})  # "calls" not reported: keeps its 1
    assert await ledger.spent("run:a", "tokens") == 120
    assert await ledger.spent("run:a", "calls") == 1
    other = await ledger.reserve([tokens("run:a", 300, 1000)])
    assert isinstance(other, Reservation)
    await ledger.release(other)
    assert await ledger.spent("run:a", "tokens") == 120


async def test_buckets_are_counters_of_their_own(ledger: BudgetLedger) -> None:
    assert isinstance(await ledger.reserve([tokens("tenant:t/86400s", 90, 100, 7)]), Reservation)
    assert isinstance(await ledger.reserve([tokens("tenant:t/86400s", 90, 100, 7)]), Refusal)
    assert isinstance(await ledger.reserve([tokens("tenant:t/86400s", 90, 100, 8)]), Reservation)
    assert await ledger.spent("tenant:t/86400s", "tokens", 7) == 90


async def test_a_scope_keeps_the_time_it_was_first_seen(ledger: BudgetLedger) -> None:
    assert await ledger.started("run:a", 1000.0) == 1000.0
    assert await ledger.started("run:a", 2000.0) == 1000.0
    assert await ledger.started("run:b", 2000.0) == 2000.0


async def test_many_tasks_reserving_at_once_never_pass_the_limit(ledger: BudgetLedger) -> None:
    """60 tasks race for a budget of 500, each reserving 10 to 30 and settling with less:
    the total never passes the limit, and the ledger is not needlessly conservative."""
    rng = random.Random(11)
    amounts = [float(rng.randint(10, 30)) for _ in range(60)]
    granted: list[float] = []

    async def spend(amount: float) -> None:
        reserved = await ledger.reserve([tokens("tenant:race", amount, 500)])
        if isinstance(reserved, Reservation):
            await anyio.sleep(0)
            actual = amount - 5
            await ledger.settle(reserved, {"tokens": actual})
            granted.append(actual)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for amount in amounts:
                tg.start_soon(spend, amount)
    total = await ledger.spent("tenant:race", "tokens")
    assert total == sum(granted)
    assert total <= 500
    assert total >= 500 - 2 * 30 - 5 * len(granted), "refused while there was room"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_three_processes_share_one_budget(backend: str, tmp_path: Path) -> None:
    """Three real processes spend one budget of 1000 in steps of 7 as fast as they can:
    together they get exactly floor(1000 / 7) = 142 reservations, not 142 each."""
    async with contextlib.AsyncExitStack() as stack:
        if backend == "sqlite":
            where = str(tmp_path / "shared.db")
        else:
            where = await stack.enter_async_context(postgres_ledger_url())
        go = tmp_path / "go"
        with _workers(3, backend, where, go) as procs:
            with anyio.fail_after(30):  # every one connected (a loaded machine is slow)
                while len(list(tmp_path.glob("ready-*"))) < len(procs):
                    await anyio.sleep(0.01)
            go.touch()
            counts = [int(out) for out in await _outputs(procs)]
        assert sum(counts) == 1000 // 7, counts
        assert sum(1 for c in counts if c > 0) >= 2, f"the processes did not overlap: {counts}"


@contextlib.contextmanager
def _workers(n: int, backend: str, where: str, go: Path) -> Iterator[list[subprocess.Popen[str]]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "tests.budget_worker", backend, where, "tenant:mp", "1000", "7"]
    procs = [
        subprocess.Popen([*argv, str(go)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


async def _outputs(procs: list[subprocess.Popen[str]]) -> list[str]:
    outs = []
    for proc in procs:
        out, _ = await anyio.to_thread.run_sync(functools.partial(proc.communicate, timeout=90))
        assert proc.returncode == 0, f"a worker failed with {proc.returncode}"
        outs.append(out.strip())
    return outs


async def test_on_postgresql_each_operation_is_one_statement() -> None:
    """A reservation, a settlement and a release are one statement each on PostgreSQL:
    one round trip (asyncpg keeps the prepared statements, so after the first call no
    Parse is sent), however many budgets the call is under."""
    from mainspring.models.budget_ledger_postgres import PostgresLedger

    async with postgres_ledger_url() as url:
        ledger = PostgresLedger(url, max_size=1)  # one connection: the one we listen to
        try:
            await ledger.spent("run:a", "tokens")
            assert ledger._pool is not None
            logged: list[str] = []
            async with ledger._pool.acquire() as conn:
                conn.add_query_logger(lambda q: logged.append(_sql(q)))
            entries = [tokens("run:a", 50, 1000), tokens("tenant:t", 50, 5000)]
            entries.append(Entry("tenant:t/86400s", "cost", 0.1, 2.0, 20000))
            for _ in range(2):  # the first round prepares the statements
                logged.clear()
                reserved = await ledger.reserve(entries)
                assert isinstance(reserved, Reservation)
                await ledger.settle(reserved, {"tokens": 40, "cost": 0.2})
                await ledger.release(reserved)
            assert len(logged) == 3, logged
            assert "budget_reserve" in logged[0] and "budget_add" in logged[1]
        finally:
            await ledger.aclose()


def _sql(query: LoggedQuery) -> str:
    return str(query.query)
