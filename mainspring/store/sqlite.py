"""SQLite store: one file, no services, group commit through one writer thread.

Writes (runs, appends, snapshots, leases) are queued to a single writer thread
that owns the write connection. It takes everything queued and commits it in
one ``BEGIN IMMEDIATE ... COMMIT`` (group commit, one fsync for all), with a
SAVEPOINT per request so that a failing request (a conflict, a constraint)
rolls back alone while the rest of its group commits. Waiting tasks are woken
with ``loop.call_soon_threadsafe``. Reads run in worker threads on read-only
connections; WAL lets them proceed alongside the writer, and they see every
write whose call has returned.

The conditional check of ``append`` runs inside the write transaction, so
several processes (each with its own writer) can share one file safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import anyio
import anyio.to_thread

from ..errors import StoreError
from ..events import Event, encode
from . import _sqlite_sql as sql
from ._owner import owner_is_dead
from ._sqlite_schema import inspect_file, migrate, parse_url, readonly_uri, translate
from .base import (
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

__all__ = ["SQLiteStore"]

_T = TypeVar("_T")

# Request kinds beyond the writes of _sqlite_sql (which index sql.APPLY).
_BARRIER: Final = len(sql.APPLY)  # no work: resolves once everything queued before it is committed
_STOP: Final = _BARRIER + 1

_ANY_RUN: Final = RunQuery()
# Appends of two different runs closer than this mean runs are concurrent: share commits.
_CONCURRENCY_WINDOW: Final = 0.005


class _Request:
    """One queued write; the writer fills ``result`` or ``error`` and wakes ``future``."""

    __slots__ = ("args", "error", "future", "loop", "off", "op", "result", "run_id", "urgent")

    def __init__(
        self,
        op: int,
        run_id: str | None,
        args: tuple[Any, ...],
        urgent: bool,
        future: asyncio.Future[Any] | None,
        loop: asyncio.AbstractEventLoop | None,
        off: bool = False,
    ) -> None:
        self.op = op
        self.run_id = run_id
        self.args = args
        self.urgent = urgent  # commit as soon as seen instead of lingering for a bigger group
        self.future = future
        self.loop = loop
        self.off = off  # nobody waits: errors are kept for the run's next append or flush
        self.result: Any = None
        self.error: BaseException | None = None


def _deliver(requests: list[_Request]) -> None:
    """Runs on the event loop: hand each waiting task its result."""
    for req in requests:
        future = req.future
        if future is None or future.done():  # the waiting task was cancelled
            continue
        if req.error is None:
            future.set_result(req.result)
        else:
            future.set_exception(req.error)


class _Writer:
    """The thread that owns the write connection and commits queued requests in groups."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        batch_window: float,
        max_batch: int,
        busy_timeout: float,
    ) -> None:
        self._conn = conn
        self._cur = conn.cursor()
        self._path = path
        self._window = batch_window
        self._max_batch = max_batch
        self._busy_timeout = busy_timeout
        self._queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        # Held while a transaction runs, by the writer thread or by an inline commit.
        self._conn_lock = threading.Lock()
        self.observer: CommitObserver | None = None
        self._last_append: tuple[str | None, float] = (None, 0.0)
        # Guards _stopping (so that nothing is queued behind the stop request)
        # and the bookkeeping of "off" writes, which both threads touch.
        self._lock = threading.Lock()
        self._stopping = False
        self.off_pending: dict[str, int] = {}
        self.off_errors: dict[str, BaseException] = {}
        # A daemon, so that a store never closed cannot hang interpreter exit: its
        # queued "off" writes are lost then, as in a crash; others were committed.
        self._thread = threading.Thread(
            target=self._run, name="mainspring-sqlite-writer", daemon=True
        )
        self._thread.start()

    # --- event-loop side ---

    def submit(self, req: _Request) -> None:
        with self._lock:
            if self._stopping:
                raise _closed_error()
            if req.off:
                run_id = req.run_id or ""
                self.off_pending[run_id] = self.off_pending.get(run_id, 0) + 1
            self._queue.put(req)

    def try_inline(self, req: _Request) -> bool:
        """Commit ``req`` on the caller's thread if nothing else is being written.

        A lone run's ``sync`` append then costs one fsync'd commit and no thread
        hand-offs (two wake-ups, ~55 us here). While other runs append too, or the
        writer is busy, it queues instead so that concurrent steps share commits.
        The event loop is blocked for that one commit.
        """
        now = time.monotonic()
        last_run, last_at = self._last_append
        self._last_append = (req.run_id, now)
        if last_run != req.run_id and now - last_at < _CONCURRENCY_WINDOW:
            return False
        if not self._queue.empty() or not self._conn_lock.acquire(blocking=False):
            return False
        try:
            if self._stopping:
                raise _closed_error()
            self._transact([req])
        finally:
            self._conn_lock.release()
        return True

    def stop(self, req: _Request) -> None:
        with self._lock:
            self._stopping = True
            self._queue.put(req)

    def join(self) -> None:
        self._thread.join()

    def take_error(self, run_id: str | None = None) -> BaseException | None:
        """Pop the kept error of an ``off`` write (of ``run_id``, or the oldest of any run)."""
        with self._lock:
            if not self.off_errors:
                return None
            if run_id is None:
                run_id = next(iter(self.off_errors))
            return self.off_errors.pop(run_id, None)

    # --- writer thread ---

    def _run(self) -> None:
        q = self._queue
        stopped = False
        while not stopped:
            group = [q.get()]
            try:
                if not q.empty() or not group[0].urgent:
                    self._gather(group)
                # The stop request is the last ever queued, so it ends its group.
                stopped = group[-1].op == _STOP
                if len(group) == 1:
                    writes = group if group[0].op < _BARRIER else []
                else:
                    writes = [req for req in group if req.op < _BARRIER]
                if writes:
                    with self._conn_lock:
                        self._transact(writes)
            except BaseException as exc:  # a bug here must not leave tasks waiting forever
                for req in group:
                    if req.error is None:
                        req.error = StoreError(f"internal error in the SQLite writer: {exc!r}")
            if stopped:
                with self._conn_lock:
                    self._shutdown()  # before waking aclose(), which expects a closed file
            self._finish(group)
        # Nothing can be queued after the stop request, but fail anything that raced it.
        while not q.empty():
            req = q.get()
            req.error = _closed_error()
            self._finish([req])

    def _gather(self, group: list[_Request]) -> None:
        """Add whatever is queued to ``group``; linger for more only if nobody needs it now."""
        q = self._queue
        limit = self._max_batch
        urgent = group[0].urgent
        while len(group) < limit and not q.empty():
            req = q.get()
            group.append(req)
            urgent = urgent or req.urgent
        if urgent:
            return
        deadline = time.monotonic() + self._window
        while len(group) < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                req = q.get(timeout=remaining)
            except queue.Empty:
                return
            group.append(req)
            if req.urgent:
                return

    def _transact(self, writes: list[_Request]) -> None:
        observer = self.observer
        started = time.perf_counter() if observer is not None else 0.0
        self._transact_now(writes)
        if observer is not None:
            runs = [r for r in writes if r.op in (sql.APPEND, sql.CREATE) and r.error is None]
            events = sum(len(r.args[2] if r.op == sql.APPEND else r.args[1]) for r in runs)
            if runs:
                notify_commit(
                    observer, CommitStats(len(runs), events, time.perf_counter() - started)
                )

    def _transact_now(self, writes: list[_Request]) -> None:
        cur = self._cur
        try:
            cur.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            for req in writes:
                req.error = self._translate(exc, "starting a write transaction")
            return
        try:
            if len(writes) == 1:
                # Alone in its group, a request needs no savepoint: a failure rolls back all.
                req = writes[0]
                try:
                    req.result = sql.APPLY[req.op](cur, req.args)
                except Exception as exc:
                    req.error = self._as_store_error(exc)
                    cur.execute("ROLLBACK")
                    return
            else:
                for req in writes:
                    cur.execute("SAVEPOINT request")
                    try:
                        req.result = sql.APPLY[req.op](cur, req.args)
                    except Exception as exc:
                        req.error = self._as_store_error(exc)
                        cur.execute("ROLLBACK TO request")
                    cur.execute("RELEASE request")
            cur.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the original error is what matters
                    cur.execute("ROLLBACK")
            for req in writes:
                if req.error is None:
                    req.result = None
                    req.error = self._translate(exc, "committing")

    def _shutdown(self) -> None:
        # Fold the WAL back into the file so a closed store is one self-contained
        # file. Best effort: a reader in another process may keep the WAL busy.
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA busy_timeout = 100")
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()

    def _finish(self, group: list[_Request]) -> None:
        """Settle ``off`` bookkeeping, then wake waiters with one call per event loop."""
        if len(group) == 1 and group[0].loop is not None:
            # The hot path. Waking the loop is the writer's last act before it blocks on
            # the queue again: any Python run after it competes for the GIL with the
            # waking loop (hence try/except, cheaper here than contextlib.suppress).
            try:  # noqa: SIM105
                group[0].loop.call_soon_threadsafe(_deliver, group)
            except RuntimeError:  # a closed loop: nobody is waiting any more
                pass
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[_Request]] = {}
        for req in group:
            if req.off:
                with self._lock:
                    run_id = req.run_id or ""
                    left = self.off_pending.get(run_id, 1) - 1
                    if left:
                        self.off_pending[run_id] = left
                    else:
                        self.off_pending.pop(run_id, None)
                    if req.error is not None:
                        self.off_errors.setdefault(run_id, req.error)
            elif req.loop is not None:
                by_loop.setdefault(req.loop, []).append(req)
        for loop, requests in by_loop.items():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, requests)

    def _as_store_error(self, exc: Exception) -> Exception:
        if isinstance(exc, sqlite3.Error):
            return self._translate(exc, "writing")
        return exc

    def _translate(self, exc: sqlite3.Error, doing: str) -> StoreError:
        return translate(exc, self._path, doing, busy_timeout=self._busy_timeout)


