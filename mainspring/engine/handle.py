"""Run handles: stream a run's events, await its outcome, cancel it."""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from ..errors import RunCancelledError, RunFailedError
from ..events import Event
from ..status import RunStatus

if TYPE_CHECKING:
    from .driver import RunDriver
    from .fold import RunFold
    from .runtime import Runtime

POLL_INTERVAL = 0.2  # seconds between store reads when another process drives the run


@dataclass(frozen=True, slots=True)
class PendingInterrupt:
    """An interrupt waiting for ``runtime.resume(run_id, value, interrupt_id=id)``."""

    id: str
    node: str
    payload: Any


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """Where a run stands when it stops moving: finished, failed, cancelled or parked."""

    run_id: str
    status: RunStatus
    state: Any
    seq: int
    interrupts: list[PendingInterrupt] = field(default_factory=list)
    error: dict[str, Any] | None = None


def outcome_of(fold: RunFold) -> RunOutcome:
    """Where a run stands according to its fold."""
    status = fold.status
    pending = (
        []
        if status is RunStatus.FINISHED
        else [PendingInterrupt(i.id, t.node, i.payload) for t, i in fold.pending_interrupts]
    )
    if status is RunStatus.RUNNING and pending and not any(t.runnable for t in fold.tasks):
        status = RunStatus.INTERRUPTED
    error = fold.error.as_dict() if fold.error is not None else None
    return RunOutcome(fold.run_id, status, fold.schema.output(fold.state), fold.seq, pending, error)


class Subscribers:
    """In-process fan-out of a live run's events to its streams."""

    __slots__ = ("_streams",)

    def __init__(self) -> None:
        self._streams: list[MemoryObjectSendStream[Event]] = []

    def add(self) -> tuple[MemoryObjectSendStream[Event], Any]:
        send, recv = anyio.create_memory_object_stream[Event](math.inf)
        self._streams.append(send)
        return send, recv

    def remove(self, send: MemoryObjectSendStream[Event]) -> None:
        if send in self._streams:
            self._streams.remove(send)
        send.close()

    def publish(self, event: Event) -> None:
        for stream in self._streams:
            stream.send_nowait(event)

    def close_all(self) -> None:
        for stream in self._streams:
            stream.close()
        self._streams.clear()


class RunHandle:
    """A run in a runtime: returned by ``start``, ``resume`` and ``fork``."""

    def __init__(self, runtime: Runtime, run_id: str, driver: RunDriver | None = None) -> None:
        self.runtime = runtime
        self.run_id = run_id
        self._driver = driver  # the driver this handle started, for a read-free outcome

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id}>"

    async def events(self, *, after: int = 0) -> AsyncGenerator[Event, None]:
        """The run's journal from ``after`` on, then live events until it ends or parks."""
        rt = self.runtime
        live = rt._live.get(self.run_id)
        last = after
        if live is not None:
            subs = rt._subscribers_of(self.run_id)
            if subs.publish not in live._listeners:  # copied: the list may be the runtime's
                live._listeners = [*live._listeners, subs.publish]
            send, recv = subs.add()
            try:
                backlog = live.uncommitted()  # taken before the read: nothing falls between
                history = await rt.store.read(self.run_id, after=after)
                for event in sorted(
                    {e.seq: e for e in [*history, *backlog]}.values(), key=lambda e: e.seq
                ):
                    if event.seq > last:
                        last = event.seq
                        yield event
                async with recv:
                    async for event in recv:
                        if event.seq > last:
                            last = event.seq
                            yield event
            finally:
                subs.remove(send)
            return
        while True:
            history = await rt.store.read(self.run_id, after=last)
            for event in history:
                last = event.seq
                yield event
            record = await rt.store.get_run(self.run_id)
            if record is None or record.status is not RunStatus.RUNNING:
                for event in await rt.store.read(self.run_id, after=last):
                    last = event.seq
                    yield event
                return
            if self.run_id in rt._live:  # it started here meanwhile: follow it live
                async for event in RunHandle(rt, self.run_id).events(after=last):
                    yield event
                return
            await anyio.sleep(POLL_INTERVAL)

    async def _settled_fold(self) -> RunFold | None:
        """The fold of the driver this handle started, once that driver stopped cleanly.

        No store read: the common way to learn a run's end. None if another driver
        took the run over, or this one stopped on an error.
        """
        driver, rt = self._driver, self.runtime
        if driver is not None and rt._latest.get(self.run_id) is driver:
            if not driver.stopped:  # (done exists only once someone waits: spare it)
                await driver.done.wait()
            if (
                rt._latest.get(self.run_id) is driver
                and driver.outcome is None
                and driver.existing is None
            ):
                return driver.fold
        self._driver = None
        return None

    async def wait(self) -> RunOutcome:
        """Wait until the run stops moving (finished, failed, cancelled or parked)."""
        fold = await self._settled_fold()
        if fold is not None:
            return outcome_of(fold)
        return await self.runtime._wait(self.run_id)

    async def result(self) -> Any:
        """Wait for the run to end and return its final state.

        A parked run is waited for until it is resumed and ends; raises
        RunFailedError or RunCancelledError if it ends that way.
        """
        fold = await self._settled_fold()
        if fold is not None and fold.status is RunStatus.FINISHED:
            return fold.schema.output(fold.state)  # the common case: no outcome to build
        while True:
            outcome = await self.wait()
            if outcome.status is RunStatus.FINISHED:
                return outcome.state
            if outcome.status is RunStatus.FAILED:
                raise RunFailedError(self.run_id, outcome.error or {})
            if outcome.status is RunStatus.CANCELLED:
                raise RunCancelledError(f"run {self.run_id!r} was cancelled")
            await self.runtime._wait_for_change(self.run_id)

    async def cancel(self) -> None:
        await self.runtime.cancel(self.run_id)

    async def status(self) -> RunStatus:
        record = await self.runtime.get_run(self.run_id)
        return record.status
