"""A run's journal as its driver writes it: events recorded, folded, and committed.

The driver (``driver.py``) decides what happens; this half keeps the record:
each event is numbered, folded into the run's state and told to live
listeners as it is recorded, and reaches the store at the commit points the
driver chooses, as durably as the run's durability asks. Commits of one run are
serialised and never interrupted, and a batch that fails to land stays
pending, in order.

A storage error never fails a run. Every append carries the run's lease token
(``fence``), so a process that lost the run can never write to it. A write the
store could not make now (:class:`TransientStoreError`) is retried for the
runtime's ``retry_for``; past it, or when the run was taken over, the journal
stops for good (``outcome`` says why) and every later commit raises
:class:`Stopped`: the driver winds up, hands the lease back, and the run stays
resumable from what its journal holds.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import anyio

from ..errors import (
    ConflictError,
    RunNotFoundError,
    StoreError,
    TransientStoreError,
)
from ..events import Event, EventData, check_faithful
from ..status import OFF, RUNNING, Durability, RunStatus
from ..store import RunRecord, Snapshot, Store, accepts_off_now
from ._tasks import cancel_scope
from .fold import HANDLERS, RunFold
from .seams import AppendNow, EngineServices, Listener

log = logging.getLogger("mainspring.runtime")

new_event = tuple.__new__  # skips NamedTuple's Python-level __new__ on the hot path

# Errors of the store that end this process's driving of a run, never the run itself.
STOPS_DRIVING = (StoreError, RunNotFoundError)


class Stopped(BaseException):
    """The run cannot go on in this process: its store failed past ``retry_for``, or
    another process took it over. ``RunJournal.outcome`` holds the cause.

    A BaseException, raised out of commits (inside a node too), so that a node's
    ``except Exception`` cannot swallow it and go on as if its effect were recorded.
    """


class JournalWriter:
    """One run's uncommitted events and its commits: the one way anything writes to a run.

    A driver writes through its :class:`RunJournal`; a cancel of a run nobody drives,
    and a fork's copy of a journal, write through a writer of their own, with the
    same numbering, fencing, retries and listeners.
    """

    __slots__ = (
        "__weakref__",  # the registry holds a run's latest driver weakly
        "_append_now",
        "_append_off",
        "_commit_done",
        "_committed",
        "_committing",
        "_create_record",
        "_defer_create",
        "_inflight",
        "_listeners",
        "_next_seq",
        "_pending",
        "_stored_status",
        "checks_values",
        "durability",
        "existing",
        "fence",
        "lease_valid_until",
        "nested",
        "outcome",
        "run_id",
        "services",
        "store",
    )

    def __init__(
        self,
        services: EngineServices,
        run_id: str,
        committed_seq: int,
        *,
        store: Store,
        durability: Durability,
        check_json: bool,
        listeners: list[Listener],
        append_now: AppendNow | None,
    ) -> None:
        self.services = services
        self.store = store
        self.durability = durability
        self.run_id = run_id
        # Values must round-trip through the journal (durable stores) to be recorded.
        self.checks_values = check_json
        self._listeners = listeners
        self._append_now = append_now
        # A store that takes "off" appends without waiting: no coroutine, no shield.
        self._append_off = (
            store.append_off if durability is OFF and accepts_off_now(store) else None
        )
        self._pending: list[Event] = []
        self._inflight: Sequence[Event] = ()  # a tuple while idle: no list per run
        self._stored_status: RunStatus | None = None
        self._create_record: RunRecord | None = None
        self._defer_create = False  # Runtime.run(): the run is created by its first commit
        self.existing: RunRecord | None = None  # set when create() found the run already there
        self._committed = self._next_seq = committed_seq
        self._committing = False
        self._commit_done: anyio.Event | None = None
        self.nested = False  # a subgraph's run, driven inside its parent's task
        self.fence: int | None = None  # the run's lease token while this process holds it
        # Until when (monotonic) this process surely holds the lease: renewals in a chain
        # with no gap. Past it the lease may have been taken over: look before acting.
        self.lease_valid_until = 0.0
        self.outcome: BaseException | None = None  # why the driver stopped early, if it did

    @property
    def last_seq(self) -> int:
        """The sequence number of the last event recorded (committed or not)."""
        return self._next_seq

    @property
    def watched(self) -> bool:
        """Whether anyone follows the run's tokens live (``run.events()``) in this process."""
        subs = self.services.registry.subscribers(self.run_id)
        return subs is not None and subs.want_deltas

    def broadcast(self, data: EventData) -> None:
        """Tell the run's live subscribers something the journal does not keep (a model's
        tokens): stamped with the sequence number of the last event recorded."""
        subs = self.services.registry.subscribers(self.run_id)
        if subs is not None and subs.want_deltas:
            subs.publish_delta(Event(self.run_id, self.last_seq, data.kind, time.time(), data))

    def record(self, data: EventData) -> Event:
        """Append an event to the run (in memory) and tell live listeners."""
        self._next_seq += 1
        event = new_event(Event, (self.run_id, self._next_seq, data.kind, time.time(), data))
        self._pending.append(event)
        if self._create_record is None:  # listeners hear of a new run once it exists
            for listener in self._listeners:
                listener(event)
        return event

    def prepare_create(self, record: RunRecord, events: Sequence[Event]) -> None:
        """Make the next commit create the run, with ``events`` as its first ones (a fork)."""
        self._create_record = record
        self._pending = list(events)
        self._next_seq = len(events)
        self._stored_status = record.status

    @property
    def committed_seq(self) -> int:
        """The last sequence number known to be in the store."""
        return self._committed

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
        started = time.monotonic()
        try:
            result = await self.store.create_run(record, events, self.durability)
        except BaseException:
            self._pending[:0] = events
            raise
        self._create_record = None
        if not result.created:
            self.existing = result.record
            return False
        self.fence = record.fence
        self.lease_valid_until = started + self.services.lease_ttl
        self._committed = len(events)
        if self.services.committed and self.store is self.services.store:
            for hear in self.services.committed:
                hear(self.run_id, events, record.status)
        if self._listeners:  # the run exists: listeners hear all of it
            for event in [*events, *self._pending]:
                for listener in self._listeners:
                    listener(event)
        return True

    def check_json(self, value: Any, what: str, revive: Callable[[Any], Any] | None = None) -> None:
        """On a durable store, refuse a value its journal would give back changed."""
        if self.checks_values and value is not None:
            check_faithful(value, what, revive)

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
        if self.outcome is not None:
            raise Stopped()  # this process stopped driving the run: it writes nothing more
        if not self._pending and status is None:
            return
        try:
            if self._append_now is not None:  # in-memory store: nothing to await or protect
                self._commit_now(self._append_now, status, error)
            elif (
                self._append_off is not None
                and self._create_record is None
                and not self._committing
            ):
                self._commit_now(self._append_off, status, error)
            elif shield or self._committing:
                with cancel_scope(shield=True):
                    await self._serialised_append(status, error)
            else:
                await self._serialised_append(status, error)
        except STOPS_DRIVING as exc:
            self.stop(exc)

    def commit_now(self) -> bool:
        """``commit()`` when it needs no await (an in-memory store, nothing stopped): True
        once done; False to ``await commit()``. An effect commits after every call, and
        the coroutine of ``commit`` is a good part of it."""
        if self._append_now is None or self.outcome is not None:
            return False
        if self._pending:
            try:
                self._commit_now(self._append_now, None, None)
            except STOPS_DRIVING as exc:
                self.stop(exc)
        return True

    def stop(self, cause: BaseException) -> NoReturn:
        """Stop driving the run for ``cause`` (a store failure, a lost lease): the journal
        stays as the store has it, resumable."""
        if self.outcome is None:
            self.outcome = cause
        raise Stopped() from cause

    async def _serialised_append(self, status: RunStatus | None, error: str | None) -> None:
        while self._committing:  # another task of this run is committing: queue behind it
            if self._commit_done is None:
                self._commit_done = anyio.Event()
            await self._commit_done.wait()
        self._committing = True
        try:
            await self._append_retrying(status, error)
        finally:
            self._committing = False
            if self._commit_done is not None:
                self._commit_done.set()
                self._commit_done = None
            self._release_held_cancel()

    def _release_held_cancel(self) -> None:
        """A cancel of the run held back while an append was in flight goes now (driver)."""

    def _giving_up(self) -> bool:
        """The runtime is closing (driver): stop retrying the store, leave the run as it is.
        A cancel keeps retrying: what happened must be recorded before it is."""
        return False

    async def _append_retrying(self, status: RunStatus | None, error: str | None) -> None:
        """``_append``, retried through transient store errors for the runtime's retry_for.

        Safe to retry: a store's failed append wrote nothing (SQLite rolls the whole
        transaction back; PostgreSQL tells a lost reply from a conflict itself).
        """
        delay, deadline = 0.05, 0.0
        while True:
            try:
                await self._append(status, error)
                return
            except TransientStoreError as exc:
                now = time.monotonic()
                if not deadline:
                    deadline = now + self.services.retry_for
                    log.warning(
                        "run %s: the store failed to record a step (%s); retrying for %.0f s",
                        self.run_id,
                        exc,
                        self.services.retry_for,
                    )
                if now >= deadline or self._giving_up():
                    raise
                await anyio.sleep(min(deadline - now, delay * random.uniform(0.5, 1.0)))
                delay = min(delay * 2, 1.0)

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
                self.run_id,
                expected,
                batch,
                status=status,
                error=error,
                durability=self.durability,
                fence=self.fence,
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
        if status is not None and status is not RUNNING:  # parked or ended already
            record.status, record.owner, record.lease_until = status, None, None
        else:  # our lease starts now: the first step may have outlasted one from its start
            record.lease_until = time.time() + self.services.lease_ttl
        if error is not None:
            record.error = error
        if not await self.create():
            existing = self.existing
            raise ConflictError(self.run_id, 0, existing.last_seq if existing else 0)
        self._stored_status = record.status

    def _commit_now(
        self, append_now: AppendNow, status: RunStatus | None, error: str | None
    ) -> None:
        """``_append`` for a store that appends without waiting (or an ``off`` append
        that a store accepts without waiting)."""
        status = self._status_change(status, error)
        batch, self._pending = self._pending, []
        if not batch and status is None:
            return
        expected = self._committed
        try:
            append_now(self.run_id, expected, batch, status=status, error=error, fence=self.fence)
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
        if self.services.committed and self.store is self.services.store:  # not a replay's
            for hear in self.services.committed:
                hear(self.run_id, batch, status)

    def listen(self, listener: Listener) -> None:
        """Tell ``listener`` every event recorded from now on (a live stream)."""
        if listener not in self._listeners:  # copied: the list may be the runtime's
            self._listeners = [*self._listeners, listener]

    def uncommitted(self) -> list[Event]:
        """Events recorded but not yet known to be in the store (being written or pending)."""
        return [*self._inflight, *self._pending]


