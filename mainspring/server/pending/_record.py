"""A pending start as the backends keep it (apart from the package, which picks a backend)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PendingStart:
    """A run accepted behind a thread's open run, not started yet."""

    run_id: str
    tenant: str
    thread: str
    graph: str
    after: str  # the run (or queued run) it starts after, when it was accepted
    queued_at: float
    request: dict[str, Any]  # the start's body (StartRun), as JSON


def pending_of(row: tuple[Any, ...], request: str) -> PendingStart:
    """A row (its first six columns in ``PendingStart``'s order) and its request's JSON."""
    run_id, tenant, thread, graph, after, queued_at = row[:6]
    return PendingStart(
        str(run_id), str(tenant), str(thread), str(graph), str(after), float(queued_at),
        json.loads(request),
    )  # fmt: skip
