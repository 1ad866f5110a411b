"""Runtime objects as the API's JSON: one place, so every route and stream shows the same shape."""

from __future__ import annotations

from typing import Any

from ..engine.outcome import PendingInterrupt, RunOutcome
from ..events import to_jsonable
from ..store import RunRecord


def run_json(record: RunRecord) -> dict[str, Any]:
    """A run's summary (docs/server.md, "Run")."""
    return {
        "run_id": record.run_id,
        "graph": record.graph,
        "version": record.metadata.get("graph_version") if record.metadata else None,
        "thread": record.thread,
        "status": record.status.value,
        "tenant": record.tenant,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "last_seq": record.last_seq,
        "parent_run_id": record.parent_run_id,
        "error": record.error,
        "metadata": to_jsonable(record.metadata or {}, what="the run's metadata"),
    }


def interrupt_json(i: PendingInterrupt) -> dict[str, Any]:
    return {"interrupt_id": i.id, "node": i.node, "payload": _plain(i.payload)}


def outcome_json(outcome: RunOutcome) -> dict[str, Any]:
    return {
        "status": outcome.status.value,
        "state": _plain(outcome.state),
        "seq": outcome.seq,
        "interrupts": [interrupt_json(i) for i in outcome.interrupts],
        "error": outcome.error,
    }


def _plain(value: Any) -> Any:
    return to_jsonable(value, what="the value")
