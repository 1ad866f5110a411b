"""The runtime's run tasks: a small structured task group for the runs it drives.

Every spawned run is tracked until it ends, and ``aclose`` abandons the ones
still going, and any started while it closes (through each run's own cancel
scope, never in the middle of an append), and waits for all of them: no run
outlives its runtime.

Why not ``anyio.create_task_group().start_soon``: runs are the runtime's most
frequent tasks (a server starts one per request; W4 starts 1,000 at once), and
anyio 4.16 spends ~11 us spawning a task and ~6 us finishing it (a task handle
with its own cancel scope and event each) against ~3.5 us for both on a bare
asyncio task (10,000 spawns timed on a 2-core machine, 2026-11-21); W4 in
memory went from 0.13 s to 0.11 s with this alone. Each run already has its
own cancel scope in its driver, so it needs none of that. The stores run on
asyncio, so the runtime does too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

import anyio


class Abandonable(Protocol):
    """A run's driver, as far as its task goes: it can be told to stop where it is."""

    run_id: str

    def abandon(self) -> None: ...


log = logging.getLogger("mainspring.runtime")


class RunTasks:
    """The tasks driving this runtime's runs, each with the driver it drives."""

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[None], Abandonable] = {}
        self._closing = False

    def spawn(self, driver: Abandonable, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=driver.run_id)
        self._tasks[task] = driver
        task.add_done_callback(self._finished)
        if self._closing:  # started while the runtime closes: it stops before its first step
            driver.abandon()

    def _finished(self, task: asyncio.Task[None]) -> None:
        del self._tasks[task]
        if not task.cancelled() and (exc := task.exception()) is not None:
            # Drivers record their runs' errors in the journal; this is a bug of ours.
            log.error("run task %s failed", task.get_name(), exc_info=exc)

    async def aclose(self) -> None:
        """Abandon the runs still going (they stay resumable) and wait for every task."""
        self._closing = True
        for driver in list(self._tasks.values()):
            driver.abandon()
        while self._tasks:
            await asyncio.wait(list(self._tasks))


_scope_class: type[anyio.CancelScope] | None = None


def cancel_scope(*, shield: bool = False) -> anyio.CancelScope:
    """``anyio.CancelScope(shield=...)``, made by the event loop backend's class directly.

    ``anyio.CancelScope()`` looks the backend up (sniffio) and runs ``__init__``
    twice: 3.7 us a scope against 2.1 us here, on the per-run and per-commit paths.
    """
    global _scope_class
    if _scope_class is None:
        _scope_class = type(anyio.CancelScope())  # the asyncio backend's class
    return _scope_class(shield=shield)
