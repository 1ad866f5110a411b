"""What a budget check costs: before + after of one model call under three budgets, on the
memory, SQLite and PostgreSQL ledgers, and the statements each sends to PostgreSQL.

    PYTHONPATH=. python benchmarks/budget_check.py [--pg-url postgresql://...] [--calls N]

Prints one JSON object per ledger: median and p99 microseconds per check (before +
after), and for PostgreSQL the statements per check (asyncpg's query logger).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from mainspring.engine.gate import Effect, Outcome
from mainspring.models.budget_gate import BudgetGate
from mainspring.models.budget_ledger import BudgetLedger
from mainspring.models.budget_ledger_memory import MemoryLedger
from mainspring.models.budget_ledger_sqlite import SQLiteLedger
from mainspring.models.budgets import Budget
from mainspring.models.spec import Price

ARGS = {
    "model": "x",
    "messages": [{"role": "user", "content": "What is the capital of France? One word."}],
    "tools": [],
    "max_tokens": 16,
    "params": {},
}
OUTCOME = Outcome({"text": "Paris"}, usage={"input_tokens": 20, "output_tokens": 2, "cost": 1e-5})


def _gate(ledger: BudgetLedger) -> BudgetGate:
    budgets = [
        Budget(1e12, on="tokens", per="run"),
        Budget(1e12, on="tokens", per="tenant", window=86400),
        Budget(1e12, on="cost", per="tenant", action="fallback", fallback_model="small"),
    ]
    return BudgetGate(budgets, ledger, price={"x": Price(0.15, 0.6)}.get)


async def measure(ledger: BudgetLedger, calls: int) -> dict[str, Any]:
    gate = _gate(ledger)
    times = []
    for i in range(calls + calls // 10):
        effect = Effect("model", "model:x", ARGS, f"k{i}", "r1", "n", 0, 0, i, 1, {"tenant": "t1"})
        start = time.perf_counter()
        await gate.before(effect)
        await gate.after(effect, OUTCOME)
        if i >= calls // 10:  # the first tenth warms up
            times.append(time.perf_counter() - start)
    times.sort()
    return {
        "median_us": round(statistics.median(times) * 1e6, 2),
        "p99_us": round(times[int(len(times) * 0.99)] * 1e6, 2),
        "calls": len(times),
    }


async def postgres(url: str, calls: int, durable: bool) -> dict[str, Any]:
    from mainspring.models.budget_ledger_postgres import PostgresLedger

    schema = f"bench_budget_{uuid.uuid4().hex[:8]}"
    ledger = PostgresLedger(
        f"{url}{'&' if '?' in url else '?'}schema={schema}", max_size=1, durable=durable
    )
    try:
        await ledger.spent("warm", "tokens")
        assert ledger._pool is not None
        logged: list[object] = []
        async with ledger._pool.acquire() as conn:
            conn.add_query_logger(logged.append)
        result = await measure(ledger, calls)
        result["statements_per_check"] = len(logged) / (calls + calls // 10)
        return result
    finally:
        await ledger.aclose()
        import asyncpg

        admin = await asyncpg.connect(url)
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--calls", type=int, default=20_000)
    opts = parser.parse_args()
    print(json.dumps({"ledger": "memory", **await measure(MemoryLedger(), opts.calls)}))
    for durable in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            sqlite = SQLiteLedger(Path(tmp) / "budgets.db", durable=durable)
            try:
                result = await measure(sqlite, opts.calls // 10)
            finally:
                await sqlite.aclose()
        print(json.dumps({"ledger": "sqlite", "durable": durable, **result}))
    for durable in (True, False):
        try:
            result = await postgres(opts.pg_url, opts.calls // 10, durable)
        except OSError as exc:
            result = {"skipped": str(exc)}
        print(json.dumps({"ledger": "postgres", "durable": durable, **result}))


if __name__ == "__main__":
    asyncio.run(main())
