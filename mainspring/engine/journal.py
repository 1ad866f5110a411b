"""A run's journal as its driver writes it: events recorded, folded, and committed.

The driver (``driver.py``) decides what happens; this half keeps the record:
each event is numbered, folded into the run's state and told to live
listeners as it is recorded, and reaches the store at the commit points the
driver chooses, as durably as the run's durability asks. Commits of one run are
serialised and never interrupted, and a batch that fails to land stays
pending, in order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ..errors import ConflictError
from ..events import Event, EventKind, encode
from ..store.base import Durability, RunRecord, RunStatus, Snapshot, Store
from ._tasks import cancel_scope
from .fold import HANDLERS, RunFold

if TYPE_CHECKING:
    from .runtime import Runtime

new_event = tuple.__new__  # skips NamedTuple's Python-level __new__ on the hot path


class Listener(Protocol):
    def __call__(self, event: Event) -> None: ...


class AppendNow(Protocol):
    """A store's append that completes without waiting (``MemoryStore.append_now``)."""

    def __call__(
        self,
        run_id: str,
        expected_seq: int,
        events: list[Event],
        *,
        status: RunStatus | None,
        error: str | None,
    ) -> None: ...


class RunJournal:
    """One run's uncommitted events and its commits; the base of ``RunDriver``."""

    __slots__ = (
        "__weakref__",  # Runtime._latest holds drivers weakly
        "_append_now",
        "_check_json",
        "_commit_done",
        "_committed",
        "_committing",
        "_create_record",
        "_defer_create",
        "_inflight",
        "_listeners",
        "_pending",
        "_snapshot_due",
        "_stored_status",
        "durability",
        "existing",
        "fold",
        "nested",
        "run_id",
        "runtime",
        "store",
    )

    def __init__(
        self,
        runtime: Runtime,
        fold: RunFold,
        *,
        store: Store,
        durability: Durability,
        check_json: bool,
        listeners: list[Listener],
        append_now: AppendNow | None,
    ) -> None:
        self.runtime = runtime
        self.fold = fold
        self.store = store
        self.durability = durability
        self.run_id = fold.run_id
        self._check_json = check_json
        self._listeners = listeners
        self._append_now = append_now
        self._pending: list[Event] = []
        self._inflight: Sequence[Event] = ()  # a tuple while idle: no list per run
        self._stored_status: RunStatus | None = None
        self._create_record: RunRecord | None = None
        self._defer_create = False  # Runtime.run(): the run is created by its first commit
        self.existing: RunRecord | None = None  # set when create() found the run already there
        self._committed = fold.seq
        self._committing = False
        self._commit_done: anyio.Event | None = None
        self.nested = False  # a subgraph's run, driven inside its parent's task
        self._snapshot_due = False

    def record(self, kind: EventKind, data: dict[str, Any]) -> Event:
        """Append an event to the run (in memory), fold it, and tell live listeners."""
        fold = self.fold
        seq = fold.seq + 1
        event = new_event(Event, (self.run_id, seq, kind, time.time(), data))
        # fold.apply without its checks: this event is the next by construction, and
        # never a run_started (begin() applies that one).
        fold.seq = seq
        HANDLERS[kind](fold, data)
        self._pending.append(event)
        if self._create_record is None:  # listeners hear of a new run once it exists
            for listener in self._listeners:
                listener(event)
        return event

    @property
    def creation_pending(self) -> bool:
        """The run is not in the store yet: its first commit creates it."""
        return self._create_record is not None

    def defer_create(self, defer: bool) -> None:
        """Create the run with its first commit rather than before its first step."""
        # In memory, creating costs no commit: nothing to save.
        self._defer_create = defer and self._create_record is not None and self._append_now is None

    async def create(self) -> bool:
        """Write the new run (start and first plan); False if a run with its id existed."""
        record = self._create_record
        assert record is not None
        # Taken before the await: parallel tasks may record more meanwhile (deferred runs).
        events, self._pending = self._pending, []
        try:
            result = await self.store.create_run(record, events, self.durability)
        except BaseException:
            self._pending[:0] = events
            raise
        self._create_record = None
        if not result.created:
            self.existing = result.record
            return False
        self._committed = len(events)
        if self._listeners:  # the run exists: listeners hear all of it
            for event in [*events, *self._pending]:
                for listener in self._listeners:
                    listener(event)
        return True

    def check_json(self, value: Any, what: str) -> None:
        if self._check_json and value is not None:
            encode(value, what=what)

    async def commit(
        self, status: RunStatus | None = None, error: str | None = None, *, shield: bool = True
    ) -> None:
        """Make every recorded event as durable as the run's durability asks.

        Commits of one run are serialised (parallel tasks share the run's
        sequence numbers); each takes everything recorded so far. Never
        interrupted, so we always know whether an append landed: shielded from
        anyio scopes, and the run's own cancel or abandon waits for it. The loop
        of a run driven in a task of its own passes ``shield=False``: only the
        run's own scope encloses it there (an anyio shield costs ~4 us a commit).
        """
        if not self._pending and status is None:
            return
        if self._append_now is not None:  # in-memory store: nothing to await or protect
            self._commit_now(self._append_now, status, error)
            return
        if shield or self._committing:
            with cancel_scope(shield=True):
                await self._serialised_append(status, error)
        else:
            await self._serialised_append(status, error)

    async def _serialised_append(self, status: RunStatus | None, error: str | None) -> None:
        while self._committing:  # another task of this run is committing: queue behind it
            if self._commit_done is None:
                self._commit_done = anyio.Event()
            await self._commit_done.wait()
        self._committing = True
        try:
            await self._append(status, error)
        finally:
            self._committing = False
            if self._commit_done is not None:
                self._commit_done.set()
                self._commit_done = None
            self._release_held_cancel()

    def _release_held_cancel(self) -> None:
        """A cancel of the run held back while an append was in flight goes now (driver)."""

    async def _append(self, status: RunStatus | None, error: str | None) -> None:
        if self._create_record is not None:
            await self._create_now(status, error)
            return
        status = self._status_change(status, error)
        batch, self._pending = self._pending, []
        if not batch and status is None:
            return
        expected = self._committed
        self._inflight = batch
        try:
            await self.store.append(
                self.run_id, expected, batch, status=status, error=error, durability=self.durability
            )
        except BaseException:
            self._pending[:0] = batch
            raise
        finally:
            self._inflight = ()
        self._landed(expected, batch, status)

    async def _create_now(self, status: RunStatus | None, error: str | None) -> None:
        """The first commit of a run whose creation was deferred: create it with its events."""
        record = self._create_record
        assert record is not None
        if status is not None and status is not RunStatus.RUNNING:  # parked or ended already
            record.status, record.owner, record.lease_until = status, None, None
        else:  # our lease starts now: the first step may have outlasted one from its start
            record.lease_until = time.time() + self.runtime.lease_ttl
        if error is not None:
            record.error = error
        if not await self.create():
            existing = self.existing
            raise ConflictError(self.run_id, 0, existing.last_seq if existing else 0)
        self._stored_status = record.status

    def _commit_now(
        self, append_now: AppendNow, status: RunStatus | None, error: str | None
    ) -> None:
        """``_append`` for a store that appends without waiting."""
        status = self._status_change(status, error)
        batch, self._pending = self._pending, []
        if not batch and status is None:
            return
        expected = self._committed
        try:
            append_now(self.run_id, expected, batch, status=status, error=error)
        except BaseException:
            self._pending[:0] = batch
            raise
        self._landed(expected, batch, status)

    def _status_change(self, status: RunStatus | None, error: str | None) -> RunStatus | None:
        """The status this append should store, if any."""
        stored = self._stored_status
        if status is stored and error is None:
            return None  # unchanged: spare the store its status bookkeeping
        if stored is not None and stored.terminal:
            return None  # ended: a commit queued earlier (a resume's) never moves it back
        return status

    def _landed(self, expected: int, batch: list[Event], status: RunStatus | None) -> None:
        self._committed = expected + len(batch)
        if status is not None:
            self._stored_status = status

    def uncommitted(self) -> list[Event]:
        """Events recorded but not yet known to be in the store (being written or pending)."""
        return [*self._inflight, *self._pending]

    # -- snapshots -----------------------------------------------------------------

    async def maybe_snapshot(self) -> None:
        if self._snapshot_due:
            self._snapshot_due = False
            await self.store.save_snapshot(
                Snapshot(self.run_id, self._committed, self.fold.to_snapshot())
            )
