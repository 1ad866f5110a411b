"""SQLite store: one file, no services, group commit through one writer thread.

Writes (runs, appends, snapshots, leases) are queued to a single writer thread
that owns the write connection and commits everything queued together
(``_sqlite_writer.py``). Reads run in worker threads on read-only
connections (``_sqlite_readers.py``); WAL lets them proceed alongside the writer,
and they see every write whose call has returned.

The conditional check of ``append`` runs inside the write transaction, so
several processes (each with its own writer) can share one file safely.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from types import TracebackType
from typing import Any, Final

import anyio
import anyio.to_thread

from ..errors import StoreError
from ..events import Event, encode
from ._chain import AuditSettings
from ._lease_watch import LeaseWatch
from ._sql_core import page_orphans
from ._sqlite_audit import Chain
from ._sqlite_audited import SQLiteAudited
from ._sqlite_file import connect_writer, parse_url
from ._sqlite_readers import Readers
from ._sqlite_sql import (
    APPEND,
    CLAIM,
    CREATE,
    CURSORS,
    DIALECT,
    RELEASE,
    RENEW,
    SNAPSHOT,
    Row,
    event_rows,
    prepare_reader,
    run_params,
    select_cursors,
    select_events,
    select_orphan_page,
    select_run,
    select_runs,
    select_snapshot,
    select_threads,
)
from ._sqlite_writer import BARRIER, STOP, Request, Writer, closed_error
from .protocols import StoreCapabilities
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

__all__ = ["SQLiteStore"]

_ANY_RUN: Final = RunQuery()


class SQLiteStore(SQLiteAudited):
    """A store in one SQLite file: ``sqlite:///relative/path.db`` or ``sqlite:////abs/path.db``.

    A missing file is made into a new store; an empty one only with ``create=True``
    (or ``?create=true`` in the URL). Anything else that is not a healthy Mainspring
    store (another file, a damaged or read-only store, a newer schema) is refused on
    ``open`` and left untouched.

    ``batch_window`` is how long the writer lingers to gather a group when only
    ``batch`` or ``off`` writes are queued, up to ``max_batch`` requests;
    ``busy_timeout`` is how long to wait for another process holding the file.

    A task cancelled while waiting for a write does not withdraw it: the write
    is committed (or fails) with its group; the run's next append then sees it.
    """

    capabilities = StoreCapabilities(
        keeps_objects=False,
        appends_without_waiting=False,
        durable=True,
        shared_between_processes=True,
        defers_off_writes=True,
        accepts_off_now=True,
    )

    def __init__(
        self,
        url: str,
        *,
        create: bool | None = None,
        batch_window: float = 0.002,
        max_batch: int = 512,
        busy_timeout: float = 5.0,
        audit: bool | None = None,
    ) -> None:
        self.url = url
        parsed = parse_url(url)
        #: The audit chain (``store/_chain.py``): on unless ``audit=False`` or ``?audit=off``.
        self.audit = AuditSettings(enabled=parsed.audit if audit is None else audit)
        self._chain = Chain(self.audit)
        # Absolute now: read connections opened later must not follow a change of directory.
        self.path = parsed.path.absolute()
        self._create = parsed.create if create is None else create
        self._batch_window = batch_window
        self._max_batch = max_batch
        self._busy_timeout = busy_timeout
        self._writer: Writer | None = None
        #: Called after each commit, on the writer's thread (see ``ObservesCommits``).
        self.commit_observer: CommitObserver | None = None
        self._open_lock = anyio.Lock()
        self._leases = LeaseWatch()
        prepare = partial(prepare_reader, self._leases)
        self._readers = Readers(self.path, busy_timeout=busy_timeout, prepare=prepare)

    def __repr__(self) -> str:
        state = "open" if self._writer is not None else "closed"
        return f"<SQLiteStore {self.url!r} {state}>"

    async def __aenter__(self) -> SQLiteStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- lifecycle ---

    async def open(self) -> None:
        async with self._open_lock:
            if self._writer is not None:
                return
            connect = partial(
                connect_writer, self.path, create=self._create, busy_timeout=self._busy_timeout
            )
            conn, opened = await anyio.to_thread.run_sync(connect)
            self._readers.open(opened)
            self._writer = Writer(
                conn,
                self.path,
                batch_window=self._batch_window,
                max_batch=self._max_batch,
                busy_timeout=self._busy_timeout,
                observed=self,
                chain=self._chain,
            )

    async def aclose(self) -> None:
        async with self._open_lock:
            writer = self._writer
            if writer is None:
                return
            self._writer = None
            # Readers go first: the last connection to close removes the -wal and
            # -shm files, and only the writer's connection may do that.
            self._readers.close()
            loop = asyncio.get_running_loop()
            done: asyncio.Future[None] = loop.create_future()
            writer.stop(Request(STOP, None, (), True, done, loop))
            with anyio.CancelScope(shield=True):
                await done
                await anyio.to_thread.run_sync(writer.join)
            error = writer.take_error()
            if error is not None:
                raise error

    # --- writes ---

    def _require_writer(self) -> Writer:
        writer = self._writer
        if writer is None:
            raise closed_error()
        return writer

    async def create_run(
        self, record: RunRecord, events: Sequence[Event], durability: Durability
    ) -> CreateResult:
        writer = self._require_writer()
        rows, blobs = event_rows(record.run_id, 0, events)
        stored = replace(record, last_seq=len(events))
        if events:
            stored.updated_at = events[-1].ts
        params = run_params(stored)
        # Creation always waits, even for "off" runs: the caller needs to know
        # whether the run already existed (an "off" run's is not fsync'd, though).
        # A lone sync or off run's creation goes inline.
        args = (params, rows, self._on(), blobs)
        off = durability == Durability.OFF
        inline = Request(CREATE, record.run_id, args, True, None, None, lax=off)
        if durability != Durability.BATCH and writer.try_inline(inline):
            if inline.error is not None:
                raise inline.error
            existing = inline.result
        else:
            existing = await writer.call(
                CREATE, record.run_id, args, durability != Durability.BATCH, lax=off
            )
        if existing is not None:
            return CreateResult(existing, created=False)
        return CreateResult(stored, created=True)

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
        if durability == Durability.OFF:
            self.append_off(run_id, expected_seq, events, status=status, error=error, fence=fence)
            return
        writer = self._require_writer()
        writer.raise_kept(run_id)
        args = _append_args(run_id, expected_seq, events, status, error, fence, self._on())
        if durability == Durability.SYNC:
            inline = Request(APPEND, run_id, args, True, None, None)
            if writer.try_inline(inline):
                if inline.error is not None:
                    raise inline.error
                return
        # The hot path: writer.call inlined, one coroutine frame less per append.
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        writer.submit(Request(APPEND, run_id, args, durability != Durability.BATCH, future, loop))
        try:
            await future
        except StoreError:
            # A failed "off" write of this run is the root cause of what follows.
            kept = writer.take_error(run_id) if run_id in writer.off_errors else None
            if kept is not None:
                raise kept from None
            raise

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
        """An ``off`` append, accepted now and written at the end of this event-loop turn
        (merged with the run's others of the turn); see ``Writer.submit_off``."""
        writer = self._require_writer()
        writer.raise_kept(run_id)
        args = _append_args(run_id, expected_seq, events, status, error, fence, self._on())
        writer.submit_off(Request(APPEND, run_id, args, False, None, None, off=True))

    async def flush(self) -> None:
        """Wait for every queued write; raise the oldest unreported error of an ``off`` write."""
        writer = self._require_writer()
        await writer.call(BARRIER, None, (), True)
        error = writer.take_error()
        if error is not None:
            raise error

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        writer = self._require_writer()
        data = encode(snapshot.data, what="snapshot data")
        args = (snapshot.run_id, snapshot.seq, data)
        await writer.call(SNAPSHOT, snapshot.run_id, args, True)

    async def claim(
        self, run_id: str, owner: str, ttl: float, *, fence: int | None = None
    ) -> int | None:
        writer = self._require_writer()
        args = (run_id, owner, ttl, self._leases, fence)
        result: int | None = await writer.call(CLAIM, run_id, args, True)
        return result

    async def renew(self, owner: str, ttl: float) -> set[str]:
        writer = self._require_writer()
        renewed: set[str] = await writer.call(RENEW, None, (owner, ttl), True)
        return renewed

    async def release(self, run_id: str, owner: str) -> None:
        writer = self._require_writer()
        await writer.call(RELEASE, run_id, (run_id, owner), True)

    # --- reads ---

    async def _settle(self, run_id: str | None) -> Writer:
        """Wait for queued ``off`` writes (of ``run_id``, or of any run) so a read sees them."""
        writer = self._require_writer()
        pending = writer.off_pending
        if pending and (run_id is None or run_id in pending):
            await writer.call(BARRIER, None, (), True)
        return writer

    async def read(self, run_id: str, *, after: int = 0, until: int | None = None) -> list[Event]:
        await self._settle(run_id)
        return await self._readers.run(partial(select_events, run_id, after, until))

    async def get_run(self, run_id: str, *, tenant: str | None = None) -> RunRecord | None:
        await self._settle(run_id)
        return await self._readers.run(partial(select_run, run_id, tenant))

    async def list_runs(self, query: RunQuery = _ANY_RUN) -> list[RunRecord]:
        await self._settle(None)
        if query.status is not None and not query.status:
            return []
        return await self._readers.run(partial(select_runs, query))

    async def list_threads(
        self, *, limit: int = 100, tenant: str | None = None
    ) -> list[ThreadInfo]:
        await self._settle(None)
        return await self._readers.run(partial(select_threads, limit, tenant))

    async def load_snapshot(self, run_id: str, *, at_most: int | None = None) -> Snapshot | None:
        self._require_writer()
        return await self._readers.run(partial(select_snapshot, run_id, at_most))

    async def orphaned_runs(
        self, owner: str, *, limit: int = 1000, after: tuple[float, str] | None = None
    ) -> list[RunRecord]:
        await self._settle(None)

        async def page(low: tuple[float, str]) -> list[Row]:
            return await self._readers.run(partial(select_orphan_page, owner, low, limit))

        # The lease check is in the query: one page, every row an orphan.
        return await page_orphans(DIALECT, page, lambda _: True, limit, after)

    async def save_cursors(self, name: str, cursors: Mapping[str, int]) -> None:
        if not cursors:
            return
        writer = self._require_writer()
        await writer.call(CURSORS, None, (name, list(cursors.items())), True)

    async def load_cursors(self, name: str, run_ids: Sequence[str]) -> dict[str, int]:
        self._require_writer()
        return await self._readers.run(partial(select_cursors, name, list(run_ids)))


def _append_args(
    run_id: str,
    expected_seq: int,
    events: Sequence[Event],
    status: RunStatus | None,
    error: str | None,
    fence: int | None,
    chain: Chain | None,
) -> tuple[Any, ...]:
    """What ``apply_append`` takes, encoded on the caller's thread (hashed on the writer's,
    in the transaction: the hash before it is what the file holds)."""
    rows, blobs = event_rows(run_id, expected_seq, events)
    return (
        run_id,
        expected_seq,
        rows,
        None if status is None else str(status),
        error,
        events[-1].ts if events else None,
        fence,
        chain,
        blobs,
    )
