"""The runs queued on busy threads (``multitask: enqueue``), the tasks that start them in
turn, and the thread's critical section (``thread_locks.py``) every start goes through.

The queue is this server's memory (docs/server.md): ordered per server, dropped when the
server stops. A queued run's id is taken until it starts; one that cannot start when its
turn comes is kept (the last ``KEEP_FAILED`` per thread) with its error, to be seen.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .errors import ApiError
from .thread_locks import LocalThreadLocks, ThreadLocks

log = logging.getLogger("mainspring.server")

KEEP_FAILED = 10  # queued runs that could not start, kept per thread to be seen


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
    error: str | None = None  # why it could not start, when its turn came
    started: anyio.Event = field(default_factory=anyio.Event)

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

    def __init__(self, locks: ThreadLocks | None = None) -> None:
        self._tg: TaskGroup | None = None
        self._queues: dict[tuple[str, str], list[Queued]] = {}
        self._failed: dict[tuple[str, str], list[Queued]] = {}
        self.locks: ThreadLocks = locks if locks is not None else LocalThreadLocks()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Hold the queue's tasks for the server's lifetime (its lifespan enters this)."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                try:
                    yield
                finally:
                    self._tg = None
                    self._queues.clear()  # not started: dropped (see the module docstring)
                    tg.cancel_scope.cancel()
        finally:
            await self.locks.aclose()

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

    def drop(self, tenant: str, thread: str) -> list[Queued]:
        dropped = self._queues.pop((tenant, thread), [])
        for item in dropped:
            item.started.set()  # whoever waits behind it stops waiting
        return dropped

    def enqueue(
        self,
        item: Queued,
        until_ended: Callable[[str], Awaitable[None]],
        go: Callable[[], Awaitable[str | None]],
    ) -> None:
        """Queue ``item``: once the runs queued before it started and ``until_ended(after)``
        returned, ``go()`` starts it (in the thread's critical section, if it was not
        dropped), or names the open run it must wait for first (another server's start
        took the thread meanwhile: the queue is this server's)."""
        if self._tg is None:
            raise ApiError(
                503, "unavailable", "the server is not running its lifespan; cannot enqueue"
            )
        queue = self._queues.setdefault((item.tenant, item.thread), [])
        before = queue[-1] if queue else None
        queue.append(item)
        self._tg.start_soon(self._start_later, item, before, until_ended, go)

    def failed(self, tenant: str, thread: str) -> list[Queued]:
        """The thread's queued runs that could not start (the last few), with the error."""
        return list(self._failed.get((tenant, thread), ()))

    async def _start_later(
        self,
        item: Queued,
        before: Queued | None,
        until_ended: Callable[[str], Awaitable[None]],
        go: Callable[[], Awaitable[str | None]],
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
                    after = await go()
        except Exception as exc:  # seen in GET /v1/threads/{thread}, not only in the log
            log.exception("queued run %s on thread %r could not start", item.run_id, item.thread)
            item.error = exc.message if isinstance(exc, ApiError) else str(exc)
            failed = self._failed.setdefault(key, [])
            failed[:] = [*failed[-(KEEP_FAILED - 1) :], item]
        finally:
            queue = self._queues.get(key)
            if queue is not None and item in queue:
                queue.remove(item)
                if not queue:
                    del self._queues[key]
            item.started.set()
