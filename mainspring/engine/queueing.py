"""Runs that workers drive: enqueueing a start, handing a resume to the queue, cancelling a
run another process drives, and hearing other processes' status changes.

A store with a run queue (PostgreSQL: ``store.queues``) keeps queued runs like any run,
owned by nobody until a worker of their queue claims them (``mainspring.worker``). The
process that starts, resumes or cancels one does not drive it: it writes the journal and
wakes the workers. Waiting on such a run (``handle.wait()``) is woken by the store's
status notifications rather than a poll.
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, TypeGuard

from ..errors import RunStateError, StoreError
from ..store import QueuePlacement, Store

if TYPE_CHECKING:
    from ..store._pg_listener import PgListener
    from ..store._pg_queue import PgQueues
    from .registry import LiveRuns

log = logging.getLogger("mainspring.runtime")

STATUS_CHANNEL = "mainspring_runs"  # the store's NOTIFY of every status change


class QueueOptions(TypedDict, total=False):
    """Where a start waits for a worker (``Runtime.start``'s keywords of the same names)."""

    queue: str | None
    priority: int
    delay: float | None
    concurrency_key: str | None


class QueueStore(Protocol):
    """A store with a run queue and LISTEN (the PostgreSQL store)."""

    queues: PgQueues


def has_queues(store: Store) -> TypeGuard[QueueStore]:
    return getattr(store, "queues", None) is not None


def placement(
    store: Store,
    queue: str | None,
    priority: int,
    delay: float | None,
    concurrency_key: str | None,
) -> QueuePlacement | None:
    """The checked placement of a start (None: drive it here), or an error saying what to fix."""
    if queue is None:
        if delay is not None or concurrency_key is not None or priority != 0:
            raise RunStateError(
                "priority, delay and concurrency_key place a run in a queue: give queue=... too"
            )
        return None
    from ..store._pg_queue import check_queue_name

    if not has_queues(store):
        raise RunStateError(
            f"start(..., queue={queue!r}): the {type(store).__name__} has no run queue; queues "
            "live in the PostgreSQL store (Runtime.open('postgresql://...')), where "
            "`mainspring worker` processes drive them"
        )
    try:
        check_queue_name(queue)
    except StoreError as exc:
        raise RunStateError(str(exc)) from None
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) >= 2**31:
        raise RunStateError(f"priority={priority!r}: give a whole number (higher starts first)")
    if delay is not None and (
        isinstance(delay, bool)
        or not isinstance(delay, int | float)
        or not math.isfinite(delay)
        or delay < 0
    ):
        raise RunStateError(f"delay={delay!r}: give seconds >= 0 before a worker may start it")
    if concurrency_key is not None and (
        not isinstance(concurrency_key, str) or not concurrency_key
    ):
        raise RunStateError(f"concurrency_key={concurrency_key!r}: give a non-empty string")
    return QueuePlacement(
        queue, priority, concurrency_key=concurrency_key, delay=float(delay) if delay else None
    )


class StatusWatch:
    """Wakes waiters of runs driven elsewhere when the store reports their status changed.

    Opened on first need (a wait on a run not driven here); a store without LISTEN, or a
    lost connection, leaves waiters to their poll.
    """

    def __init__(self, store: Store, registry: LiveRuns[Any]) -> None:
        self._registry = registry
        self._listener: PgListener | None = None
        self._schema = ""
        if has_queues(store):
            self._schema = store.queues.schema
            self._listener = store.queues.listener({STATUS_CHANNEL: self._on_status}, self._on_lost)

    async def ensure(self) -> None:
        if self._listener is not None:
            await self._listener.ensure()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()

    def _on_status(self, payload: str) -> None:
        try:
            note = json.loads(payload)
        except ValueError:
            return
        if isinstance(note, dict) and note.get("schema") == self._schema:
            run_id = note.get("run_id")
            if isinstance(run_id, str):
                self._registry.signal(run_id)

    def _on_lost(self) -> None:
        self._registry.signal_all()
