"""A process that spends one budget until the ledger refuses (the multi-process tests).

``python -m tests.budget_worker <backend> <where> <scope> <limit> <amount> <start-file>``:
waits for ``start-file`` to exist (so the processes start together), reserves
``amount`` against ``limit`` until refused, and prints how many reservations it got.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from mainspring.models.budget_ledger import BudgetLedger, Entry, Reservation


def _ledger(backend: str, where: str) -> BudgetLedger:
    if backend == "sqlite":
        from mainspring.models.budget_ledger_sqlite import SQLiteLedger

        return SQLiteLedger(where)
    from mainspring.models.budget_ledger_postgres import PostgresLedger

    return PostgresLedger(where)


async def main(backend: str, where: str, scope: str, limit: float, amount: float, go: Path) -> int:
    ledger = _ledger(backend, where)
    await ledger.spent(scope, "tokens")  # connect (and make the tables) before the start
    go.with_name(f"ready-{os.getpid()}").touch()
    while not go.exists():
        time.sleep(0.005)
    got = 0
    try:
        while isinstance(
            await ledger.reserve([Entry(scope, "tokens", amount, limit)]), Reservation
        ):
            got += 1
    finally:
        await ledger.aclose()
    return got


if __name__ == "__main__":
    backend, where, scope, limit, amount, go = sys.argv[1:]
    print(asyncio.run(main(backend, where, scope, float(limit), float(amount), Path(go))))
