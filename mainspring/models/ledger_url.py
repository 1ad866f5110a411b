"""A budget ledger named by URL (``Gateway(ledger="postgresql://...")``)."""

from __future__ import annotations

from .budget_ledger import BudgetLedger


def ledger_from(ledger: BudgetLedger | str | None) -> BudgetLedger:
    """A ledger, or one named by URL: ``memory://``, ``sqlite:///path``, ``postgresql://...``
    (where many processes share their budgets)."""
    if ledger is None or ledger == "memory://":
        from .budget_ledger_memory import MemoryLedger

        return MemoryLedger()
    if not isinstance(ledger, str):
        return ledger
    if ledger.startswith("sqlite:///"):
        from .budget_ledger_sqlite import SQLiteLedger

        return SQLiteLedger(ledger.removeprefix("sqlite:///"))
    if ledger.startswith(("postgresql://", "postgres://")):
        from .budget_ledger_postgres import PostgresLedger

        return PostgresLedger(ledger)
    raise ValueError(
        f"budget ledger URL {ledger!r}: use memory://, sqlite:///path or postgresql://..."
    )
