"""In-memory store: the reference backend, and the fastest; nothing survives the process.

Events are kept as Python objects, not encoded, so it is as fast as a list
append. It is the backend that defines the protocol's behaviour for tests.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

from ..errors import ConflictError, LeaseLostError, RunNotFoundError, StoreError
from ..events import Event
from ..status import RUNNING
from ._chain import AuditSettings
from ._lease_owners import owner_is_dead
from ._memory_audit import MemoryAudit
from .protocols import StoreCapabilities
from .records import (
    CommitObserver,
    CommitStats,
    CreateResult,
    Durability,
    RunQuery,
    RunRecord,
    RunStatus,
    Snapshot,
    ThreadInfo,
    notify_commit,
)

_ANY_RUN = RunQuery()


class MemoryStore(MemoryAudit):
    """A :class:`~mainspring.store.Store` in this process's memory (``memory://``)."""

    capabilities = StoreCapabilities(
        keeps_objects=True,
        appends_without_waiting=True,
        durable=False,
        shared_between_processes=False,
        defers_off_writes=False,
    )

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._runs: dict[str, RunRecord] = {}
        self._events: dict[str, list[Event]] = {}
        self._snapshots: dict[str, Snapshot] = {}
        # Lease expiry by the monotonic clock (lease_until, for people, is wall time):
        # one process, one clock, and no clock step can expire a healthy lease.
        self._deadlines: dict[str, float] = {}
        self._closed = False
        self.commit_observer: CommitObserver | None = None
        #: The audit chain, derived from the events when read (``_memory_audit``).
        self.audit = AuditSettings()
        self._notes = []

    async def open(self) -> None:
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed; open it again before use")

    async def create_run(
        self, record: RunRecord, events: Sequence[Event], durability: Durability
    ) -> CreateResult:
        self._check_open()
        existing = self._runs.get(record.run_id)
        if existing is not None:
            return CreateResult(replace(existing), created=False)
        # The caller hands the record over; it is stored as is (copies go out on reads).
        record.last_seq = len(events)
        if events:
            record.updated_at = events[-1].ts
        self._runs[record.run_id] = record
        self._events[record.run_id] = list(events)
        self._note_created(record.run_id, record.last_seq)
        if record.lease_until is not None:
            self._deadlines[record.run_id] = time.monotonic() + record.lease_until - time.time()
        return CreateResult(record, created=True)

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
        self.append_now(run_id, expected_seq, events, status=status, error=error, fence=fence)

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
        """``append`` without the await: nothing here waits, so the engine calls it directly."""
        record = self._runs.get(run_id)
        if record is None:
            raise RunNotFoundError(run_id)
        if fence is not None and record.fence != fence:
            raise LeaseLostError(run_id, fence, record.fence, record.owner)
        if record.last_seq != expected_seq:
            raise ConflictError(run_id, expected_seq, record.last_seq)
        if events:
            self._events[run_id].extend(events)
            record.last_seq = expected_seq + len(events)
            record.updated_at = events[-1].ts
        if self.commit_observer is not None:
            notify_commit(self.commit_observer, CommitStats(1, len(events), 0.0))
        if status is not None:
            before, record.status = record.status, status
            if status is not RUNNING:  # parked or ended: nobody drives it now
                record.owner = None
                record.lease_until = None
                self._note_rest(run_id, record.last_seq)
            elif before is not RUNNING:  # a parked run set running again
                self._note_resumed(run_id, record.last_seq)
        if error is not None:
            record.error = error

    async def flush(self) -> None:
        return None

    async def read(self, run_id: str, *, after: int = 0, until: int | None = None) -> list[Event]:
        self._check_open()
        events = self._events.get(run_id)
        if events is None:
            return []
        # seq n lives at index n - 1
        return events[after:until]

    async def get_run(self, run_id: str, *, tenant: str | None = None) -> RunRecord | None:
        record = self._runs.get(run_id)
        if record is None or (tenant is not None and record.tenant != tenant):
            return None
        return replace(record)

    async def list_runs(self, query: RunQuery = _ANY_RUN) -> list[RunRecord]:
        self._check_open()
        matches = [r for r in self._runs.values() if _matches(r, query)]
        matches.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return [replace(r) for r in matches[query.offset : query.offset + query.limit]]

    async def list_threads(
        self, *, limit: int = 100, tenant: str | None = None
    ) -> list[ThreadInfo]:
        # A thread is (tenant, thread id): the same id in two tenants is two conversations.
        latest: dict[tuple[str, str], tuple[RunRecord, int]] = {}
        for record in self._runs.values():
            if record.thread is None:
                continue
            owner = record.tenant
            if tenant is not None and owner != tenant:
                continue
            key = (owner, record.thread)
            prev = latest.get(key)
            count = prev[1] + 1 if prev else 1
            if prev is None or (record.created_at, record.run_id) > (
                prev[0].created_at,
                prev[0].run_id,
            ):
                latest[key] = (record, count)
            else:
                latest[key] = (prev[0], count)
        infos = [
            ThreadInfo(thread, count, r.run_id, r.status, r.updated_at, owner)
            for (owner, thread), (r, count) in latest.items()
        ]
        infos.sort(key=lambda t: (t.updated_at, t.thread, t.tenant), reverse=True)
        return infos[:limit]

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        self._snapshots[snapshot.run_id] = snapshot

    async def load_snapshot(self, run_id: str, *, at_most: int | None = None) -> Snapshot | None:
        snap = self._snapshots.get(run_id)
        if snap is None or (at_most is not None and snap.seq > at_most):
            return None
        return snap

    async def claim(
        self, run_id: str, owner: str, ttl: float, *, fence: int | None = None
    ) -> int | None:
        record = self._runs.get(run_id)
        if record is None:
            raise RunNotFoundError(run_id)
        if record.owner == owner or (record.owner is None and record.fence == fence):
            self._lease(record, owner, ttl)
            return record.fence
        if record.owner is not None and not self._expired(record):
            return None
        self._lease(record, owner, ttl)
        record.fence += 1
        return record.fence

    def _lease(self, record: RunRecord, owner: str, ttl: float) -> None:
        record.owner = owner
        record.lease_until = time.time() + ttl
        self._deadlines[record.run_id] = time.monotonic() + ttl

    def _expired(self, record: RunRecord) -> bool:
        if record.owner is None or owner_is_dead(record.owner):
            return True
        return self._deadlines.get(record.run_id, 0.0) <= time.monotonic()

    async def renew(self, owner: str, ttl: float) -> set[str]:
        renewed = set()
        for record in self._runs.values():
            if record.owner == owner:
                self._lease(record, owner, ttl)
                renewed.add(record.run_id)
        return renewed

    async def release(self, run_id: str, owner: str) -> None:
        record = self._runs.get(run_id)
        if record is not None and record.owner == owner:
            record.owner = None
            record.lease_until = None

    async def orphaned_runs(
        self, owner: str, *, limit: int = 1000, after: tuple[float, str] | None = None
    ) -> list[RunRecord]:
        found = [
            replace(r)
            for r in self._runs.values()
            if r.status is RunStatus.RUNNING
            and r.owner != owner
            and (after is None or (r.created_at, r.run_id) > after)
            and self._expired(r)
        ]
        found.sort(key=lambda r: (r.created_at, r.run_id))
        return found[:limit]

    def _cursor_table(self) -> dict[tuple[str, str], int]:
        # Made on first use (not in __init__): (reader name, run id) -> seq.
        table: dict[tuple[str, str], int] | None = self.__dict__.get("_cursors")
        if table is None:
            table = self.__dict__["_cursors"] = {}
        return table

    async def save_cursors(self, name: str, cursors: Mapping[str, int]) -> None:
        table = self._cursor_table()
        for run_id, seq in cursors.items():
            key = (name, run_id)
            if seq > table.get(key, -1):
                table[key] = seq

    async def load_cursors(self, name: str, run_ids: Sequence[str]) -> dict[str, int]:
        table = self._cursor_table()
        return {r: table[(name, r)] for r in run_ids if (name, r) in table}


def _matches(record: RunRecord, query: RunQuery) -> bool:
    if query.status is not None and record.status not in query.status:
        return False
    if query.graph is not None and record.graph != query.graph:
        return False
    if query.thread is not None and record.thread != query.thread:
        return False
    if query.tenant is not None and record.tenant != query.tenant:
        return False
    if query.parent_run_id is not None and record.parent_run_id != query.parent_run_id:
        return False
    if query.created_after is not None and record.created_at <= query.created_after:
        return False
    return not (query.created_before is not None and record.created_at >= query.created_before)