class RunJournal(JournalWriter):
    """A driven run's journal: each event recorded is also folded into the run's state."""

    __slots__ = ("_snapshot_due", "fold")

    def __init__(
        self,
        services: EngineServices,
        fold: RunFold,
        *,
        store: Store,
        durability: Durability,
        check_json: bool,
        listeners: list[Listener],
        append_now: AppendNow | None,
    ) -> None:
        super().__init__(
            services,
            fold.run_id,
            fold.seq,
            store=store,
            durability=durability,
            check_json=check_json,
            listeners=listeners,
            append_now=append_now,
        )
        self.fold = fold
        self._snapshot_due = False

    @property
    def last_seq(self) -> int:
        return self.fold.seq  # a driver numbers its events in its fold

    def record(self, data: EventData) -> Event:
        """Append an event to the run (in memory), fold it, and tell live listeners."""
        fold = self.fold
        seq = fold.seq + 1
        kind = data.kind
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

    # -- snapshots -----------------------------------------------------------------

    async def maybe_snapshot(self) -> None:
        if self._snapshot_due:
            self._snapshot_due = False
            try:
                await self.store.save_snapshot(
                    Snapshot(self.run_id, self._committed, self.fold.to_snapshot())
                )
            except StoreError as exc:  # a cache of the journal: the run goes on without it
                log.warning("run %s: could not save a snapshot: %s", self.run_id, exc)
