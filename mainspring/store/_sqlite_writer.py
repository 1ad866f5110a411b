"""The SQLite store's writer thread: one write connection, group commit.

It takes everything queued and commits it in one ``BEGIN IMMEDIATE ... COMMIT``
(one fsync for all), with a SAVEPOINT per request so that a failing request (a
conflict, a constraint) rolls back alone while the rest of its group commits.
Waiting tasks are woken with ``loop.call_soon_threadsafe``; a lone run's
commit may run inline on the caller's thread instead (``try_inline``).

``off`` appends wait for nothing: they are held on the event loop's side until the
end of the turn that made them (``submit_off``), each run's merged into one
request, then queued, or taken by an inline commit made meanwhile. A group made
only of writes of ``off`` runs commits with ``synchronous = NORMAL`` (no fsync);
any other group with ``FULL``, which makes everything before it durable too.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Final

from ..errors import StoreError
from ._sqlite_audit import Chain
from ._sqlite_blobs import merged
from ._sqlite_errors import translate
from ._sqlite_sql import APPEND, APPLY, CREATE
from .protocols import ObservesCommits
from .records import CommitStats, notify_commit

# Request kinds beyond the writes of _sqlite_sql (which index APPLY).
BARRIER: Final = len(APPLY)  # no work: resolves once everything queued before it is committed
STOP: Final = BARRIER + 1

# Appends of two different runs closer than this mean runs are concurrent: share commits.
CONCURRENCY_WINDOW: Final = 0.005


class Request:
    """One queued write; the writer fills ``result`` or ``error`` and wakes ``future``."""

    __slots__ = (
        "args",
        "error",
        "future",
        "lax",
        "loop",
        "off",
        "op",
        "result",
        "run_id",
        "urgent",
    )

    def __init__(
        self,
        op: int,
        run_id: str | None,
        args: tuple[Any, ...],
        urgent: bool,
        future: asyncio.Future[Any] | None,
        loop: asyncio.AbstractEventLoop | None,
        off: bool = False,
        lax: bool = False,
    ) -> None:
        self.op = op
        self.run_id = run_id
        self.args = args
        self.urgent = urgent  # commit as soon as seen instead of lingering for a bigger group
        self.future = future
        self.loop = loop
        self.off = off  # nobody waits: errors are kept for the run's next append or flush
        # A write of an "off" run: its commit need not be fsync'd (it may be lost in a
        # crash), unless it shares a group with a write that must.
        self.lax = lax or off
        self.result: Any = None
        self.error: BaseException | None = None


def extend(prior: Request, args: tuple[Any, ...]) -> bool:
    """Make the held ``off`` append ``prior`` also write the next append of its run
    (``args``), if it continues it: the same as writing both, one after the other."""
    run_id, expected, rows, status, error, last_ts, fence, audit, blobs = prior.args
    if args[1] != expected + len(rows) or args[6] != fence or status not in (None, "running"):
        return False  # not next (it fails alone), fenced otherwise, or after a park
    rows.extend(args[2])
    prior.args = (
        run_id,
        expected,
        rows,
        status if args[3] is None else args[3],
        error if args[4] is None else args[4],
        last_ts if args[5] is None else args[5],
        fence,
        audit,
        merged(blobs, args[8]),
    )
    return True


def _deliver(requests: list[Request]) -> None:
    """Runs on the event loop: hand each waiting task its result."""
    for req in requests:
        future = req.future
        if future is None or future.done():  # the waiting task was cancelled
            continue
        if req.error is None:
            future.set_result(req.result)
        else:
            future.set_exception(req.error)


class Writer:
    """The thread that owns the write connection and commits queued requests in groups."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        batch_window: float,
        max_batch: int,
        busy_timeout: float,
        observed: ObservesCommits,
        chain: Chain,
    ) -> None:
        self._chain = chain  # the runs' heads, kept once their commits are
        self._conn = conn
        self._cur = conn.cursor()
        self._path = path
        self._window = batch_window
        self._max_batch = max_batch
        self._busy_timeout = busy_timeout
        self._queue: queue.SimpleQueue[Request] = queue.SimpleQueue()
        # Held while a transaction runs, by the writer thread or by an inline commit.
        self._conn_lock = threading.Lock()
        self._observed = observed  # whose commit_observer hears of each commit, when set
        self._last_append: tuple[str | None, float] = (None, 0.0)
        self._lax = False  # the connection's synchronous is NORMAL (else FULL, as opened)
        # Guards _stopping (so that nothing is queued behind the stop request)
        # and the bookkeeping of "off" writes, which both threads touch.
        self._lock = threading.Lock()
        self._stopping = False
        self.off_pending: dict[str, int] = {}
        self.off_errors: dict[str, BaseException] = {}
        # "off" appends of this event-loop turn, not queued yet: the last one of each run.
        self._held: dict[str, Request] = {}
        # A daemon, so that a store never closed cannot hang interpreter exit: its
        # queued "off" writes are lost then, as in a crash; others were committed.
        self._thread = threading.Thread(
            target=self._run, name="mainspring-sqlite-writer", daemon=True
        )
        self._thread.start()

    # --- event-loop side ---

    def submit(self, req: Request) -> None:
        with self._lock:
            if self._stopping:
                raise closed_error()
            if self._held:  # everything accepted before goes first
                self._queue_held()
            self._queue.put(req)

    def submit_off(self, req: Request) -> None:
        """Accept an ``off`` append; it is queued at the end of this event-loop turn.

        An append that continues the run's append held in this turn extends it
        instead: however many steps a run takes in a turn, the writer thread is
        woken once and writes one request. Any other write queues what is held first.
        """
        run_id = req.run_id or ""
        self._note_append(req, time.monotonic())
        with self._lock:
            if self._stopping:
                raise closed_error()
            held = self._held
            prior = held.get(run_id)
            if prior is not None:
                if extend(prior, req.args):
                    return
                self._queue_held()  # it does not continue: the run's order is kept
            elif not held:
                asyncio.get_running_loop().call_soon(self.queue_held)
            self._held[run_id] = req
            self.off_pending[run_id] = self.off_pending.get(run_id, 0) + 1

    def queue_held(self) -> None:
        """Queue the held ``off`` appends (at the end of the event-loop turn that made them)."""
        with self._lock:
            if self._held:
                self._queue_held()

    def _queue_held(self) -> None:
        """Queue the held appends, under ``_lock``."""
        held, self._held = self._held, {}
        put = self._queue.put
        for req in held.values():
            put(req)

    async def call(
        self, op: int, run_id: str | None, args: tuple[Any, ...], urgent: bool, lax: bool = False
    ) -> Any:
        """Queue a write and wait for its outcome."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.submit(Request(op, run_id, args, urgent, future, loop, lax=lax))
        return await future

    def try_inline(self, req: Request) -> bool:
        """Commit ``req`` on the caller's thread if nothing else is being written.

        A lone run's ``sync`` append then costs one fsync'd commit and no thread
        hand-offs (two wake-ups, ~55 us here). While other runs append too, or the
        writer is busy, it queues instead so that concurrent steps share commits.
        The event loop is blocked for that one commit, which also writes the ``off``
        appends held in this turn (before ``req``).
        """
        now = time.monotonic()
        last_run, last_at = self._last_append
        self._note_append(req, now)
        if last_run not in (None, req.run_id) and now - last_at < CONCURRENCY_WINDOW:
            return False
        if not self._queue.empty() or not self._conn_lock.acquire(blocking=False):
            return False
        try:
            with self._lock:
                if self._stopping:
                    raise closed_error()
                held = self._held
                if held and any(self.off_pending.get(run, 0) > 1 for run in held):
                    # An older append of a held run may be in the writer thread's hands
                    # (taken off the queue, not yet committed): the held one must follow it.
                    self._queue_held()
                    return False
                # The "off" appends held in this turn go first, in the same commit.
                self._held = {}
            if held:
                writes = [*held.values(), req]
                try:
                    self._transact(writes)
                except BaseException as exc:  # as in _run: the held writes must not be lost
                    for other in held.values():
                        other.error = StoreError(f"internal error in the SQLite store: {exc!r}")
                    raise
                finally:
                    self._finish(writes)  # their bookkeeping; nobody waits on req's future
            else:
                self._transact([req])
        finally:
            self._conn_lock.release()
        return True

    def _note_append(self, req: Request, now: float) -> None:
        """Remember which run wrote last, and when: a sign of concurrent runs. A run that
        parks or ends appends no more, so the next run after it is no such sign
        (sequential runs stay inline, their creates included)."""
        ends = req.op == APPEND and req.args[3] not in (None, "running")
        self._last_append = (None, 0.0) if ends else (req.run_id, now)

    def raise_kept(self, run_id: str) -> None:
        """Raise the kept error of a failed ``off`` write of ``run_id``, once."""
        if self.off_errors and run_id in self.off_errors:
            kept = self.take_error(run_id)
            if kept is not None:
                raise kept

    def stop(self, req: Request) -> None:
        with self._lock:
            self._stopping = True
            if self._held:
                self._queue_held()
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
                stopped = group[-1].op == STOP
                if len(group) == 1:
                    writes = group if group[0].op < BARRIER else []
                else:
                    writes = [req for req in group if req.op < BARRIER]
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
            req.error = closed_error()
            self._finish([req])

    def _gather(self, group: list[Request]) -> None:
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

    def _transact(self, writes: list[Request]) -> None:
        observer = self._observed.commit_observer
        started = time.perf_counter() if observer is not None else 0.0
        self._transact_now(writes)
        if observer is not None:
            runs = [r for r in writes if r.op in (APPEND, CREATE) and r.error is None]
            events = sum(len(r.args[2] if r.op == APPEND else r.args[1]) for r in runs)
            if runs:
                notify_commit(
                    observer, CommitStats(len(runs), events, time.perf_counter() - started)
                )

    def _transact_now(self, writes: list[Request]) -> None:
        cur = self._cur
        try:
            lax = all(req.lax for req in writes)
            if lax != self._lax:
                # Only writes of "off" runs: no fsync at their commit. WAL stays
                # consistent; a crash may lose the last of them, and nothing else: the
                # next fsync'd commit makes everything before it durable too.
                cur.execute("PRAGMA synchronous = NORMAL" if lax else "PRAGMA synchronous = FULL")
                self._lax = lax
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
                    req.result = APPLY[req.op](cur, req.args)
                except Exception as exc:
                    req.error = self._as_store_error(exc)
                    self._chain.rolled_back()
                    cur.execute("ROLLBACK")
                    return
            else:
                for req in writes:
                    cur.execute("SAVEPOINT request")
                    try:
                        req.result = APPLY[req.op](cur, req.args)
                    except Exception as exc:
                        req.error = self._as_store_error(exc)
                        cur.execute("ROLLBACK TO request")
                    cur.execute("RELEASE request")
            cur.execute("COMMIT")
            self._chain.committed()
        except sqlite3.Error as exc:
            self._chain.rolled_back()
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

    def _finish(self, group: list[Request]) -> None:
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
        by_loop: dict[asyncio.AbstractEventLoop, list[Request]] = {}
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


def closed_error() -> StoreError:
    return StoreError("the SQLite store is not open; call await store.open() (or use async with)")
