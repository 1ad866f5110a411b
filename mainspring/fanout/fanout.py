"""The event fan-out of one runtime: it announces its commits, and hears the others'.

Writing side: :meth:`EventFanout.committed` is one of the runtime's commit listeners
(``EngineServices.committed``). It never blocks the run's commit: it notes the run's new
last seq (and status) in a dict, one entry per run, and wakes the sender. The sender
sends everything noted in one go (one round trip for any number of runs), so commits
of a run made while a send is in flight make one announcement (coalesced: only the
latest seq matters, the listener reads the journal up to it). The dict is bounded
(``buffer`` runs): past it a run's announcement is dropped and counted; its listeners
find it by their safety-net poll. A send that fails is dropped the same way.

Listening side (only when something subscribed, e.g. the server's stream hub): one task
listens through the transport, reconnecting with backoff; each time it (re)starts
listening, and each time it loses the link, subscribers are told to ``resync`` (re-read
what they follow: announcements may have been missed meanwhile).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import anyio
from anyio.abc import TaskGroup

from ..errors import MainspringError
from ..events import Event
from ..status import RunStatus
from .protocol import Announcement, Transport

if TYPE_CHECKING:
    from ..engine.seams import EngineServices
    from ..store import Store

    class Runtime(Protocol):
        """What attaching needs of a runtime (``engine.runtime.Runtime``, not imported)."""

        store: Store
        services: EngineServices


log = logging.getLogger("mainspring.fanout")

Heard = Callable[[Announcement], None]
Resync = Callable[[], None]


class FanoutError(MainspringError):
    """The event fan-out could not be set up (a bad ``--events``, Redis unreachable)."""


class EventFanout:
    """See the module's docstring. ``buffer``: runs with an announcement waiting, at most;
    ``retry``/``max_retry``: the listener's first and longest wait before listening again;
    ``flush_timeout``: how long closing waits to send the last announcements;
    ``interval``: seconds between two sends at least (a commit after a quiet spell is
    sent at once; those that follow within ``interval`` wait and coalesce)."""

    def __init__(
        self,
        transport: Transport,
        *,
        buffer: int = 10_000,
        retry: float = 0.1,
        max_retry: float = 5.0,
        flush_timeout: float = 1.0,
        interval: float = 0.002,
    ) -> None:
        if buffer < 1 or retry <= 0 or max_retry < retry or flush_timeout < 0 or interval < 0:
            raise ValueError(
                "EventFanout: buffer must be >= 1, retry > 0, max_retry >= retry, "
                "flush_timeout and interval >= 0"
            )
        self._interval = interval
        self.transport = transport
        self._buffer, self._retry, self._max_retry = buffer, retry, max_retry
        self._flush_timeout = flush_timeout
        self._pending: dict[str, tuple[int, str | None]] = {}
        self._wake: anyio.Event | None = None
        self._subscribers: list[tuple[Heard, Resync]] = []
        self._tg: TaskGroup | None = None
        self._scope: anyio.CancelScope | None = None
        self._stopped: anyio.Event | None = None
        self._listening_task = False
        self._delay = retry
        self._warned_at = -60.0
        #: Whether the listener listens now (a subscriber relies on its safety net if not).
        self.listening = False
        #: Counters (announcements): sent, dropped (buffer full or a failed send), heard.
        self.sent = self.dropped = self.heard = 0

    @property
    def name(self) -> str:
        return self.transport.name

    # -- lifecycle: a capability of the runtime ---------------------------------------------

    async def attach(self, runtime: Runtime) -> None:
        """Open the transport, hear the runtime's commits, start sending (and listening,
        if something subscribed). Called by the runtime as it opens."""
        await self.transport.open(runtime.store)
        spawn = runtime.services.spawn
        assert spawn is not None, "attach() is called by an open runtime"
        self._wake, self._stopped = anyio.Event(), anyio.Event()
        self._scope = anyio.CancelScope()  # cancelled by detach(), even before _main starts
        runtime.services.committed.append(self.committed)
        spawn(self._main, self._scope)

    async def detach(self, runtime: Runtime) -> None:
        """Stop, send what is left (the last commits of the runs that just stopped here),
        close the transport. Called by the runtime as it closes, after its runs."""
        if self.committed in runtime.services.committed:
            runtime.services.committed.remove(self.committed)
        if self._scope is not None:
            self._scope.cancel()
        if self._stopped is not None:
            await self._stopped.wait()
        self._scope = self._stopped = None
        self.listening = False
        if self._pending:
            with anyio.move_on_after(self._flush_timeout):
                await self._send()
        try:
            await self.transport.aclose()
        except Exception as exc:  # closing the runtime goes on: its store must close too
            log.warning("the event fan-out (%s) did not close cleanly: %r", self.name, exc)

    async def _main(self, scope: anyio.CancelScope) -> None:
        stopped = self._stopped
        try:
            with scope:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    tg.start_soon(self._sender)
                    if self._subscribers:
                        self._start_listening()
                    await anyio.sleep_forever()
        finally:
            self._tg = None
            self._listening_task = False
            if stopped is not None:
                stopped.set()

    # -- writing side ---------------------------------------------------------------------

    def committed(self, run_id: str, events: Sequence[Event], status: RunStatus | None) -> None:
        """The runtime's commit listener: note the run's new end, wake the sender."""
        pending = self._pending
        last = events[-1].seq if events else 0
        old = pending.get(run_id)
        if old is not None:
            pending[run_id] = (max(old[0], last), old[1] if status is None else status.value)
        elif len(pending) < self._buffer:
            pending[run_id] = (last, None if status is None else status.value)
        else:
            self.dropped += 1
            self._warn(
                "%d runs wait to be announced already; dropped one (listeners poll)", n=len(pending)
            )
            return
        if self._wake is not None:
            self._wake.set()

    async def _sender(self) -> None:
        sent_at = -self._interval
        while True:
            assert self._wake is not None
            await self._wake.wait()
            # A commit after a quiet spell goes at once; a busy runtime's commits coalesce
            # into one send per ``interval`` (a hot loop of runs pays a fraction of a send
            # per commit, not one each).
            if (wait := sent_at + self._interval - anyio.current_time()) > 0:
                await anyio.sleep(wait)
            self._wake = anyio.Event()
            sent_at = anyio.current_time()
            if not await self._send():
                await anyio.sleep(self._retry)  # the link is down: commits coalesce meanwhile

    async def _send(self) -> bool:
        batch, self._pending = self._pending, {}
        if not batch:
            return True
        try:
            await self.transport.send([Announcement(r, s, st) for r, (s, st) in batch.items()])
        except Exception as exc:
            self.dropped += len(batch)
            self._warn(
                f"%d announcements could not be sent over {self.name} ({exc!r})", n=len(batch)
            )
            return False
        self.sent += len(batch)
        return True

    def _warn(self, message: str, *, n: int) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 60:  # once a minute at most: the cause says it all
            self._warned_at = now
            log.warning(message, n)

    # -- listening side -------------------------------------------------------------------

    def subscribe(self, heard: Heard, resync: Resync) -> Callable[[], None]:
        """Hear every announcement about this store (``heard``) and each (re)start or loss
        of the link (``resync``); both run in the event loop and must not raise or await.
        Returns the unsubscribe function."""
        entry = (heard, resync)
        self._subscribers.append(entry)
        if self._tg is not None and not self._listening_task:
            self._start_listening()

        def unsubscribe() -> None:
            if entry in self._subscribers:
                self._subscribers.remove(entry)

        return unsubscribe

    def _start_listening(self) -> None:
        assert self._tg is not None
        self._listening_task = True
        self._tg.start_soon(self._listener)

    async def _listener(self) -> None:
        while True:
            try:
                await self.transport.listen(self._heard, self._ready)
                error: Exception | None = None
            except Exception as exc:
                error = exc
            if self.listening:
                self.listening = False
                log.warning("the event fan-out (%s) lost its link: %r", self.name, error)
                self._resync()
            elif error is not None and self._delay == self._retry:  # once per outage
                log.warning("the event fan-out (%s) cannot listen: %r; retrying", self.name, error)
            await anyio.sleep(self._delay)
            self._delay = min(self._delay * 2, self._max_retry)

    def _ready(self) -> None:
        self.listening = True
        self._delay = self._retry
        self._resync()

    def _heard(self, announcement: Announcement) -> None:
        self.heard += 1
        for heard, _ in self._subscribers:
            try:
                heard(announcement)
            except Exception:
                log.exception("a subscriber of the event fan-out failed")

    def _resync(self) -> None:
        for _, resync in self._subscribers:
            try:
                resync()
            except Exception:
                log.exception("a subscriber of the event fan-out failed")
