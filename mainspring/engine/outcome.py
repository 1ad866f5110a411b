"""Where a run stands when it stops moving, as its fold says: what ``wait`` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..status import FINISHED, RUNNING, RunStatus
from .fold import RunFold


@dataclass(frozen=True, slots=True)
class PendingInterrupt:
    """An interrupt waiting for ``runtime.resume(run_id, value, interrupt_id=id)``."""

    id: str
    node: str
    payload: Any


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """Where a run stands when it stops moving: finished, failed, cancelled or parked."""

    run_id: str
    status: RunStatus
    state: Any
    seq: int
    interrupts: list[PendingInterrupt] = field(default_factory=list)
    error: dict[str, Any] | None = None


def outcome_of(fold: RunFold) -> RunOutcome:
    """Where a run stands according to its fold."""
    status = fold.status
    pending = (
        []
        if status is FINISHED
        else [PendingInterrupt(i.id, t.node, i.payload) for t, i in fold.pending_interrupts]
    )
    if status is RUNNING and pending and not any(t.runnable for t in fold.tasks):
        status = RunStatus.INTERRUPTED
    error = fold.error.as_dict() if fold.error is not None else None
    return RunOutcome(fold.run_id, status, fold.schema.output(fold.state), fold.seq, pending, error)
