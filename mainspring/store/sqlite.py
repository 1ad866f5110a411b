"""SQLite store: one file, no services, group commit through one writer thread.

Writes (runs, appends, snapshots, leases) are queued to a single writer thread
that owns the write connection and commits everything queued together
(``_sqlite_writer.py``). Reads run in worker threads on read-only
connections; WAL lets them proceed alongside the writer, and they see every
write whose call has returned.

The conditional check of ``append`` runs inside the write transaction, so
several processes (each with its own writer) can share one file safely.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from types import TracebackType
from typing import Any, Final, TypeVar

import anyio
import anyio.to_thread

from ..errors import StoreError
from ..events import Event, encode
from . import _sqlite_sql as sql
from ._lease_watch import LeaseWatch
from ._sql_core import page_orphans
from ._sqlite_errors import translate
from ._sqlite_file import (
    check_same_file,
    create_file,
    file_id,
    inspect_file,
    parse_url,
    readonly_uri,
)
from ._sqlite_schema import migrate
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

_T = TypeVar("_T")

_ANY_RUN: Final = RunQuery()
_READ_THREADS: Final = 8


class SQLiteStore:
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
    )

    def __init__(
        self,
        url: str,
        *,
        create: bool | None = None,
        batch_window: float = 0.002,
        max_batch: int = 512,
        busy_timeout: float = 5.0,
    ) -> None:
        self.url = url
        parsed = parse_url(url)
        # Absolute now: read connections opened later must not follow a change of directory.
        self.path = parsed.path.absolute()
        self._create = parsed.create if create is None else create
        self._file_id: tuple[int, int] | None = None  # (device, inode) of the file opened
        self._batch_window = batch_window
        self._max_batch = max_batch
        self._busy_timeout = busy_timeout
        self._writer: Writer | None = None
        self._observer: CommitObserver | None = None
        self._open_lock = anyio.Lock()
        # Read connections, pooled across worker threads (sqlite3 objects may
        # cross threads as long as one thread uses each at a time).
        self._readers_lock = threading.Lock()
        self._idle_readers: list[sqlite3.Connection] = []
        self._readers_closed = False
        # Reads take threads of their own, so a user's blocking code (which shares anyio's
        # default limiter) can never starve the store. Made in open(): it needs the loop.
        self._read_limiter: anyio.CapacityLimiter | None = None
        self._leases = LeaseWatch()

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
            conn = await anyio.to_thread.run_sync(self._connect)
            self._read_limiter = anyio.CapacityLimiter(_READ_THREADS)
            with self._readers_lock:
                self._readers_closed = False
            self._writer = Writer(
                conn,
                self.path,
                batch_window=self._batch_window,
                max_batch=self._max_batch,
                busy_timeout=self._busy_timeout,
            )
            self._writer.observer = self._observer

    @property
    def commit_observer(self) -> CommitObserver | None:
        """Called after each commit, on the writer's thread (see ``ObservesCommits``)."""
        return self._observer

    @commit_observer.setter
    def commit_observer(self, observer: CommitObserver | None) -> None:
        self._observer = observer
        if self._writer is not None:
            self._writer.observer = observer

    def _connect(self) -> sqlite3.Connection:
        path = self.path
        # Refuses foreign, newer, damaged, read-only and (unless asked to create) empty
        # files before anything can write to them; a missing store is made whole.
        if inspect_file(path, create=self._create) and not create_file(path):
            inspect_file(path, create=self._create)  # another process put a file there first
        try:
            conn = sqlite3.connect(
                path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise translate(exc, path, "opening the store") from None
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"{path} cannot use write-ahead logging (journal mode stayed {mode!r}); "
                    "put the store on a local filesystem"
                )
            conn.execute("PRAGMA synchronous = FULL")  # every commit is fsync'd
            # Damage met later is reported when its page is read, before it is written over.
            conn.execute("PRAGMA cell_size_check = ON")
            migrate(conn, path)
            self._file_id = file_id(path)
        except sqlite3.Error as exc:
            conn.close()
            raise translate(
                exc, path, "opening the store", busy_timeout=self._busy_timeout
            ) from None
        except BaseException:
            conn.close()
            raise
        return conn

    async def aclose(self) -> None:
        async with self._open_lock:
            writer = self._writer
            if writer is None:
                return
            self._writer = None
            # Readers go first: the last connection to close removes the -wal and
            # -shm files, and only the writer's connection may do that.
            self._close_readers()
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

    async def _call(
        self, writer: Writer, op: int, run_id: str | None, args: tuple[Any, ...], urgent: bool
    ) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        writer.submit(Request(op, run_id, args, urgent, future, loop))
        return await future

    async def create_run(
        self, record: RunRecord, events: Sequence[Event], durability: Durability
    ) -> CreateResult:
        writer = self._require_writer()
        rows = sql.event_rows(record.run_id, 0, events)
        stored = replace(record, last_seq=len(events))
        if events:
            stored.updated_at = events[-1].ts
        params = sql.run_params(stored)
        # Creation always waits, even for "off" runs: the caller needs to know
        # whether the run already existed. A lone sync run's commits go inline.
        args = (params, rows)
        inline = Request(sql.CREATE, record.run_id, args, True, None, None)
        if durability == Durability.SYNC and writer.try_inline(inline):
            if inline.error is not None:
                raise inline.error
            existing = inline.result
        else:
            existing = await self._call(
                writer, sql.CREATE, record.run_id, args, durability != Durability.BATCH
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
        writer = self._require_writer()
        if writer.off_errors and run_id in writer.off_errors:
            kept = writer.take_error(run_id)
            if kept is not None:
                raise kept
        rows = sql.event_rows(run_id, expected_seq, events)
        args = (
            run_id,
            expected_seq,
            rows,
            None if status is None else str(status),
            error,
            events[-1].ts if events else None,
            fence,
        )
        if durability == Durability.OFF:
            writer.submit(Request(sql.APPEND, run_id, args, False, None, None, off=True))
            return
        if durability == Durability.SYNC:
            inline = Request(sql.APPEND, run_id, args, True, None, None)
            if writer.try_inline(inline):
                if inline.error is not None:
                    raise inline.error
                return
        # The hot path: _call inlined, one coroutine frame less per append.
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        writer.submit(
            Request(sql.APPEND, run_id, args, durability != Durability.BATCH, future, loop)
        )
        try:
            await future
        except StoreError:
            # A failed "off" write of this run is the root cause of what follows.
            kept = writer.take_error(run_id) if run_id in writer.off_errors else None
            if kept is not None:
                raise kept from None
            raise

    async def flush(self) -> None:
        """Wait for every queued write; raise the oldest unreported error of an ``off`` write."""
        writer = self._require_writer()
        await self._call(writer, BARRIER, None, (), True)
        error = writer.take_error()
        if error is not None:
            raise error

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        writer = self._require_writer()
        data = encode(snapshot.data, what="snapshot data")
        await self._call(
            writer, sql.SNAPSHOT, snapshot.run_id, (snapshot.run_id, snapshot.seq, data), True
        )

    async def claim(
        self, run_id: str, owner: str, ttl: float, *, fence: int | None = None
    ) -> int | None:
        writer = self._require_writer()
        args = (run_id, owner, ttl, self._leases, fence)
        result: int | None = await self._call(writer, sql.CLAIM, run_id, args, True)
        return result

    async def renew(self, owner: str, ttl: float) -> None:
        writer = self._require_writer()
        await self._call(writer, sql.RENEW, None, (owner, ttl), True)

    async def release(self, run_id: str, owner: str) -> None:
        writer = self._require_writer()
        await self._call(writer, sql.RELEASE, run_id, (run_id, owner), True)

    # --- reads ---

    async def _settle(self, run_id: str | None) -> Writer:
        """Wait for queued ``off`` writes (of ``run_id``, or of any run) so a read sees them."""
        writer = self._require_writer()
        pending = writer.off_pending
        if pending and (run_id is None or run_id in pending):
            await self._call(writer, BARRIER, None, (), True)
        return writer

    async def _read(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        return await anyio.to_thread.run_sync(self._run_read, query, limiter=self._read_limiter)

    def _run_read(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._acquire_reader()
        try:
            return query(conn)
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "reading", busy_timeout=self._busy_timeout) from None
        finally:
            self._release_reader(conn)

    def _acquire_reader(self) -> sqlite3.Connection:
        with self._readers_lock:
            if self._readers_closed:
                raise closed_error()
            if self._idle_readers:
                return self._idle_readers.pop()
        check_same_file(self.path, self._file_id)
        try:
            conn = sqlite3.connect(
                readonly_uri(self.path),
                uri=True,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "opening a read connection") from None
        conn.execute("PRAGMA cell_size_check = ON")
        sql.prepare_reader(self._leases, conn)
        return conn

    def _release_reader(self, conn: sqlite3.Connection) -> None:
        with self._readers_lock:
            if not self._readers_closed:
                self._idle_readers.append(conn)
                return
        conn.close()

    def _close_readers(self) -> None:
        with self._readers_lock:
            self._readers_closed = True
            idle, self._idle_readers = self._idle_readers, []
        for conn in idle:
            conn.close()

    async def read(self, run_id: str, *, after: int = 0, until: int | None = None) -> list[Event]:
        await self._settle(run_id)
        return await self._read(partial(sql.select_events, run_id, after, until))

    async def get_run(self, run_id: str) -> RunRecord | None:
        await self._settle(run_id)
        return await self._read(partial(sql.select_run, run_id))

    async def list_runs(self, query: RunQuery = _ANY_RUN) -> list[RunRecord]:
        await self._settle(None)
        if query.status is not None and not query.status:
            return []
        return await self._read(partial(sql.select_runs, query))

    async def list_threads(self, *, limit: int = 100) -> list[ThreadInfo]:
        await self._settle(None)
        return await self._read(partial(sql.select_threads, limit))

    async def load_snapshot(self, run_id: str, *, at_most: int | None = None) -> Snapshot | None:
        self._require_writer()
        return await self._read(partial(sql.select_snapshot, run_id, at_most))

    async def orphaned_runs(
        self, owner: str, *, limit: int = 1000, after: tuple[float, str] | None = None
    ) -> list[RunRecord]:
        await self._settle(None)

        async def page(low: tuple[float, str]) -> list[sql.Row]:
            return await self._read(partial(sql.select_orphan_page, owner, low, limit))

        # The lease check is in the query: one page, every row an orphan.
        return await page_orphans(sql.DIALECT, page, lambda _: True, limit, after)

    async def save_cursors(self, name: str, cursors: Mapping[str, int]) -> None:
        if not cursors:
            return
        writer = self._require_writer()
        await self._call(writer, sql.CURSORS, None, (name, list(cursors.items())), True)

    async def load_cursors(self, name: str, run_ids: Sequence[str]) -> dict[str, int]:
        self._require_writer()
        return await self._read(partial(sql.select_cursors, name, list(run_ids)))
