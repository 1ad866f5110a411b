"""The runs this process drives now, and who is waiting on them.

One registry per runtime: the live driver of each run, the newest driver of each run
that a handle may still hold, the live streams subscribed to a run, the waiters
woken when a run starts or stops here, the store failures that stopped a run here
(what its waiters raise), and the leases that could not be handed back yet.
Nothing here reads the store: it is the process's memory of its own runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final, Generic, Protocol, TypeVar

import anyio

from ..errors import ConflictError, LeaseLostError, RunStateError, StoreError
from ..events import Event

if TYPE_CHECKING:  # anyio's streams load with the first subscriber (~3 ms of import)
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

log = logging.getLogger("mainspring.runtime")

POLL_INTERVAL: Final = 0.2  # seconds between store reads when another process drives a run


class LiveDriver(Protocol):
    """What the registry needs of a run's driver."""

    run_id: str
    outcome: BaseException | None
    lease_valid_until: float

    @property
    def done(self) -> asyncio.Event: ...


D = TypeVar("D", bound=LiveDriver)


class Sink(Protocol):
    """Where a subscriber takes a live run's events (a memory stream's sending end, or the
    server's stream hub): called in the run's task, so it must neither block nor raise."""

    def send_nowait(self, item: Event, /) -> None: ...
    def close(self) -> None: ...


class Subscribers:
    """In-process fan-out of a live run's events to its streams; a model's tokens
    (``model_delta``) only to the streams that asked for them."""

    __slots__ = ("_deltas", "_streams")

    def __init__(self) -> None:
        self._streams: list[Sink] = []
        self._deltas: list[Sink] = []  # those that want tokens

    def add(
        self, *, deltas: bool = False
    ) -> tuple[MemoryObjectSendStream[Event], MemoryObjectReceiveStream[Event]]:
        send, recv = anyio.create_memory_object_stream[Event](math.inf)
        self._streams.append(send)
        if deltas:
            self._deltas.append(send)
        return send, recv

    def attach(self, sink: Sink, *, deltas: bool = False) -> None:
        """Add a sink of one's own (it is closed when the run stops here, or on remove)."""
        self._streams.append(sink)
        if deltas:
            self._deltas.append(sink)

    def remove(self, send: Sink) -> None:
        if send in self._streams:
            self._streams.remove(send)
        if send in self._deltas:
            self._deltas.remove(send)
        send.close()

    @property
    def want_deltas(self) -> bool:
        """Whether a stream follows the run's tokens (then its model calls stream)."""
        return bool(self._deltas)

    def publish(self, event: Event) -> None:
        for stream in self._streams:
            stream.send_nowait(event)

    def publish_delta(self, event: Event) -> None:
        for stream in self._deltas:
            stream.send_nowait(event)

    def close_all(self) -> None:
        for stream in self._streams:
            stream.close()
        self._streams.clear()
        self._deltas.clear()


class LiveRuns(Generic[D]):
    """The process's own runs: see the module's docstring."""

    def __init__(self) -> None:
        self._live: dict[str, D] = {}
        # The newest driver of each run while anything (a handle) still holds it.
        self._latest: weakref.WeakValueDictionary[str, D] = weakref.WeakValueDictionary()
        self._subscribers: dict[str, Subscribers] = {}
        self._changed: dict[str, anyio.Event] = {}
        self._faults: dict[str, BaseException] = {}
        self.unreleased: set[str] = set()  # leases to hand back when the store lets us

    # -- which drivers are live ---------------------------------------------------------

    def get(self, run_id: str) -> D | None:
        return self._live.get(run_id)

    def latest(self, run_id: str) -> D | None:
        return self._latest.get(run_id)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._live

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._live))

    def drivers(self) -> list[D]:
        return list(self._live.values())

    def add(self, driver: D) -> None:
        """The driver is about to drive its run here: waiters follow it from now on."""
        self._live[driver.run_id] = self._latest[driver.run_id] = driver
        self._faults.pop(driver.run_id, None)

    def stopped(self, driver: D) -> None:
        """Called by a driver as it stops (its last act): remember why if its store failed."""
        outcome = driver.outcome
        if isinstance(outcome, StoreError) and not lost_the_run(outcome):
            self._faults[driver.run_id] = outcome  # before waking waiters: they raise it
        self.forget(driver)
        if outcome is not None and not isinstance(outcome, RunStateError):
            log.warning("run %s stopped: %s", driver.run_id, outcome)

    def forget(self, driver: D) -> None:
        """A driver stopped: drop it, end its live streams, wake whoever waits on the run.

        No await here: a resume must never find a driver that has left.
        """
        if self._live.get(driver.run_id) is driver:
            del self._live[driver.run_id]
        subs = self._subscribers.pop(driver.run_id, None)
        if subs is not None:
            subs.close_all()
        self.signal(driver.run_id)

    def fault(self, run_id: str) -> BaseException | None:
        """The store failure that stopped the run here, if that is how it stopped."""
        return self._faults.get(run_id)

    # -- streams and waiters -------------------------------------------------------------

    def subscribers(self, run_id: str) -> Subscribers | None:
        return self._subscribers.get(run_id)

    def subscribers_of(self, run_id: str) -> Subscribers:
        subs = self._subscribers.get(run_id)
        if subs is None:
            subs = self._subscribers[run_id] = Subscribers()
        return subs

    def signal(self, run_id: str) -> None:
        event = self._changed.pop(run_id, None)
        if event is not None:
            event.set()

    def signal_all(self) -> None:
        """Wake every waiter (news about other processes' runs may have been lost)."""
        changed, self._changed = self._changed, {}
        for event in changed.values():
            event.set()

    async def wait_for_change(self, run_id: str) -> None:
        """Wait until the run starts or stops here, or a poll interval passes."""
        event = self._changed.get(run_id)
        if event is None:
            event = self._changed[run_id] = anyio.Event()
        try:
            with anyio.move_on_after(POLL_INTERVAL * 5):
                await event.wait()
        finally:
            if self._changed.get(run_id) is event:  # nothing happened: keep no state per run
                del self._changed[run_id]

    def waiting(self) -> int:
        """How many runs have waiters parked on a change (diagnostics, leak tests)."""
        return len(self._changed) + len(self._subscribers)


def lost_the_run(exc: BaseException | None) -> bool:
    """Another writer drives the run now (its outcome is for the journal to tell)."""
    return isinstance(exc, ConflictError | LeaseLostError)
