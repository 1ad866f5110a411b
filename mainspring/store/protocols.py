"""The store protocols: where journals live, as four small protocols and what a store declares.

A store keeps, per run, an append-only journal of :class:`~mainspring.events.Event`
keyed by ``(run_id, seq)`` plus one summary row (:class:`RunRecord`) that is
written in the same transaction as the events it summarises, so it never
disagrees with the journal. Snapshots are a cache of the journal's fold.

:class:`Store` is what the runtime is given: a :class:`Journal`, a
:class:`RunIndex`, :class:`Leases` and reader :class:`Cursors`, opened and
closed, with its :class:`StoreCapabilities` declared. The parts are one
contract, so they are one page: an append that parks a run frees its lease, an
append's ``fence`` is the lease's token, and the index reads the rows the
journal writes. ``AppendsNow`` and ``ObservesCommits`` are optional.

The contract every backend honours (``tests/test_store_conformance.py`` checks
it, each test against the protocols and capabilities it needs):

* ``append`` is conditional: it succeeds only if the run's last sequence number
  equals ``expected_seq``; otherwise it raises :class:`ConflictError` and writes
  nothing. One writer per run, never a silent fork.
* ``append`` returns once the events are as durable as ``durability`` asks:
  ``sync`` committed and fsync'd; ``batch`` committed in a group commit shared
  with other runs; ``off`` accepted (written later, lost on a crash).
* An append whose ``status`` is not ``running`` (parked or ended) also frees
  the run's lease in the same transaction: nobody drives it any more.
* Leases say which process drives a run; ``claim`` takes a run whose lease is
  free, expired or held by a process known to be dead, and returns a fencing
  token that grows whenever the run changes hands. An append that carries a
  token (``fence``) is refused with :class:`LeaseLostError` once the run's token
  has moved on: a process that lost its lease can never write again.
* Expiry never compares one process's wall clock with another's. PostgreSQL
  uses the server's clock; SQLite, which has no clock of its own, lets a
  claimant see a lease as expired once it has watched it go unrenewed for the
  lease's ttl on its own monotonic clock (so a claimant may need to ask again).
* A store that is not a Mainspring store, or has a newer schema, is refused
  by ``open`` and never modified.
* Every run belongs to a tenant, ``RunRecord.tenant`` (its metadata's ``"tenant"``,
  else ``""``), fixed at ``create_run`` and indexed: ``get_run``, ``list_runs`` and
  ``list_threads`` take it as a filter, so a tenant-scoped caller never reads another
  tenant's rows. Journals are read by run id, after a scoped ``get_run``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol, TypeGuard, runtime_checkable

import msgspec

from ..events import Event
from .records import (
    CommitObserver,
    CreateResult,
    Durability,
    RunQuery,
    RunRecord,
    RunStatus,
    Snapshot,
    ThreadInfo,
)

_ANY_RUN = RunQuery()


class StoreCapabilities(msgspec.Struct, frozen=True, kw_only=True):
    """What a store declares about itself, so that callers (the runtime, the conformance
    suite) ask the store instead of testing its class."""

    #: Events, snapshots and metadata come back as the very objects given, never encoded:
    #: nothing needs a JSON round-trip check on the way in or reviving on the way out.
    keeps_objects: bool
    #: The store offers ``append_now`` (:class:`AppendsNow`): an append with nothing to
    #: wait for, called without making and awaiting a coroutine. Its ``create_run`` waits
    #: for nothing either (the engine does not shield it from cancellation).
    appends_without_waiting: bool
    #: What was committed outlives the process: a store opened again on the same URL
    #: finds it.
    durable: bool
    #: Stores opened on the same URL, in this process or in others, share one set of
    #: journals: their appends conflict and their leases fence each other.
    shared_between_processes: bool
    #: ``off`` appends return before they are written; a failure of one is raised by the
    #: run's next append or by ``flush`` (and ``aclose``), once. Otherwise an ``off``
    #: append fails at the call, like the others.
    defers_off_writes: bool
    #: The store offers ``append_off`` (:class:`AcceptsOffNow`): an ``off`` append
    #: accepted without making and awaiting a coroutine, written later (as with
    #: ``defers_off_writes``).
    accepts_off_now: bool = False


@runtime_checkable
class Journal(Protocol):
    """Each run's append-only events, and cached folds of them."""

    async def create_run(
        self, record: RunRecord, events: Sequence[Event], durability: Durability
    ) -> CreateResult:
        """Insert a new run with its first events, or return the existing run of that id."""

    async def append(
        self,
        run_id: str,
        expected_seq: int,
        events: Sequence[Event],
        *,
        status: RunStatus | None = None,
        error: str | None = None,
        durability: Durability = Durability.SYNC,
        fence: int | None = None,
    ) -> None:
        """Append ``events`` (numbered ``expected_seq + 1`` onward) or raise ConflictError.

        With ``fence``, also refuse (LeaseLostError) unless the run's lease token is still
        ``fence``.
        """

    async def flush(self) -> None:
        """Wait until every accepted write (including ``off`` ones) is committed."""

    async def read(self, run_id: str, *, after: int = 0, until: int | None = None) -> list[Event]:
        """Events with ``after < seq <= until`` in order."""

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` as the run's latest cached fold (older ones may be dropped)."""

    async def load_snapshot(self, run_id: str, *, at_most: int | None = None) -> Snapshot | None:
        """The newest snapshot with ``seq <= at_most``, if any is kept."""


@runtime_checkable
class RunIndex(Protocol):
    """The runs' summary rows, as the journal's writes left them."""

    async def get_run(self, run_id: str, *, tenant: str | None = None) -> RunRecord | None:
        """The run's record; None if there is none, or (``tenant`` given) if it belongs to
        another tenant: the two are told apart by nobody."""

    async def list_runs(self, query: RunQuery = _ANY_RUN) -> list[RunRecord]:
        """Runs matching ``query``, newest first."""

    async def list_threads(
        self, *, limit: int = 100, tenant: str | None = None
    ) -> list[ThreadInfo]:
        """Threads (sessions) with their latest run, most recently updated first: of one
        tenant, or (None) of every tenant, a thread id in two tenants being two threads."""


@runtime_checkable
class Leases(Protocol):
    """Which process drives each run, with fencing tokens."""

    async def claim(
        self, run_id: str, owner: str, ttl: float, *, fence: int | None = None
    ) -> int | None:
        """Take the run's lease if it is free, expired or held by a dead local process.

        Returns the new fencing token, or ``None`` if another live owner holds it.
        A run already held by ``owner`` is renewed and keeps its token; so is a free
        run whose token is still ``fence`` (nobody has held it since: a holder that
        parked the run takes it back without fencing out its own writes).
        """

    async def renew(self, owner: str, ttl: float) -> Collection[str] | None:
        """Extend every lease ``owner`` holds (one heartbeat for all its runs).

        Returns the runs whose lease it extended (``None``: every lease ``owner`` thinks
        it holds): a run taken over meanwhile is not among them, so its driver stops
        trusting its lease and looks in the store before its next effect.
        """

    async def release(self, run_id: str, owner: str) -> None:
        """Give the lease back (the run is parked or terminal)."""

    async def orphaned_runs(
        self, owner: str, *, limit: int = 1000, after: tuple[float, str] | None = None
    ) -> list[RunRecord]:
        """Running runs whose lease ``owner`` could take now (crash recovery), oldest first.

        At most ``limit``, from those created after ``after`` (``(created_at, run_id)``
        of the last run of the previous page): page on until a page comes back short.
        """


@runtime_checkable
class Cursors(Protocol):
    """How far each reader of the journals (a trace exporter, say) got in each run."""

    async def save_cursors(self, name: str, cursors: Mapping[str, int]) -> None:
        """Record how far reader ``name`` (e.g. a trace exporter) got in each run.

        Each run's cursor is raised to at least the given seq, never lowered: a
        late or repeated save cannot undo progress saved since.
        """

    async def load_cursors(self, name: str, run_ids: Sequence[str]) -> dict[str, int]:
        """Reader ``name``'s cursors of ``run_ids``; a run without one is not in the dict."""


@runtime_checkable
class Store(Journal, RunIndex, Leases, Cursors, Protocol):
    """Where journals live. All methods are safe to call from concurrent tasks."""

    url: str
    capabilities: StoreCapabilities

    async def open(self) -> None:
        """Connect, verify the store is ours and migrate it to the current schema."""

    async def aclose(self) -> None:
        """Flush pending writes and release connections."""


@runtime_checkable
class AppendsNow(Protocol):
    """Optional: a store whose appends wait for nothing (``appends_without_waiting``)."""

    def append_now(
        self,
        run_id: str,
        expected_seq: int,
        events: Sequence[Event],
        *,
        status: RunStatus | None = None,
        error: str | None = None,
        fence: int | None = None,
    ) -> None:
        """``append`` (any durability) done before it returns, under the same contract."""


@runtime_checkable
class AcceptsOffNow(Protocol):
    """Optional: a store that takes ``off`` appends without waiting (``accepts_off_now``)."""

    def append_off(
        self,
        run_id: str,
        expected_seq: int,
        events: Sequence[Event],
        *,
        status: RunStatus | None = None,
        error: str | None = None,
        fence: int | None = None,
    ) -> None:
        """``append(..., durability="off")``, accepted before it returns: written later,
        its failure raised by the run's next append or by ``flush``, once."""


@runtime_checkable
class ObservesCommits(Protocol):
    """Optional: a store that reports each physical commit (how group commits group).

    ``commit_observer`` is called after each commit, possibly from the store's writer
    thread, so it must be cheap and thread-safe; its failure never fails a write.
    """

    commit_observer: CommitObserver | None


def appends_now(store: Store) -> TypeGuard[AppendsNow]:
    """Whether ``store`` declares ``append_now``: by its capabilities, never by its class,
    so a wrapper that must see every append can decline it."""
    return store.capabilities.appends_without_waiting


def accepts_off_now(store: Store) -> TypeGuard[AcceptsOffNow]:
    """Whether ``store`` declares ``append_off``, by its capabilities."""
    return store.capabilities.accepts_off_now
