"""The runs queued on busy threads (``multitask: enqueue``), the tasks that start them in
turn, and the thread's critical section (``thread_locks.py``) every start goes through.

A queued run is a row of the store's pending starts (``pending/``) as well as an entry of
this server's queue: the row outlives the server (its next start, or another server on
the same PostgreSQL store, picks it up: ``rescan``), the entry orders the runs this server
knows of. When its turn comes, the start is made in the thread's critical section only if
its row is still there (a start made, or the thread's queue dropped, by another server
removes it), and the row is removed once the run started. A queued run's id is taken
until it starts; one that cannot start when its turn comes is kept (the last
``KEEP_FAILED`` per thread, in this server's memory) with its error, to be seen.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .errors import ApiError
from .pending import MemoryPendingStarts, PendingStart, PendingStarts
from .thread_locks import LocalThreadLocks, ThreadLocks

log = logging.getLogger("mainspring.server")

KEEP_FAILED = 10  # queued runs that could not start, kept per thread to be seen
RESCAN = 15.0  # seconds between looks for other servers' pending starts (a shared store)

UntilEnded = Callable[[str], Awaitable[None]]
Go = Callable[[], Awaitable[str | None]]
#: How a pending start read from the store becomes this server's (None: not served here).
Restorer = Callable[[PendingStart], "tuple[Queued, UntilEnded, Go] | None"]


@dataclass(slots=True)
class Queued:
    """A run accepted behind a thread's open run, not started yet."""

    run_id: str
    graph: str
    thread: str
    tenant: str
    after: str  # the run (or queued run) it starts after
    queued_at: float
    input: Any = None  # to tell the same request again from another one with its run_id
    request: dict[str, Any] | None = None  # the start's body, kept in the pending row
    error: str | None = None  # why it could not start, when its turn came
    started: anyio.Event = field(default_factory=anyio.Event)

    def pending(self) -> PendingStart:
        return PendingStart(
            self.run_id, self.tenant, self.thread, self.graph, self.after, self.queued_at,
            self.request or {},
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        out = {
            "run_id": self.run_id,
            "graph": self.graph,
            "thread": self.thread,
            "tenant": self.tenant,
            "status": "queued" if self.error is None else "failed",
            "after": self.after,
            "queued_at": self.queued_at,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


class ThreadQueues:
    """The runs queued per (tenant, thread), the tasks that start them, and the critical
    section per thread (``thread_locks.py``) every start on a thread goes through."""

    def __init__(
        self,
        locks: ThreadLocks | None = None,
        pending: PendingStarts | None = None,
        *,
        shared: bool = False,
    ) -> None:
        self._tg: TaskGroup | None = None
        self._queues: dict[tuple[str, str], list[Queued]] = {}
        self._failed: dict[tuple[str, str], list[Queued]] = {}
        self.locks: ThreadLocks = locks if locks is not None else LocalThreadLocks()
        self.pending: PendingStarts = pending if pending is not None else MemoryPendingStarts()
        self.shared = shared  # other servers may add pending starts: look for them now and then
        self.restorer: Restorer | None = None
        self._foreign: set[str] = set()  # pending starts of graphs this server does not serve

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Hold the queue's tasks for the server's lifetime (its lifespan enters this): the
        pending starts left in the store are taken up at once."""
        try:
            await self.pending.open()
            async with anyio.create_task_group() as tg:
                self._tg = tg
                try:
                    await self.rescan()
                    if self.shared:
                        tg.start_soon(self._rescan_every, RESCAN)
                    yield
                finally:
                    self._tg = None
                    self._queues.clear()  # not started: left to the store's rows
                    tg.cancel_scope.cancel()
        finally:
            try:
                await self.pending.aclose()
            finally:
                await self.locks.aclose()

    async def rescan(self) -> int:
        """Take up the store's pending starts this server does not know of yet (left by a
        server that stopped, or added by another one); how many."""
        if self.restorer is None or self._tg is None:
            return 0
        taken = 0
        for row in await self.pending.all():
            if self.reserved(row.run_id) is not None or self._failed_has(row):
                continue
            if row.run_id in self._foreign:
                continue
            restored = self.restorer(row)
            if restored is None:  # another server's graph: said once, left to that server
                self._foreign.add(row.run_id)
            if restored is not None and self.reserved(row.run_id) is None:
                self._add(*restored)
                taken += 1
        return taken

    async def _rescan_every(self, interval: float) -> None:
        while True:
            await anyio.sleep(interval)
            try:
                await self.rescan()
            except Exception as exc:  # the store is down: the next look tries again
                log.warning("looking for pending starts failed: %r", exc)

    def _failed_has(self, row: PendingStart) -> bool:
        return any(f.run_id == row.run_id for f in self._failed.get((row.tenant, row.thread), ()))

    def queued(self, tenant: str, thread: str) -> list[Queued]:
        return list(self._queues.get((tenant, thread), ()))

    def reserved(self, run_id: str) -> Queued | None:
        """The queued run (any tenant, any thread) whose id is ``run_id``: the id is taken."""
        for queue in self._queues.values():
            for item in queue:
                if item.run_id == run_id:
                    return item
        return None

    def locked(self, tenant: str, thread: str) -> AbstractAsyncContextManager[None]:
        """The thread's critical section: a look at the thread and a start are one step."""
        return self.locks.locked(tenant, thread)

    async def drop(self, tenant: str, thread: str) -> list[str]:
        """Drop the thread's queued runs (this server's entries, every server's rows); their
        ids, oldest first."""
        items = self._queues.pop((tenant, thread), [])
        for item in items:
            item.started.set()  # whoever waits behind it stops waiting
        dropped = [item.run_id for item in items]
        for run_id in await self.pending.remove_thread(tenant, thread):
            if run_id not in dropped:
                dropped.append(run_id)
        return dropped

    async def enqueue(self, item: Queued, until_ended: UntilEnded, go: Go) -> None:
        """Queue ``item`` (its row first: accepted means kept): once the runs queued before
        it started and ``until_ended(after)`` returned, ``go()`` starts it (in the thread's
        critical section, if it was not dropped), or names the open run it must wait for
        first (another server's start took the thread meanwhile)."""
        if self._tg is None:
            raise ApiError(
                503, "unavailable", "the server is not running its lifespan; cannot enqueue"
            )
        await self.pending.add(item.pending())
        if self.reserved(item.run_id) is None:  # not taken up by a rescan meanwhile
            self._add(item, until_ended, go)

    def _add(self, item: Queued, until_ended: UntilEnded, go: Go) -> None:
        assert self._tg is not None
        queue = self._queues.setdefault((item.tenant, item.thread), [])
        before = queue[-1] if queue else None
        queue.append(item)
        self._tg.start_soon(self._start_later, item, before, until_ended, go)

    def failed(self, tenant: str, thread: str) -> list[Queued]:
        """The thread's queued runs that could not start (the last few), with the error."""
        return list(self._failed.get((tenant, thread), ()))

    async def _done(self, item: Queued) -> None:
        """The run started: its row is removed (a row left behind, the store being down, is
        found started by the next look and removed then)."""
        try:
            await self.pending.remove(item.run_id)
        except Exception as exc:
            log.warning("queued run %s started; removing its row failed: %r", item.run_id, exc)

    async def _start_later(
        self, item: Queued, before: Queued | None, until_ended: UntilEnded, go: Go
    ) -> None:
        key = (item.tenant, item.thread)
        try:
            if before is not None:
                await before.started.wait()
            after: str | None = item.after
            while after is not None:
                await until_ended(after)
                async with self.locked(*key):
                    if item not in self._queues.get(key, ()):  # dropped meanwhile
                        return
                    if not await self.pending.holds(item.run_id):  # started or dropped elsewhere
                        return
                    after = await go()
                    if after is None:
                        await self._done(item)
        except Exception as exc:  # seen in GET /v1/threads/{thread}, not only in the log
            log.exception("queued run %s on thread %r could not start", item.run_id, item.thread)
            item.error = exc.message if isinstance(exc, ApiError) else str(exc)
            failed = self._failed.setdefault(key, [])
            failed[:] = [*failed[-(KEEP_FAILED - 1) :], item]
            with anyio.CancelScope(shield=True), suppress(Exception):
                await self.pending.remove(item.run_id)  # it will not start: not kept
        finally:
            queue = self._queues.get(key)
            if queue is not None and item in queue:
                queue.remove(item)
                if not queue:
                    del self._queues[key]
            item.started.set()
