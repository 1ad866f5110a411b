"""The Store protocol: where journals live.

A store keeps, per run, an append-only journal of :class:`~mainspring.events.Event`
keyed by ``(run_id, seq)`` plus one summary row (:class:`RunRecord`) that is
written in the same transaction as the events it summarises, so it never
disagrees with the journal. Snapshots are a cache of the journal's fold.

The contract every backend honours (and ``tests/store_conformance.py`` checks):

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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..events import Event
from ..status import Durability as Durability  # re-exported: the store API speaks them
from ..status import RunStatus as RunStatus


@dataclass(slots=True)
class RunRecord:
    """The summary row of a run, kept in step with its journal."""

    run_id: str
    graph: str
    thread: str | None
    status: RunStatus
    created_at: float
    updated_at: float
    last_seq: int = 0
    parent_run_id: str | None = None
    durability: Durability = Durability.SYNC
    owner: str | None = None
    lease_until: float | None = None
    fence: int = 0
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class RunQuery:
    """Filters for :meth:`Store.list_runs`; ``None`` means any."""

    status: Sequence[RunStatus] | None = None
    graph: str | None = None
    thread: str | None = None
    parent_run_id: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    limit: int = 100
    offset: int = 0


@dataclass(slots=True, frozen=True)
class ThreadInfo:
    thread: str
    runs: int
    last_run_id: str
    last_status: RunStatus
    updated_at: float


@dataclass(slots=True, frozen=True)
class Snapshot:
    """A cached fold of a run's journal up to and including ``seq``."""

    run_id: str
    seq: int
    data: dict[str, Any]


@dataclass(slots=True, frozen=True)
class CreateResult:
    record: RunRecord
    created: bool  # False: a run with this id already existed and was returned as is


@dataclass(slots=True, frozen=True)
class CommitStats:
    """One physical commit of a store: how many run writes and events it carried."""

    writes: int  # creates and appends, of one run or several (group commit)
    events: int
    seconds: float


CommitObserver = Callable[[CommitStats], None]

_log = logging.getLogger("mainspring.store")


def notify_commit(observer: CommitObserver | None, stats: CommitStats) -> None:
    """Tell the observer about a commit; its failure is logged, never a failed write."""
    if observer is None:
        return
    try:
        observer(stats)
    except Exception:
        _log.exception("the store's commit observer failed; the commit itself succeeded")


@runtime_checkable
class Store(Protocol):
    """Where journals live. All methods are safe to call from concurrent tasks.

    A store may also offer ``commit_observer: CommitObserver | None``, called after
    each physical commit (possibly from the store's writer thread, so it must be
    cheap and thread-safe): how group commits actually group, for metrics.
    """

    url: str

    async def open(self) -> None:
        """Connect, verify the store is ours and migrate it to the current schema."""

    async def aclose(self) -> None:
        """Flush pending writes and release connections."""

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

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def list_runs(self, query: RunQuery = RunQuery()) -> list[RunRecord]:
        """Runs matching ``query``, newest first."""

    async def list_threads(self, *, limit: int = 100) -> list[ThreadInfo]:
        """Threads (sessions) with their latest run, most recently updated first."""

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` as the run's latest cached fold (older ones may be dropped)."""

    async def load_snapshot(self, run_id: str, *, at_most: int | None = None) -> Snapshot | None:
        """The newest snapshot with ``seq <= at_most``, if any is kept."""

    async def claim(
        self, run_id: str, owner: str, ttl: float, *, fence: int | None = None
    ) -> int | None:
        """Take the run's lease if it is free, expired or held by a dead local process.

        Returns the new fencing token, or ``None`` if another live owner holds it.
        A run already held by ``owner`` is renewed and keeps its token; so is a free
        run whose token is still ``fence`` (nobody has held it since: a holder that
        parked the run takes it back without fencing out its own writes).
        """

    async def renew(self, owner: str, ttl: float) -> None:
        """Extend every lease ``owner`` holds (one heartbeat for all its runs)."""

    async def release(self, run_id: str, owner: str) -> None:
        """Give the lease back (the run is parked or terminal)."""

    async def orphaned_runs(
        self, owner: str, *, limit: int = 1000, after: tuple[float, str] | None = None
    ) -> list[RunRecord]:
        """Running runs whose lease ``owner`` could take now (crash recovery), oldest first.

        At most ``limit``, from those created after ``after`` (``(created_at, run_id)``
        of the last run of the previous page): page on until a page comes back short.
        """

    async def save_cursors(self, name: str, cursors: Mapping[str, int]) -> None:
        """Record how far reader ``name`` (e.g. a trace exporter) got in each run.

        Each run's cursor is raised to at least the given seq, never lowered: a
        late or repeated save cannot undo progress saved since.
        """

    async def load_cursors(self, name: str, run_ids: Sequence[str]) -> dict[str, int]:
        """Reader ``name``'s cursors of ``run_ids``; a run without one is not in the dict."""