class SQLiteStore:
    """A store in one SQLite file: ``sqlite:///relative/path.db`` or ``sqlite:////abs/path.db``.

    ``batch_window`` is how long the writer lingers to gather a group when only
    ``batch`` or ``off`` writes are queued, up to ``max_batch`` requests;
    ``busy_timeout`` is how long to wait for another process holding the file.

    A task cancelled while waiting for a write does not withdraw it: the write
    is committed (or fails) with its group; the run's next append then sees it.
    """

    def __init__(
        self,
        url: str,
        *,
        batch_window: float = 0.002,
        max_batch: int = 512,
        busy_timeout: float = 5.0,
    ) -> None:
        self.url = url
        # Absolute now: read connections opened later must not follow a change of directory.
        self.path = parse_url(url).absolute()
        self._batch_window = batch_window
        self._max_batch = max_batch
        self._busy_timeout = busy_timeout
        self._writer: _Writer | None = None
        self._observer: CommitObserver | None = None
        self._open_lock = anyio.Lock()
        # Read connections, pooled across worker threads (sqlite3 objects may
        # cross threads as long as one thread uses each at a time).
        self._readers_lock = threading.Lock()
        self._idle_readers: list[sqlite3.Connection] = []
        self._readers_closed = False

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
            with self._readers_lock:
                self._readers_closed = False
            self._writer = _Writer(
                conn,
                self.path,
                batch_window=self._batch_window,
                max_batch=self._max_batch,
                busy_timeout=self._busy_timeout,
            )
            self._writer.observer = self._observer

    @property
    def commit_observer(self) -> CommitObserver | None:
        """Called after each commit, on the writer's thread (see ``Store``)."""
        return self._observer

    @commit_observer.setter
    def commit_observer(self, observer: CommitObserver | None) -> None:
        self._observer = observer
        if self._writer is not None:
            self._writer.observer = observer

    def _connect(self) -> sqlite3.Connection:
        path = self.path
        inspect_file(path)  # refuses foreign or newer files before anything can write to them
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
            migrate(conn, path)
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
            writer.stop(_Request(_STOP, None, (), True, done, loop))
            with anyio.CancelScope(shield=True):
                await done
                await anyio.to_thread.run_sync(writer.join)
            error = writer.take_error()
            if error is not None:
                raise error

    # --- writes ---

    def _require_writer(self) -> _Writer:
        writer = self._writer
        if writer is None:
            raise _closed_error()
        return writer

    async def _call(
        self, writer: _Writer, op: int, run_id: str | None, args: tuple[Any, ...], urgent: bool
    ) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        writer.submit(_Request(op, run_id, args, urgent, future, loop))
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
        # whether the run already existed.
        existing = await self._call(
            writer, sql.CREATE, record.run_id, (params, rows), durability != Durability.BATCH
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
        )
        if durability == Durability.OFF:
            writer.submit(_Request(sql.APPEND, run_id, args, False, None, None, off=True))
            return
        if durability == Durability.SYNC:
            inline = _Request(sql.APPEND, run_id, args, True, None, None)
            if writer.try_inline(inline):
                if inline.error is not None:
                    raise inline.error
                return
        # The hot path: _call inlined, one coroutine frame less per append.
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        writer.submit(
            _Request(sql.APPEND, run_id, args, durability != Durability.BATCH, future, loop)
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
        await self._call(writer, _BARRIER, None, (), True)
        error = writer.take_error()
        if error is not None:
            raise error

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        writer = self._require_writer()
        data = encode(snapshot.data, what="snapshot data")
        await self._call(
            writer, sql.SNAPSHOT, snapshot.run_id, (snapshot.run_id, snapshot.seq, data), True
        )

    async def claim(self, run_id: str, owner: str, ttl: float) -> int | None:
        writer = self._require_writer()
        result: int | None = await self._call(writer, sql.CLAIM, run_id, (run_id, owner, ttl), True)
        return result

    async def renew(self, owner: str, ttl: float) -> None:
        writer = self._require_writer()
        await self._call(writer, sql.RENEW, None, (owner, ttl), True)

    async def release(self, run_id: str, owner: str) -> None:
        writer = self._require_writer()
        await self._call(writer, sql.RELEASE, run_id, (run_id, owner), True)

    # --- reads ---

    async def _settle(self, run_id: str | None) -> _Writer:
        """Wait for queued ``off`` writes (of ``run_id``, or of any run) so a read sees them."""
        writer = self._require_writer()
        pending = writer.off_pending
        if pending and (run_id is None or run_id in pending):
            await self._call(writer, _BARRIER, None, (), True)
        return writer

    async def _read(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        return await anyio.to_thread.run_sync(self._run_read, query)

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
                raise _closed_error()
            if self._idle_readers:
                return self._idle_readers.pop()
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
        conn.create_function("mainspring_owner_is_dead", 1, owner_is_dead)
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

    async def orphaned_runs(self, owner: str, *, limit: int = 1000) -> list[RunRecord]:
        await self._settle(None)
        return await self._read(partial(sql.select_orphans, owner, time.time(), limit))


def _closed_error() -> StoreError:
    return StoreError("the SQLite store is not open; call await store.open() (or use async with)")
