"""The runaway agent (issue 11, item 6): 20 concurrent runs of one tenant, each calling the
model in a loop, are stopped by the tenant's budget within one call of the limit in
total, not per run; on the memory, SQLite and PostgreSQL ledgers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from mainspring import Runtime
from mainspring.events import EffectFinished
from mainspring.models.budget_gate import BudgetGate
from mainspring.models.budget_ledger import BudgetLedger
from mainspring.models.budget_ledger_memory import MemoryLedger
from mainspring.models.budget_ledger_sqlite import SQLiteLedger
from mainspring.models.budgets import Budget
from tests.budget_graphs import MAX_TOKENS, agent_graph
from tests.conftest import postgres_schema_url
from tests.test_budget_ledger import postgres_ledger_url

pytestmark = pytest.mark.anyio

LIMIT = 20_000  # tokens for the tenant: about 180 calls in all, so about 9 per run
RUNS = 20


@contextlib.asynccontextmanager
async def backend(name: str, tmp_path: Path) -> AsyncIterator[tuple[str, BudgetLedger]]:
    """A store URL and a ledger of the backend ``name``."""
    if name == "memory":
        yield "memory://", MemoryLedger()
    elif name == "sqlite":
        ledger = SQLiteLedger(tmp_path / "budgets.db")
        try:
            yield f"sqlite:///{tmp_path / 'runs.db'}", ledger
        finally:
            await ledger.aclose()
    else:
        from mainspring.models.budget_ledger_postgres import PostgresLedger

        async with postgres_schema_url() as store_url, postgres_ledger_url() as ledger_url:
            pg = PostgresLedger(ledger_url, max_size=5)
            try:
                yield store_url, pg
            finally:
                await pg.aclose()


@pytest.mark.parametrize("name", ["memory", "sqlite", "postgres"])
async def test_twenty_runs_of_one_tenant_stop_at_the_tenant_budget(
    name: str, tmp_path: Path
) -> None:
    async with backend(name, tmp_path) as (url, ledger):
        gate = BudgetGate([Budget(LIMIT, on="tokens", per="tenant")], ledger)
        app = agent_graph()
        async with Runtime.open(url, gates=[gate]) as rt:
            with anyio.fail_after(60):
                handles = [
                    await rt.start(app, {}, run_id=f"r{i}", metadata={"tenant": "t1"})
                    for i in range(RUNS)
                ]
                results = [await h.result() for h in handles]
            journals = [await rt.events(f"r{i}") for i in range(RUNS)]
        spent = await ledger.spent("tenant:t1", "tokens")
    usages = [
        e.data.usage
        for j in journals
        for e in j
        if isinstance(e.data, EffectFinished) and e.data.usage
    ]
    billed = sum(u["input_tokens"] + u["output_tokens"] for u in usages)
    one_call = max(u["input_tokens"] + u["output_tokens"] for u in usages)
    assert all(
        r["stopped"].startswith("budget 'tokens per tenant' exceeded for tenant:t1")
        for r in results
    )
    assert billed == spent, "the ledger holds exactly what the calls reported"
    assert billed <= LIMIT + one_call, f"{billed} tokens billed against a budget of {LIMIT}"
    # Not stopped needlessly early: estimates are at most MAX_TOKENS - 61 above the actual
    # for each call in flight when the last one was refused (at most one per run).
    assert billed >= LIMIT - one_call - RUNS * (MAX_TOKENS - 61), billed
    calls = sum(len(r["models"]) for r in results)
    assert calls == len(usages) and calls < 2 * LIMIT // one_call, "counted in total, not per run"
    assert sum(1 for r in results if r["models"]) > RUNS // 2, "the runs ran concurrently"
