"""Runtime objects as the API's JSON: one place, so every route and stream shows the same shape."""

from __future__ import annotations

from typing import Any

from ..engine.outcome import PendingInterrupt, RunOutcome
from ..events import to_jsonable
from ..status import RunStatus
from ..store import RunRecord
from .depth import clip


def run_json(record: RunRecord, version: str | None = None) -> dict[str, Any]:
    """A run's summary (docs/server.md, "Run"). ``version``: the graph's fingerprint, from the
    run's ``run_started`` event (lists leave it null rather than read a journal per run)."""
    return {
        "run_id": record.run_id,
        "graph": record.graph,
        "version": version or None,
        "thread": record.thread,
        "status": record.status.value,
        "tenant": record.tenant,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "last_seq": record.last_seq,
        "parent_run_id": record.parent_run_id,
        "durability": record.durability.value,
        "error": record.error,
        "metadata": _metadata(record),
        "queue": _queue(record),
    }


def _queue(record: RunRecord) -> dict[str, Any] | None:
    """Where a queued run waits for (or is driven by) a worker; None: not a queued run."""
    placed = record.queue
    if placed is None:
        return None
    return {
        "name": placed.name,
        "priority": placed.priority,
        "available_at": placed.available_at,
        "concurrency_key": placed.concurrency_key,
        "waiting": record.status is RunStatus.RUNNING and record.owner is None,
    }


def interrupt_json(i: PendingInterrupt) -> dict[str, Any]:
    return {"interrupt_id": i.id, "node": i.node, "payload": _plain(i.payload)}


def pending_json(record: RunRecord, i: PendingInterrupt, since: float) -> dict[str, Any]:
    """An interrupt waiting for an answer, with its run's context (docs/server.md, "Interrupt")."""
    return {
        "run_id": record.run_id,
        **interrupt_json(i),
        "graph": record.graph,
        "thread": record.thread,
        "tenant": record.tenant,
        "since": since,
    }


def outcome_json(outcome: RunOutcome) -> dict[str, Any]:
    return {
        "status": outcome.status.value,
        "state": _plain(outcome.state),
        "seq": outcome.seq,
        "interrupts": [interrupt_json(i) for i in outcome.interrupts],
        "error": outcome.error,
    }


def _plain(value: Any) -> Any:
    """``value`` as JSON data, clipped where stored deeper than the API's limit."""
    return to_jsonable(clip(value), what="the value")


def _metadata(record: RunRecord) -> dict[str, Any]:
    """The run's metadata as JSON data; a placeholder if it cannot be shown, so one odd run
    (written through the Python API) never fails a whole list."""
    try:
        shown = to_jsonable(clip(record.metadata or {}), what="the run's metadata")
    except Exception as exc:  # any: a list must answer whatever one record holds
        return {"unrenderable": f"the metadata cannot be shown as JSON ({type(exc).__name__})"}
    return shown if isinstance(shown, dict) else {"value": shown}
