"""Cancelling a run: the task driving it is cancelled, but never in the middle of an append.

A run's driver cancels the asyncio task it runs in (``Task.cancel``) and takes
that cancellation back where it surfaces, in its own ``drive`` (the asyncio
``timeout()`` pattern: ``uncancel``, and re-raise if someone else cancelled
too). An anyio cancel scope per run would do the same at ~6% of a short run's
CPU and five more objects for the garbage collector (W4, counted with
callgrind); the runtime runs on asyncio (see ``_tasks.py``).

Native cancellation ignores anyio shields, so the shields that keep appends
whole cannot stop it. Instead the runtime counts the appends in flight per task
(``Appends``); a cancel aimed at a task with one in flight is held, and raised
in that task as soon as its appends have landed. A cancel that cannot be
delivered still stops the run: drivers check their flags at every step
boundary.
"""

from __future__ import annotations

import asyncio
from typing import Any


class RunCancel:
    """One driver's side: which task to cancel, and whether a cancel of ours is on its way."""

    __slots__ = ("_issued", "_raised", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None  # set while the driver's loop runs
        self._issued = False  # Task.cancel() was called: uncancel when it surfaces
        self._raised = False  # an Appends hold raised CancelledError for us

    def request(self, appends: Appends) -> None:
        """Cancel the loop's task now, or once its appends in flight have landed."""
        task = self.task
        if task is None or self._issued or self._raised:
            return  # not running (the flags will stop it), or already on its way
        if appends.in_flight(task):
            appends.hold(task, self)
            return
        self._issued = True
        task.cancel()

    def mark_raised(self) -> None:
        self._raised = True

    def own(self) -> bool:
        """A CancelledError reached the driver: is it ours alone (so: swallow it)?"""
        task = self.task
        assert task is not None
        if self._issued:
            self._issued = False
            return task.uncancel() == 0
        if self._raised:
            self._raised = False
            return task.cancelling() == 0
        return False

    def leave(self) -> None:
        """The loop is over: no more cancels, and none of ours left counted on the task."""
        if self._issued and self.task is not None:
            self.task.uncancel()  # delivered and swallowed by a node: keep the count right
        self.task, self._issued, self._raised = None, False, False


class Appends:
    """The appends in flight per task, and the cancels held until they land (one per runtime)."""

    __slots__ = ("_held", "_in_flight")

    def __init__(self) -> None:
        self._in_flight: dict[asyncio.Task[Any], int] = {}
        self._held: dict[asyncio.Task[Any], list[RunCancel]] = {}

    def in_flight(self, task: asyncio.Task[Any]) -> bool:
        return task in self._in_flight

    def hold(self, task: asyncio.Task[Any], cancel: RunCancel) -> None:
        self._held.setdefault(task, []).append(cancel)

    def begin(self) -> asyncio.Task[Any] | None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight[task] = self._in_flight.get(task, 0) + 1
        return task

    def end(self, task: asyncio.Task[Any] | None, *, landed: bool) -> None:
        """An append of ``task`` is over. Once none is left, the cancels held for the
        task go: raised here if the append landed, dropped if it failed (the failure
        stops the run anyway, and the drivers' flags stop it at the next step)."""
        if task is None:
            return
        left = self._in_flight.pop(task) - 1
        if left:
            self._in_flight[task] = left
            return
        held = self._held.pop(task, None)
        if held and landed:
            for cancel in held:
                cancel.mark_raised()
            raise asyncio.CancelledError("run cancelled once its append had landed")
